"""Model-sized buffers for the parameter server, reused: one pool holds at most `limit` of them (the weights,
the updates waiting, one being received), whatever the number of connections."""
from __future__ import annotations

import threading

import numpy as np


class Slab:
    """One model-sized buffer: flat bytes, and a view of them per tensor in the model's dtypes and shapes."""

    def __init__(self, layout: list[tuple[np.dtype, tuple, int]]):
        self.raw = np.empty(sum(n for _, _, n in layout), np.uint8)
        self.arrays, offset = [], 0
        for dtype, shape, nbytes in layout:
            self.arrays.append(self.raw[offset:offset + nbytes].view(dtype).reshape(shape))
            offset += nbytes
        self.readers = 0        # pulls and checkpoints sending or copying these as the weights
        self.retired = False    # no longer the weights: back to the pool once readers is 0


class SlabPool:
    """Reused model-sized buffers, at most `limit` at once (more only for an update that came in another
    dtype, given back at once). The caller holds the lock `cond` is built on: the server's lock, with a
    condition of the pool's own, so a freed buffer wakes one waiting push, not every thread of the server."""

    def __init__(self, layout, limit: int, cond: threading.Condition):
        self.layout, self.limit, self._cond = layout, limit, cond
        self._free: list[Slab] = []
        self.made = 0

    def take(self, stopping=lambda: False, force: bool = False) -> Slab:
        if not force:
            self._cond.wait_for(lambda: self._free or self.made < self.limit or stopping())
            if stopping():
                raise ConnectionError("parameter server is stopping")
        if self._free:
            return self._free.pop()
        self.made += 1
        return Slab(self.layout)

    def give(self, slab: Slab) -> None:
        slab.readers, slab.retired = 0, False
        if self.made > self.limit:
            self.made -= 1
        else:
            self._free.append(slab)
        self._cond.notify()

    def wake_all(self) -> None:
        """Caller holds the lock: every waiter rechecks (the server is stopping)."""
        self._cond.notify_all()
