"""Each epoch's sample order from (seed, epoch) alone: a run and its resumption shuffle alike, so a
resumed role needs no random-generator state."""
from __future__ import annotations

import numpy as np


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random generator of one epoch (0-based), from (seed, epoch) alone."""
    return np.random.default_rng([int(seed), int(epoch)])


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of n samples in `epoch`: the same for a run and for its resumption."""
    return epoch_rng(seed, epoch).permutation(n)
