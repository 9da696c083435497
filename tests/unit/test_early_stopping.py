"""Early stopping with Keras semantics and the thesis's two criteria, under the Keras 2.0.x and Keras 3 rules.

Expected stop epochs are derived by hand, line by line, from Keras 2.0.4's EarlyStopping.on_epoch_end:

    if self.monitor_op(current - self.min_delta, self.best):   # best starts at -inf
        self.best = current; self.wait = 0
    else:
        if self.wait >= self.patience: stop
        self.wait += 1

and from Keras 3 (2.0.9 and later), where `wait += 1` comes before the test.
"""
import math

import pytest

from distributed.early_stopping import (CRITERIA, EarlyStopper, RULES, THESIS_RULE, epochs_to_stable,
                                        never_stopped, stable_value)

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
    # e8 0.6200 improves -> never stops
    assert epochs_to_stable(HISTORY, *CRITERIA[2]) is None
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


def test_never_stopping_is_none_and_reported_as_more_than_max_epochs():
    assert epochs_to_stable([0.1, 0.2, 0.3, 0.4], *CRITERIA[1]) is None
    assert epochs_to_stable([], *CRITERIA[2]) is None
    assert stable_value([0.1, 0.2, 0.3, 0.4], *CRITERIA[1], max_epochs=20) == never_stopped(20) == ">20"
    assert stable_value(HISTORY, *CRITERIA[1], max_epochs=20) == 3


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


# ---------------------------------------------------------------- the thesis's rule: Keras 2.0.0-2.0.8
def test_thesis_rule_is_keras_2_0_and_the_default_is_unchanged():
    assert THESIS_RULE == "keras2.0" and RULES == ("keras2.0", "keras3")
    assert EarlyStopper(1, 0.001).rule == "keras3"
    with pytest.raises(ValueError, match="rule"):
        EarlyStopper(1, 0.001, rule="keras2.1")


def test_keras20_criterion_1_on_the_shared_history():
    # patience 1, min_delta 0.001, Keras 2.0.4:
    # e1 0.50    0.499 > -inf                improves, best 0.50, wait 0
    # e2 0.60    0.599 > 0.50                improves, best 0.60, wait 0
    # e3 0.6005  0.5995 > 0.60? no           wait 0 >= 1? no;  wait 1
    # e4 0.6100  0.609 > 0.60                improves, best 0.61, wait 0
    # e5 0.6102  0.6092 > 0.61? no           wait 0 >= 1? no;  wait 1
    # e6 0.61025 0.60925 > 0.61? no          wait 1 >= 1: stop after 6 epochs
    # (Keras 3 stops at e3: wait 1 >= 1 right after the increment.)
    assert epochs_to_stable(HISTORY, *CRITERIA[1], rule="keras2.0") == 6
    assert epochs_to_stable(HISTORY, *CRITERIA[1], rule="keras3") == 3


def test_keras20_criterion_2_needs_four_flat_epochs():
    # patience 3, min_delta 0.0001; e1-e5 improve as in test_criterion_2 (best 0.6102 after e5), then
    # e6 0.6102  0.6101 > 0.6102? no    wait 0 >= 3? no;  wait 1
    # e7 0.6101  no                     wait 1 >= 3? no;  wait 2
    # e8 0.6102  no                     wait 2 >= 3? no;  wait 3     (Keras 3 stops here: 8)
    # e9 0.70    0.6999 > 0.6102        improves, wait 0 -> Keras 2.0.4 never stops
    plateau = HISTORY[:5] + [0.6102, 0.6101, 0.6102, 0.70]
    assert epochs_to_stable(plateau, *CRITERIA[2], rule="keras2.0") is None
    assert epochs_to_stable(plateau, *CRITERIA[2], rule="keras3") == 8
    # e9 0.6102 instead:                 wait 3 >= 3: stop after 9 epochs
    flat = HISTORY[:5] + [0.6102] * 4 + [0.70]
    assert epochs_to_stable(flat, *CRITERIA[2], rule="keras2.0") == 9
    assert epochs_to_stable(flat, *CRITERIA[2], rule="keras3") == 8


def test_keras20_an_improvement_resets_the_count():
    # criterion 1: e1 0.5 best; e2 0.5 no (wait 0 -> 1); e3 0.6 improves (wait 0);
    # e4 0.6 no (0 >= 1? no, wait 1); e5 0.6 no (1 >= 1): stop after 5. Keras 3: e2 wait 1 >= 1, stop after 2.
    curve = [0.5, 0.5, 0.6, 0.6, 0.6, 0.6]
    assert epochs_to_stable(curve, *CRITERIA[1], rule="keras2.0") == 5
    assert epochs_to_stable(curve, *CRITERIA[1], rule="keras3") == 2


def test_keras20_patience_0_and_nan():
    # patience 0: the first epoch without improvement stops under both rules (wait 0 >= 0; 1 >= 0).
    assert epochs_to_stable([0.5, 0.6, 0.6], 0, 0.0, rule="keras2.0") == 3
    assert epochs_to_stable([0.5, 0.6, 0.6], 0, 0.0, rule="keras3") == 3
    # A NaN first epoch: Keras 2.0.4 compares nan - d > -inf (False): no improvement, 0 >= 0 stops.
    # Keras 3 takes the first value as the reference whatever it is; nothing improves on NaN, so e2 stops.
    assert epochs_to_stable([math.nan, 0.5], 0, 0.0, rule="keras2.0") == 1
    assert epochs_to_stable([math.nan, 0.5], 0, 0.0, rule="keras3") == 2


def test_keras20_min_mode_on_loss():
    # loss, patience 1, min_delta 0.01 (improves iff value + 0.01 < best):
    # e1 1.0 best; e2 0.995 no (wait 0 -> 1); e3 0.99 no (1 >= 1): stop after 3. Keras 3: stop after 2.
    assert epochs_to_stable([1.0, 0.995, 0.99, 0.5], 1, 0.01, mode="min", rule="keras2.0") == 3
    assert epochs_to_stable([1.0, 0.995, 0.99, 0.5], 1, 0.01, mode="min", rule="keras3") == 2
