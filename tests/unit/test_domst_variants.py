"""Dom-ST's and Singlehead(+P)'s ablation variants and Pix-Con designs: parameter counts against Keras,
the widened baseline, the target day entering as group means, Pix-Con off, weighted-sum heads (where no
layer can absorb a pixel's weight) and the dynamic partition re-cut from the learned weights."""
import numpy as np
import pytest

from jobs import domst_roles
from models import domst as D
from models import registry

pytestmark = pytest.mark.unit

P, LOOKBACK, K = 12, 8, 3
DISTANCE = [float(d) for d in np.random.default_rng(7).uniform(0.0, 30.0, P)]
SMALL = dict(pixels=P, lookback=LOOKBACK, k_groups=K, filters=[6], kernel_size=3, lstm_units=[8, 4],
             dense_units=[8], target_units=4, dropout=0.0, learning_rate=1e-2, distance=DISTANCE, head_input="pixels",
             partition="distance", pixel_weights="per_pixel")
VARIANTS = [("domst-singlehead-p", {"target_input": "group_means"}), ("domst", {"pixcon": False}),
            ("domst", {"target_input": "projection"}), ("domst", {"k_groups": 1}),
            ("domst", {"head_input": "weighted_sum"}),
            ("domst", {"head_input": "weighted_sum", "partition": "dynamic"}),
            ("domst", {"head_input": "weighted_sum", "pixel_weights": "distance"})]


def _batch(seed=0, n=16):
    rng = np.random.default_rng(seed)
    return (rng.gamma(0.5, 2.0, size=(n, LOOKBACK, P)).astype("float32"),
            rng.gamma(0.5, 2.0, size=(n, P)).astype("float32"))


@pytest.mark.parametrize("name, changes", VARIANTS)
def test_every_variant_builds_with_its_counted_parameters(name, changes):
    cfg = {**SMALL, **changes}
    model = registry.build(name, cfg)
    out = model.predict(D.model_inputs(name, *_batch()), verbose=0)
    assert out.shape == (16, 1) and np.all(np.isfinite(out))
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == D.count_params(name, cfg)


def test_the_widened_baseline_has_dom_sts_parameter_count():
    target = D.count_params("domst", SMALL)
    name, cfg = domst_roles.model_config("singlehead_p_wide", SMALL)
    assert name == "domst-singlehead-p" and cfg["filters"][0] > SMALL["filters"][0]
    wide = D.count_params(name, cfg)
    narrower = D.count_params(name, {**cfg, "filters": [cfg["filters"][0] - 1]})
    wider = D.count_params(name, {**cfg, "filters": [cfg["filters"][0] + 1]})
    assert abs(wide - target) <= min(abs(narrower - target), abs(wider - target))
    assert domst_roles.model_config("domst_uniform", SMALL) == ("domst", {**SMALL, "pixcon": False})


def test_group_means_see_only_each_groups_mean_of_the_target_day():
    model = D.build_singlehead_p({**SMALL, "target_input": "group_means"})
    x, p_target = _batch(1)
    groups = D.partition(DISTANCE, K)
    shuffled = p_target.copy()
    for g in groups:  # permuting pixels inside a group keeps every group's mean
        shuffled[:, g] = p_target[:, np.roll(g, 1)]
    same = model.predict([x, shuffled], verbose=0)
    np.testing.assert_allclose(model.predict([x, p_target], verbose=0), same, rtol=1e-5, atol=1e-6)
    moved = p_target.copy()
    moved[:, groups[0][0]] += 5.0
    assert np.max(np.abs(model.predict([x, moved], verbose=0) - same)) > 1e-4
    np.testing.assert_allclose(D.group_mean_matrix(DISTANCE, K).sum(axis=0), 1.0, rtol=1e-6)


def test_pixcon_off_keeps_every_weight_at_one_through_training():
    model = D.build_domst({**SMALL, "pixcon": False})
    x, p_target = _batch(2, n=64)
    model.fit([x, p_target], x[:, -1, :1] + p_target[:, :1], epochs=2, verbose=0)
    np.testing.assert_allclose(D.pixcon_weights(model), 1.0, rtol=1e-6)


def test_weighted_sum_heads_cannot_absorb_a_pixels_weight():
    """Scaling one pixel's weight changes the output of weighted-sum heads whatever the kernels; with
    pixel channels the first convolution's slice for that pixel undoes it exactly."""
    x, p_target = _batch(3)
    for head_input, absorbed in (("pixels", True), ("weighted_sum", False)):
        model = D.build_domst({**SMALL, "head_input": head_input, "target_input": "projection"})
        before = model.predict([x, np.zeros_like(p_target)], verbose=0)
        pixel = int(D.partition(DISTANCE, K)[0][0])
        offset = model.pixcon.offset.numpy()
        offset[pixel] = np.log(np.expm1(4.0))  # weight 4 instead of 1
        model.pixcon.offset.assign(offset)
        if absorbed:
            conv = model.heads[0][0]
            kernel = conv.kernel.numpy()
            kernel[:, 0, :] /= 4.0  # the pixel is channel 0 of head 0 (nearest first)
            conv.kernel.assign(kernel)
        after = model.predict([x, np.zeros_like(p_target)], verbose=0)
        assert (np.max(np.abs(after - before)) < 1e-5) == absorbed, head_input


def test_dynamic_partition_recuts_groups_by_the_learned_weights():
    model = D.build_domst({**SMALL, "head_input": "weighted_sum", "partition": "dynamic"})
    np.testing.assert_allclose(model.pixcon.membership.numpy(), D.group_mean_matrix(DISTANCE, K))
    weights = np.linspace(0.1, 3.0, P)
    model.pixcon.offset.assign(np.log(np.expm1(weights)).astype("float32"))
    model.pixcon.repartition()
    member = model.pixcon.membership.numpy()
    largest = np.argsort(-weights)[:P // K]
    assert set(np.flatnonzero(member[:, 0])) == set(largest)  # group 0: the largest contributions
    with pytest.raises(ValueError, match="needs head_input 'weighted_sum'"):
        D.resolve({**SMALL, "partition": "dynamic"})


def test_distance_pixel_weights_are_a_monotone_function_of_distance_through_training():
    """pixel_weights 'distance': one offset and one slope, so after any training the weights order the
    pixels exactly as their distances do (or exactly reversed) and equal distances get equal weights."""
    model = D.build_domst({**SMALL, "head_input": "weighted_sum", "k_groups": 1, "pixel_weights": "distance"})
    assert model.pixcon.offset.shape == ()
    x, p_target = _batch(4, n=64)
    model.fit([x, p_target], x[:, -1, :1] + 2.0 * p_target[:, 3:4], epochs=3, verbose=0)
    w = D.pixcon_weights(model)
    assert np.ptp(w) > 1e-4  # it learned a slope
    order = np.argsort(DISTANCE)
    steps = np.diff(w[order])
    assert np.all(steps >= -1e-7) or np.all(steps <= 1e-7)
    with pytest.raises(ValueError, match="pixel_weights must be one of"):
        D.resolve({**SMALL, "pixel_weights": "per_group"}, "domst")
