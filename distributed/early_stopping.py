"""Early stopping with Keras ``EarlyStopping`` semantics, as pure Python, under two rules.

Used twice: workers stop training with ``EarlyStopper`` and the reports count
"epochs needed to reach a stable performance" with ``epochs_to_stable`` on a
recorded history.  Common to both rules (mode 'max'): an epoch improves when
``value - min_delta > best``; the first epoch improves (it sets ``best``); NaN never
improves.  They differ in when the count of epochs without improvement is tested:

- ``keras2.0``: Keras 2.0.0-2.0.8 (the thesis used 2.0.4), ``EarlyStopping.on_epoch_end``
  tests ``wait >= patience`` *before* ``wait += 1``, so training stops at the end of
  the (patience + 1)-th epoch in a row without improvement.  Its ``best`` starts at
  -inf, so a NaN first epoch does not improve either.
- ``keras3``: Keras 2.0.9 and later (keras-team/keras#8100) increment first and stop
  after ``patience`` such epochs (never at the first epoch).
"""
from __future__ import annotations

import math
from typing import Iterable

# The thesis's two criteria (Tables 5.1 and 5.2): criterion -> (patience, min_delta).
CRITERIA = {1: (1, 0.001), 2: (3, 0.0001)}
MODES = ("max", "min")
RULES = ("keras2.0", "keras3")
THESIS_RULE = "keras2.0"


class EarlyStopper:
    """Feed one monitored value per epoch; ``update`` returns True when training should stop."""

    def __init__(self, patience: int, min_delta: float, mode: str = "max", rule: str = "keras3"):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta)) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if rule not in RULES:
            raise ValueError(f"unknown stopping rule {rule!r}; valid: {', '.join(RULES)}")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.mode = mode
        self.rule = rule
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.epochs_seen = 0
        self.stopped = False

    def _improves(self, value: float) -> bool:
        if self.best is None:  # keras2.0 compares with -inf: NaN does not improve on it
            return self.rule == "keras3" or not math.isnan(value)
        # NaN compares False both ways, so a NaN epoch never counts as an improvement.
        if self.mode == "max":
            return value - self.min_delta > self.best
        return value + self.min_delta < self.best

    def update(self, value: float) -> bool:
        """Record the value of the epoch that just ended; True means stop now."""
        value = float(value)
        epoch = self.epochs_seen
        self.epochs_seen += 1
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return self.stopped
        if self.rule == "keras2.0":
            if self.wait >= self.patience:
                self.stopped = True
            self.wait += 1
        else:
            self.wait += 1
            if self.wait >= self.patience and epoch > 0:
                self.stopped = True
        return self.stopped


def epochs_to_stable(history: Iterable[float], patience: int, min_delta: float,
                     mode: str = "max", rule: str = "keras3") -> int | None:
    """Number of epochs after which training stops, or None if it never stops within `history`."""
    stopper = EarlyStopper(patience, min_delta, mode, rule)
    for n, value in enumerate(history, start=1):
        if stopper.update(value):
            return n
    return None


def never_stopped(max_epochs: int) -> str:
    """How a worker that trained max_epochs without meeting its criterion is reported: not a number."""
    return f">{max_epochs}"


def stable_value(history: list[float], patience: int, min_delta: float, max_epochs: int,
                 mode: str = "max", rule: str = "keras3") -> int | str:
    """epochs_to_stable, with a run that never stopped reported as '>max_epochs'."""
    n = epochs_to_stable(history, patience, min_delta, mode, rule)
    return never_stopped(max_epochs) if n is None else n
