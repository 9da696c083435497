"""Early stopping with Keras ``EarlyStopping`` semantics, as pure Python.

Used twice: workers stop training with ``EarlyStopper`` and the reports count
"epochs needed to reach a stable performance" with ``epochs_to_stable`` on a
recorded history.  The rule (mode 'max'): an epoch improves when
``value - min_delta > best``; the first epoch always improves; training stops at
the end of the first epoch (other than the first) after which ``patience``
epochs in a row have not improved.
"""
from __future__ import annotations

import math
from typing import Iterable

# The thesis's two criteria (Tables 5.1 and 5.2): criterion -> (patience, min_delta).
CRITERIA = {1: (1, 0.001), 2: (3, 0.0001)}
MODES = ("max", "min")


class EarlyStopper:
    """Feed one monitored value per epoch; ``update`` returns True when training should stop."""

    def __init__(self, patience: int, min_delta: float, mode: str = "max"):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta)) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.mode = mode
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.epochs_seen = 0
        self.stopped = False

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        # NaN compares False both ways, so a NaN epoch never counts as an improvement.
        if self.mode == "max":
            return value - self.min_delta > self.best
        return value + self.min_delta < self.best

    def update(self, value: float) -> bool:
        """Record the value of the epoch that just ended; True means stop now."""
        value = float(value)
        epoch = self.epochs_seen
        self.epochs_seen += 1
        self.wait += 1
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return self.stopped
        if self.wait >= self.patience and epoch > 0:
            self.stopped = True
        return self.stopped


def epochs_to_stable(history: Iterable[float], patience: int, min_delta: float,
                     mode: str = "max") -> int:
    """Number of epochs after which training would stop, or len(history) if it never stops."""
    stopper = EarlyStopper(patience, min_delta, mode)
    values = list(history)
    for n, value in enumerate(values, start=1):
        if stopper.update(value):
            return n
    return len(values)
