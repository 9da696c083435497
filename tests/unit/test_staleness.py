"""Staleness factor and the aggregation rule W <- W - (1/s) sum lambda(tau_j) dW_j."""
import numpy as np
import pytest

from distributed.staleness import SCHEDULES, aggregate, staleness_factor

pytestmark = pytest.mark.unit


def test_inverse_schedule_is_one_over_tau_and_one_at_zero():
    assert staleness_factor(0) == 1.0
    assert staleness_factor(1) == 1.0
    assert staleness_factor(2) == 0.5
    assert staleness_factor(4, "inverse") == 0.25


def test_constant_and_exponential_schedules():
    assert [staleness_factor(t, "constant") for t in (0, 1, 7)] == [1.0, 1.0, 1.0]
    assert staleness_factor(0, "exponential") == 1.0
    assert staleness_factor(3, "exponential") == 0.125          # default base 0.5
    assert staleness_factor(2, "exponential", base=0.9) == pytest.approx(0.81)
    with pytest.raises(ValueError, match="base"):
        staleness_factor(1, "exponential", base=1.5)


def test_bad_tau_and_unknown_schedule_are_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        staleness_factor(-1)
    with pytest.raises(ValueError, match="integer"):
        staleness_factor(1.5)
    with pytest.raises(ValueError) as info:
        staleness_factor(1, "softsync")
    for name in SCHEDULES:
        assert name in str(info.value)


def test_aggregate_matches_hand_computation_with_two_staleness_values():
    # W = [1, 2, 3] and [[4]];  dW_a (tau 0, lambda 1) = [0.5, 0.5, 1] and [[2]],
    # dW_b (tau 2, lambda 1/2) = [1, 0, -2] and [[4]];  s = 2:
    #   sum lambda dW = [0.5+0.5, 0.5+0, 1-1] = [1, 0.5, 0] and [[2+2]] = [[4]]
    #   W - sum/2     = [1-0.5, 2-0.25, 3-0] = [0.5, 1.75, 3] and [[4-2]] = [[2]]
    weights = [np.array([1.0, 2.0, 3.0]), np.array([[4.0]], dtype=np.float32)]
    d_a = [np.array([0.5, 0.5, 1.0]), np.array([[2.0]], dtype=np.float32)]
    d_b = [np.array([1.0, 0.0, -2.0]), np.array([[4.0]], dtype=np.float32)]
    before = [w.copy() for w in weights]
    new = aggregate(weights, [d_a, d_b], [0, 2], s=2)
    np.testing.assert_array_equal(new[0], [0.5, 1.75, 3.0])
    np.testing.assert_array_equal(new[1], [[2.0]])
    assert new[1].dtype == np.float32                     # dtype of the weights is kept
    for w, b in zip(weights, before):                     # inputs untouched
        np.testing.assert_array_equal(w, b)


def test_constant_schedule_ignores_staleness():
    weights = [np.array([1.0, 2.0, 3.0])]
    deltas = [[np.array([0.5, 0.5, 1.0])], [np.array([1.0, 0.0, -2.0])]]
    new = aggregate(weights, deltas, [0, 2], s=2, schedule="constant")
    np.testing.assert_array_equal(new[0], [0.25, 1.75, 3.5])  # W - (dA + dB)/2


def test_single_fresh_delta_lands_on_the_local_weights():
    rng = np.random.default_rng(0)
    w_read = [rng.integers(-64, 64, (3, 4)) / 8.0, rng.integers(-64, 64, 5) / 8.0]
    w_local = [w - rng.integers(-8, 8, w.shape) / 16.0 for w in w_read]
    delta = [r - w for r, w in zip(w_read, w_local)]       # dW = W_read - W_local
    new = aggregate(w_read, [delta], [0], s=1)
    for got, want in zip(new, w_local):
        np.testing.assert_array_equal(got, want)


def test_shape_mismatch_names_tensor_and_both_shapes():
    weights = [np.zeros(3), np.zeros((2, 2))]
    bad = [np.zeros(3), np.zeros((2, 3))]
    with pytest.raises(ValueError) as info:
        aggregate(weights, [bad], [0], s=1)
    msg = str(info.value)
    assert "tensor 1" in msg and "(2, 3)" in msg and "(2, 2)" in msg


def test_count_mismatches_and_bad_s_are_rejected():
    weights = [np.zeros(3)]
    with pytest.raises(ValueError, match="2 tensors"):
        aggregate(weights, [[np.zeros(3), np.zeros(1)]], [0], s=1)
    with pytest.raises(ValueError, match="staleness values"):
        aggregate(weights, [[np.zeros(3)]], [0, 1], s=1)
    with pytest.raises(ValueError, match="s "):
        aggregate(weights, [[np.zeros(3)]], [0], s=0)
