"""Redshift CNN builders: both variants build, count their parameters, train on simulated spectra."""
from types import SimpleNamespace

import numpy as np
import pytest

from models import registry
from models.redshift import count_params, resolve
from rdd_io import redshift_sim as sim

pytestmark = pytest.mark.unit

BANDS, CLASSES = 200, 5


LAYERS = {"thesis": dict(filters=[16, 32], dense_units=[]), "paper": dict(filters=[16, 16, 32], dense_units=[512])}


def cfg(**kw):
    base = dict(variant="thesis", bands=BANDS, n_classes=CLASSES, kernel_size=8, dropout=0.1, optimizer="adam",
                learning_rate=1e-3, **LAYERS.get(kw.get("variant"), LAYERS["thesis"]))
    return SimpleNamespace(**{**base, **kw})


def tiny_set(n, seed):
    """5 redshift classes of width 0.1 over z in [1.0, 1.5), 200 bands."""
    d = sim.simulate(n, seed, snr=20.0, bands=BANDS, z_min=1.0, z_max=1.5, n_classes=CLASSES)
    return d["spectra"], d["label"]


def test_registry_lists_redshift_and_names_valid_models_on_typos():
    assert "redshift" in registry.names()
    with pytest.raises(KeyError, match="unknown model 'redshfit'.*redshift"):
        registry.build("redshfit", cfg())


@pytest.mark.parametrize("bad, match", [
    (dict(variant="resnet"), "unknown variant"),
    (dict(filters=[8, 8, 8]), "2 conv layers"),
    (dict(variant="paper", filters=[8, 8]), "3 conv layers"),
    (dict(variant="paper", dense_units=[64, 32]), "1 entries"),
    (dict(dense_units=[64]), "0 entries"),
    (dict(bands=12), "too few"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(dropout=1.0), "dropout"),
])
def test_bad_configs_are_refused_before_tensorflow(bad, match):
    with pytest.raises(ValueError, match=match):
        resolve(cfg(**bad))


def test_every_choice_comes_from_the_config_and_a_missing_one_is_named():
    with pytest.raises(ValueError, match=r"missing config keys \['learning_rate'\].*conf/redshift.yaml"):
        resolve({k: v for k, v in vars(cfg()).items() if k != "learning_rate"})


def test_the_benches_build_the_model_of_conf_redshift_yaml():
    from conf import CONF_DIR
    from conf.loader import read_yaml
    from jobs.redshift_config import config_model
    section = read_yaml(CONF_DIR / "redshift.yaml")["model"]
    assert config_model(300, 7) == {**section, "bands": 300, "n_classes": 7}
    tiny = read_yaml(CONF_DIR / "redshift.yaml")["presets"]["tiny"]["model"]
    assert config_model(300, 7, "tiny")["learning_rate"] == tiny["learning_rate"] != section["learning_rate"]


def test_parameter_count_formula_scales_with_bands_and_classes():
    # Flatten -> dense dominates: one more band adds last_filters * n_classes weights (thesis).
    small, bigger = count_params(cfg(bands=300)), count_params(cfg(bands=301))
    assert bigger - small == 32 * CLASSES
    assert count_params(cfg(n_classes=6)) - count_params(cfg()) == (BANDS - 14) * 32 + 1


@pytest.mark.parametrize("variant, n_dense", [("thesis", 1), ("paper", 2)])
def test_variants_build_with_expected_layers_and_shapes(variant, n_dense):
    import keras
    model = registry.build("redshift", cfg(variant=variant))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv1D") == (2 if variant == "thesis" else 3)
    assert kinds.count("Dense") == n_dense
    assert "MaxPooling1D" not in kinds and "AveragePooling1D" not in kinds
    assert all(layer.kernel_size == (8,) for layer in model.layers if type(layer).__name__ == "Conv1D")
    assert model.count_params() == count_params(cfg(variant=variant))
    x, _ = tiny_set(4, 0)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (4, CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert isinstance(model.optimizer, keras.optimizers.Adam)


def test_one_step_changes_the_weights_and_sgd_is_selectable():
    import keras
    keras.utils.set_random_seed(1)
    model = registry.build("redshift", cfg(variant="paper", optimizer="SGD", learning_rate=0.01))
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    x, y = tiny_set(16, 1)
    before = [w.copy() for w in model.get_weights()]
    loss, acc = model.train_on_batch(x, y)
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0
    after = model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("variant", ["thesis", "paper"])
def test_a_few_epochs_beat_chance(variant):
    import keras
    keras.utils.set_random_seed(2)
    # A narrow hidden layer keeps the paper variant as quick to train as the thesis one.
    model = registry.build("redshift", cfg(variant=variant,
                                           dense_units=[32] if variant == "paper" else []))
    x, y = tiny_set(400, 2)
    start = model.evaluate(x, y, verbose=0)[1]
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x, y, verbose=0)
    chance = 1.0 / CLASSES
    assert accuracy > max(2.5 * chance, start + 0.2), (start, accuracy)
