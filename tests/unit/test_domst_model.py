"""Dom-ST and its baselines: builds and output shapes, parameter counts against Keras, the
partitioning module, the Pix-Con weights, the device map, a short training run on a toy watershed,
and the heads really running on their own devices with the same output as the unplaced model.

The placement check needs the CPU split into logical devices, which TensorFlow allows only before
its runtime starts; other tests in the pytest process may have started it, so that check runs this
file as a script (flag --placement) in a fresh interpreter.
"""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import domst as D
from models import registry

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
P, LOOKBACK, K, BATCH = 12, 8, 3, 16
DISTANCE = [float(d) for d in np.random.default_rng(7).uniform(0.0, 30.0, P)]
SMALL = dict(pixels=P, lookback=LOOKBACK, k_groups=K, filters=[6], kernel_size=3,
             lstm_units=[8, 4], dense_units=[8], target_units=4, dropout=0.0,
             learning_rate=1e-2, distance=DISTANCE, head_input="pixels",
             partition="distance", pixel_weights="per_pixel")


def _batch(seed=0, n=BATCH):
    rng = np.random.default_rng(seed)
    return (rng.gamma(0.5, 2.0, size=(n, LOOKBACK, P)).astype("float32"),
            rng.gamma(0.5, 2.0, size=(n, P)).astype("float32"))


def test_partition_covers_every_pixel_once_in_distance_order():
    d = np.array([5.0, 1.0, 1.0, 9.0, 0.0, 3.0, 7.0])
    groups = D.partition(d, 3)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(d)))
    assert [len(g) for g in groups] == [3, 2, 2]
    assert groups[0].tolist() == [4, 1, 2]  # nearest first, ties in pixel order
    for near, far in zip(groups, groups[1:]):
        assert d[near].max() <= d[far].min()
    singles = [g.tolist() for g in D.partition(d, len(d))]
    assert singles == [[i] for i in np.argsort(d, kind="stable")]
    with pytest.raises(ValueError, match="k <= 7"):
        D.partition(d, 8)


@pytest.mark.parametrize("name", D.MODELS)
def test_every_builder_gives_one_discharge_per_sample_with_the_counted_parameters(name):
    model = registry.build(name, SMALL)
    x, p_target = _batch()
    out = model.predict(D.model_inputs(name, x, p_target), verbose=0)
    assert out.shape == (BATCH, 1) and np.all(np.isfinite(out))
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == D.count_params(name, SMALL)
    assert model.loss == "mse"


def test_only_the_p_models_see_the_target_day():
    x, p_target = _batch(1)
    base, plus = D.build_singlehead_p(SMALL), D.build_domst(SMALL)
    for model in (base, plus):
        a = model.predict([x, p_target], verbose=0)
        b = model.predict([x, p_target + 5.0], verbose=0)
        assert np.max(np.abs(a - b)) > 1e-4, model.name
    assert D.model_inputs("domst-singlehead", x, p_target) is x


def test_pixcon_weights_are_per_pixel_non_negative_and_follow_distance():
    model = D.build_domst(SMALL)
    w = D.pixcon_weights(model)
    assert w.shape == (P,) and w.dtype == np.float32
    np.testing.assert_allclose(w, 1.0, rtol=1e-6)  # every pixel starts at weight 1
    model.pixcon.slope.assign(-3.0)
    model.pixcon.offset.assign(np.full(P, -10.0, dtype="float32"))
    w = D.pixcon_weights(model)
    assert np.all(w >= 0) and np.min(w) < 1e-3
    assert np.all(np.diff(w[np.argsort(DISTANCE)]) < 0)  # nearer to water, larger weight
    with pytest.raises(ValueError, match="no Pix-Con block"):
        D.pixcon_weights(D.build_singlehead(SMALL))


def test_device_map_round_robins_heads_then_temporal():
    assert D.device_map(SMALL, n_gpus=2) == {
        "head:0": "/device:GPU:0", "head:1": "/device:GPU:1", "head:2": "/device:GPU:0",
        "temporal": "/device:GPU:1"}
    assert D.device_map(SMALL, n_gpus=4)["temporal"] == "/device:GPU:3"
    assert D.device_map(SMALL, n_gpus=0, n_cpus=4) == {
        "head:0": "/device:CPU:0", "head:1": "/device:CPU:1", "head:2": "/device:CPU:2",
        "temporal": "/device:CPU:3"}
    assert set(D.device_map(SMALL, n_gpus=0, n_cpus=1).values()) == {"/device:CPU:0"}
    with pytest.raises(ValueError, match="device"):
        D.device_map(SMALL, n_gpus=0, n_cpus=0)


def test_training_on_a_toy_watershed_reduces_the_loss():
    import keras
    keras.utils.set_random_seed(3)
    x, p_target = _batch(2, n=128)
    # Discharge: rain of three pixels one to three days back plus same-day rain of one pixel.
    y = 0.8 * x[:, -1, 0] + 0.6 * x[:, -2, 4] + 0.4 * x[:, -3, 9] + 0.5 * p_target[:, 2]
    y = ((y - y.mean()) / y.std()).astype("float32")[:, None]
    model = D.build_domst({**SMALL, "filters": [8], "lstm_units": [16, 8], "dense_units": [16]})

    def mse():  # eager, so only fit's step is traced
        return float(np.mean((model([x, p_target]).numpy() - y) ** 2))

    before = mse()
    model.fit([x, p_target], y, batch_size=32, epochs=12, verbose=0, shuffle=False)
    after = mse()
    assert np.isfinite(after) and after < 0.5 * before, (before, after)
    assert np.all(D.pixcon_weights(model) >= 0)


@dataclasses.dataclass
class _Cfg:
    name: str = "domst"
    lookback: int = LOOKBACK
    k_groups: int = K
    filters: list = dataclasses.field(default_factory=lambda: [6])
    kernel_size: int = 3
    lstm_units: list = dataclasses.field(default_factory=lambda: [8, 4])
    dense_units: list = dataclasses.field(default_factory=lambda: [8])
    target_units: int = 4
    dropout: float = 0.0
    learning_rate: float = 1e-2
    head_input: str = "pixels"
    partition: str = "distance"
    pixel_weights: str = "per_pixel"
    distance: list = dataclasses.field(default_factory=lambda: list(DISTANCE))


def test_resolve_takes_a_dataclass_and_pixels_from_distance():
    p = D.resolve(_Cfg())
    assert p["pixels"] == P and p["filters"] == [6] and p["lstm_units"] == [8, 4] and p["pixcon"] is True
    assert D.resolve({**SMALL, "filters": 5})["filters"] == [5]
    assert D.resolve({**SMALL, "pixels": 3, "distance": None}, "domst-singlehead")["pixels"] == 3


def test_every_choice_comes_from_the_config_and_a_missing_one_is_named():
    """conf/domst.yaml is the one source of the sizes: the builder fills none in."""
    given = {k: v for k, v in SMALL.items() if k not in ("lstm_units", "partition")}
    with pytest.raises(ValueError, match=r"missing config keys \['lstm_units', 'partition'\].*conf/domst.yaml"):
        D.resolve(given)


@pytest.mark.parametrize("bad, model, match", [
    (dict(k_groups=P + 1), "domst", "k_groups 13 > pixels 12"),
    (dict(lookback=2), "domst", "lookback 2 is too short"),
    (dict(filters=[4, 4], lookback=4), "domst", "lookback 4 is too short for 2 conv"),
    (dict(distance=DISTANCE[:-1]), "domst", "distance must hold 12"),
    (dict(distance=[-1.0] + DISTANCE[1:]), "domst", "finite values >= 0"),
    (dict(distance=None), "domst", "needs distance"),
    (dict(lstm_units=[]), "domst-singlehead", "lstm_units"),
    (dict(dropout=1.0), "domst-singlehead-p", "dropout"),
    (dict(lstm_unit=[4]), "domst", r"unknown config keys \['lstm_unit'\]"),
])
def test_resolve_rejects_bad_configs(bad, model, match):
    with pytest.raises(ValueError, match=match):
        D.resolve({**SMALL, **bad}, model)


def test_heads_and_temporal_block_run_on_their_own_cpu_devices():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
           "TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "1",
           "TF_NUM_INTEROP_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--placement"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=540)  # a hang guard (loaded machines), not a bound
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    want = {f"head{k}": f"CPU:{k}" for k in range(K)} | {"temporal": f"CPU:{K}"}
    assert r["op_devices"] == {unit: [dev] for unit, dev in want.items()}
    assert r["variable_devices"] == {unit: [dev] for unit, dev in want.items()}
    assert r["max_abs_diff"] < 1e-6 and r["output_spread"] > 1e-4


def _placement_report() -> dict:
    """Build Dom-ST placed on CPU:0..K (heads, then temporal) and unplaced with the same weights;
    report where each unit's ops and variables went and how far the outputs differ."""
    D.split_cpu(K + 1)
    import tensorflow as tf

    def unit(name: str) -> str | None:
        for k in range(K):
            if f"head{k}_" in name:
                return f"head{k}"
        return "temporal" if any(s in name for s in ("lstm", "fc1", "output")) else None

    plain = D.build_domst(SMALL)
    placed = D.build_domst(SMALL, place=D.make_place(D.device_map(SMALL, 0, K + 1)))
    placed.set_weights(plain.get_weights())
    x, p_target = _batch(3)
    want, got = plain([x, p_target]).numpy(), placed([x, p_target]).numpy()
    forward = tf.function(lambda a, b: placed([a, b], training=False))
    graph = forward.get_concrete_function(tf.constant(x), tf.constant(p_target)).graph
    op_devices, var_devices = {}, {}
    for op in graph.get_operations():
        if op.device and unit(op.name):  # variable reads carry no device: they run beside it
            op_devices.setdefault(unit(op.name), set()).add(op.device[-5:])
    for v in placed.weights:
        if unit(v.path):
            var_devices.setdefault(unit(v.path), set()).add(v.value.device[-5:])
    return dict(op_devices={u: sorted(d) for u, d in op_devices.items()},
                variable_devices={u: sorted(d) for u, d in var_devices.items()},
                max_abs_diff=float(np.max(np.abs(want - got))),
                output_spread=float(np.std(got)))


if __name__ == "__main__" and sys.argv[1:] == ["--placement"]:
    print(json.dumps(_placement_report()))
