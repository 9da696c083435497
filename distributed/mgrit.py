"""Multigrid reduction in time (MGRIT) for layer-parallel propagation (the TorchBraid idea).

The layers of a residual network, h_{i+1} = h_i + dt f(h_i, theta_i), are time steps. Each process owns
a contiguous run of n steps and holds its points 0..n (point n is the next process's point 0; on the
last process it is the network's output). Instead of waiting for the previous process (serial), every
process iterates, FAS multigrid on the time grid:

- F-relaxation: from each C-point (every c-th point) step through the F-points after it (local);
- C-relaxation: each C-point from the F-point before it (point n goes to the next process);
- restriction (FAS, injection): the coarse grid has every c-th point, coarse steps of c dt using the
  parameters of the fine step at the C-point, and the right-hand side
      g_c[J] = Phi(u[Jc - 1]) + g[Jc] - Phi_c(u[(J - 1)c]);
- the coarse problem is solved by the same cycle one level down; on the coarsest level serially (each
  process waits for the previous one's last point);
- correction: the C-points take the coarse values; an F-relaxation interpolates the F-points.

Each iteration propagates the exact solution by at least one coarse interval (two with FCF), so after
enough iterations the result equals serial propagation to rounding; few iterations give the
approximation layer-parallel training runs with. The same code solves the adjoint (backward) problem,
a linear recurrence backwards in the layers: pass the adjoint step and the process order reversed.

`step(level, j, x)` is this process's j-th step on `level` (0 = fine): x -> Phi(x), numpy in and out.
`comm` has send(dst, tag, array) and recv(src, tag) (distributed/mesh.py); prev/next are the ranks of
the previous and next process in time (None at the ends).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


def check_levels(n: int, c: int, levels: int) -> None:
    """A process's n steps must coarsen evenly `levels - 1` times by the factor c."""
    if c < 2 or levels < 1:
        raise ValueError(f"MGRIT needs a coarsening factor >= 2 and >= 1 level, got c={c}, levels={levels}")
    if n % c ** (levels - 1):
        raise ValueError(f"{n} steps per process do not coarsen {levels - 1} times by {c}: "
                         f"layers per process must be a multiple of {c ** (levels - 1)}")


def _add(a, g):
    return a if g is None else a + g


@dataclass
class Solver:
    step: Callable[[int, int, np.ndarray], np.ndarray]
    comm: object
    prev: int | None
    next: int | None
    c: int = 2
    levels: int = 2
    fcf: bool = True
    tag: str = "mgrit"
    steps_evaluated: int = field(default=0, init=False)

    def _phi(self, level: int, j: int, x):
        self.steps_evaluated += 1
        return self.step(level, j, x)

    def solve(self, u: list, iterations: int) -> list[float]:
        """Iterate on the local points u[0..n] in place (u[0] is the initial condition on the first
        process, anywhere else an initial guess); returns this process's share of the squared residual
        at the C-points, per iteration (sum over processes, then sqrt: the residual norm)."""
        check_levels(len(u) - 1, self.c, self.levels)
        g = [None] * len(u)
        if self.levels == 1:
            self._serial(0, u, g)
            return []
        return [self._cycle(0, u, g) for _ in range(iterations)]

    def _serial(self, level: int, u: list, g: list) -> None:
        if self.prev is not None:
            u[0] = self.comm.recv(self.prev, self.tag)
        for j in range(1, len(u)):
            u[j] = _add(self._phi(level, j - 1, u[j - 1]), g[j])
        if self.next is not None:
            self.comm.send(self.next, self.tag, u[-1])

    def _f_relax(self, level: int, u: list, g: list) -> None:
        n, c = len(u) - 1, self.c
        for start in range(0, n, c):
            for k in range(start + 1, start + c):
                u[k] = _add(self._phi(level, k - 1, u[k - 1]), g[k])

    def _c_relax(self, level: int, u: list, g: list) -> None:
        n, c = len(u) - 1, self.c
        for j in range(c, n + 1, c):
            u[j] = _add(self._phi(level, j - 1, u[j - 1]), g[j])
        if self.next is not None:
            self.comm.send(self.next, self.tag, u[n])
        if self.prev is not None:
            u[0] = self.comm.recv(self.prev, self.tag)

    def _cycle(self, level: int, u: list, g: list) -> float:
        """One V-cycle on `level`; returns the local squared residual after relaxation."""
        if level == self.levels - 1:
            self._serial(level, u, g)
            return 0.0
        n, c = len(u) - 1, self.c
        self._f_relax(level, u, g)
        if self.fcf:
            self._c_relax(level, u, g)
            self._f_relax(level, u, g)
        ahead = {j: _add(self._phi(level, j - 1, u[j - 1]), g[j]) for j in range(c, n + 1, c)}
        residual = float(sum(np.sum(np.square(ahead[j] - u[j]), dtype=np.float64) for j in ahead))
        coarse_g = [None] + [ahead[J * c] - self._phi(level + 1, J - 1, u[(J - 1) * c]) for J in range(1, n // c + 1)]
        v = [u[J * c] for J in range(n // c + 1)]
        self._cycle(level + 1, v, coarse_g)
        for J, value in enumerate(v):
            u[J * c] = value
        self._f_relax(level, u, g)
        return residual

