"""Early stopping with Keras semantics and the thesis's two criteria."""
import pytest

from distributed.early_stopping import CRITERIA, EarlyStopper, epochs_to_stable

pytestmark = pytest.mark.unit

# Training accuracy per epoch, chosen so the two criteria disagree.
HISTORY = [0.50, 0.60, 0.6005, 0.6100, 0.6102, 0.61025, 0.6104, 0.6200]


def test_criteria_are_the_thesis_values():
    assert CRITERIA == {1: (1, 0.001), 2: (3, 0.0001)}


def test_criterion_1_stops_at_first_small_gain():
    # patience 1, min_delta 0.001 (improves iff value - 0.001 > best):
    # e1 0.50   first epoch, best=0.50
    # e2 0.60   0.599 > 0.50   improves, best=0.60, wait 0
    # e3 0.6005 0.5995 > 0.60? no -> wait 1 >= patience 1 -> stop after 3 epochs
    assert epochs_to_stable(HISTORY, *CRITERIA[1]) == 3


def test_criterion_2_tolerates_small_gains():
    # patience 3, min_delta 0.0001:
    # e1 0.50 best; e2 0.60 improves; e3 0.6005 (0.6004 > 0.60) improves;
    # e4 0.6100 improves; e5 0.6102 (0.6101 > 0.61) improves;
    # e6 0.61025 (0.61015 > 0.6102? no) wait 1; e7 0.6104 (0.6103 > 0.6102) improves, wait 0;
    # e8 0.6200 improves -> never stops -> len(history) = 8
    assert epochs_to_stable(HISTORY, *CRITERIA[2]) == 8
    # Three flat epochs after e5 exhaust patience 3:
    # e6 0.6102 wait 1, e7 0.6101 wait 2, e8 0.6102 wait 3 -> stop after 8 epochs
    plateau = HISTORY[:5] + [0.6102, 0.6101, 0.6102, 0.70]
    assert epochs_to_stable(plateau, *CRITERIA[2]) == 8


def test_min_mode_for_loss_histories():
    # loss, patience 2, min_delta 0.01 (improves iff value + 0.01 < best):
    # e1 1.0 best; e2 0.8 improves; e3 0.795 (0.805 < 0.8? no) wait 1;
    # e4 0.7 improves, wait 0; e5 0.695 wait 1; e6 0.70 wait 2 -> stop after 6
    loss = [1.0, 0.8, 0.795, 0.7, 0.695, 0.70, 0.1]
    assert epochs_to_stable(loss, 2, 0.01, mode="min") == 6
    # The same history read as 'max' stops as soon as patience runs out after e1.
    assert epochs_to_stable(loss, 2, 0.01, mode="max") == 3


def test_never_stopping_and_empty_history_return_length():
    assert epochs_to_stable([0.1, 0.2, 0.3, 0.4], *CRITERIA[1]) == 4
    assert epochs_to_stable([], *CRITERIA[2]) == 0


def test_stopper_is_stateful_and_stays_stopped():
    stopper = EarlyStopper(*CRITERIA[1])
    assert stopper.update(0.5) is False
    assert stopper.update(0.7) is False
    assert stopper.best == 0.7 and stopper.best_epoch == 1
    assert stopper.update(0.7005) is True        # gain 0.0005 < min_delta
    assert stopper.update(0.99) is True          # once stopped, stays stopped
    assert stopper.epochs_seen == 4


def test_nan_epoch_is_not_an_improvement():
    stopper = EarlyStopper(1, 0.0)
    stopper.update(0.5)
    assert stopper.update(float("nan")) is True


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="patience"):
        EarlyStopper(-1, 0.001)
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopper(1, -0.1)
    with pytest.raises(ValueError, match="mode"):
        EarlyStopper(1, 0.001, mode="auto")
