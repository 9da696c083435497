"""Model-sized buffers for the parameter server, reused: one pool holds at most `limit` of them (the weights,
the updates waiting, one being received), whatever the number of connections."""
from __future__ import annotations

import threading
from collections import deque

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
    dtype, given back at once). The caller holds `lock`, the server's lock. Pushes waiting for a buffer are
    served first come, first served: a freed buffer is handed to the oldest waiter and wakes only it, so a
    push that has waited cannot lose its buffer to one that just arrived (at 32 clients, that let some
    workers get 26 updates in during a window while others got 40)."""

    def __init__(self, layout, limit: int, lock):
        self.layout, self.limit, self._lock = layout, limit, lock
        self._free: list[Slab] = []
        self._waiting: deque[list] = deque()   # [slab handed over or None, its waiter's condition]
        self.made = 0

    def take(self, stopping=lambda: False, force: bool = False) -> Slab:
        if force or (not self._waiting and (self._free or self.made < self.limit)):
            return self._pop()
        turn = [None, threading.Condition(self._lock)]
        self._waiting.append(turn)
        while turn[0] is None and not stopping():
            turn[1].wait()
        if stopping():
            if turn[0] is None:
                self._waiting.remove(turn)
            else:
                self.give(turn[0])
            raise ConnectionError("parameter server is stopping")
        return turn[0]

    def _pop(self) -> Slab:
        if self._free:
            return self._free.pop()
        self.made += 1
        return Slab(self.layout)

    def give(self, slab: Slab) -> None:
        slab.readers, slab.retired = 0, False
        if self.made > self.limit:
            self.made -= 1
        elif self._waiting:
            turn = self._waiting.popleft()
            turn[0] = slab
            turn[1].notify()
        else:
            self._free.append(slab)

    def wake_all(self) -> None:
        """Caller holds the lock: every waiter rechecks (the server is stopping)."""
        for turn in self._waiting:
            turn[1].notify()
