"""Spatial decomposition of a volume with halo exchange (the DistDL idea), pure numpy.

A batch of volumes (N, D, H, W, C) is split along D, H, W into a grid of blocks, one per process. A
'same' convolution of kernel k on the whole volume equals, on each block, a 'valid' convolution of the
block padded with r = (k - 1) // 2 voxels: the neighbours' voxels where there is a neighbour, zeros at
the volume's border. The padding is filled axis by axis (D, then H including the D halos, then W
including both), so the corner and edge voxels arrive through face neighbours only: at most six
messages per exchange, and every halo voxel is received exactly once.

The backward pass is the adjoint of that exchange: the gradient that lands in a block's halo belongs to
the neighbour's voxels, so it is sent back and added there, axis by axis in reverse order.

`comm` is anything with send(dst, tag, array) and recv(src, tag) -> array (distributed/mesh.py: the
authenticated wire between processes, or in-memory queues between threads).
"""
from __future__ import annotations

import math

import numpy as np

AXES = (1, 2, 3)  # spatial axes of (N, D, H, W, C)


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) of `parts` near-equal pieces of range(n); the first n % parts are one longer."""
    if parts < 1 or n < parts:
        raise ValueError(f"cannot split {n} voxels into {parts} blocks")
    base, extra = divmod(n, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (i < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def grid_for(processes: int) -> tuple[int, int, int]:
    """Blocks per axis (D, H, W) for `processes` sub-volumes: as cubic as possible, larger counts first
    (1 -> 1x1x1, 2 -> 2x1x1, 4 -> 2x2x1, 8 -> 2x2x2, 6 -> 3x2x1)."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    best = None
    for a in range(1, processes + 1):
        for b in range(1, processes // a + 1):
            if processes % (a * b) == 0:
                dims = tuple(sorted((a, b, processes // (a * b)), reverse=True))
                if best is None or max(dims) - min(dims) < max(best) - min(best):
                    best = dims
    return best


def coords(rank: int, grid) -> tuple[int, int, int]:
    return tuple(int(i) for i in np.unravel_index(rank, grid))


def rank_of(position, grid) -> int:
    return int(np.ravel_multi_index(position, grid))


def block(shape, grid, rank: int) -> tuple[tuple[int, int], ...]:
    """[start, stop) per spatial axis of `rank`'s block of a volume of spatial `shape` (D, H, W)."""
    return tuple(split(n, g)[i] for n, g, i in zip(shape, grid, coords(rank, grid)))


def neighbours(rank: int, grid) -> tuple[tuple[int | None, int | None], ...]:
    """(lower, upper) neighbour rank per spatial axis; None at the volume's border."""
    here = coords(rank, grid)
    out = []
    for axis, size in enumerate(grid):
        pair = []
        for step in (-1, 1):
            pos = list(here)
            pos[axis] += step
            pair.append(rank_of(pos, grid) if 0 <= pos[axis] < size else None)
        out.append(tuple(pair))
    return tuple(out)


def check_halo(shape, grid, r: int) -> None:
    """Each block must be at least r thick along an axis that is split, or a halo would need voxels
    from beyond the next neighbour."""
    for axis, (n, g) in enumerate(zip(shape, grid)):
        thinnest = min(b - a for a, b in split(n, g))
        if g > 1 and thinnest < r:
            raise ValueError(f"axis {axis}: blocks of {thinnest} voxels are thinner than the halo {r} "
                             f"(volume {tuple(shape)} on grid {tuple(grid)})")


def take(x: np.ndarray, axis: int, start: int | None, stop: int | None) -> np.ndarray:
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _border_pads(nbrs, r: int) -> list[tuple[int, int]]:
    """np.pad widths of (N, D, H, W, C): r zeros on each side without a neighbour."""
    return [(0, 0)] + [(r * (lo is None), r * (hi is None)) for lo, hi in nbrs] + [(0, 0)]


def exchange(x: np.ndarray, r: int, nbrs, comm, tag: str = "halo") -> np.ndarray:
    """This process's block padded with r voxels per side: the neighbours' voxels, zeros at the border.

    The border zeros are added last, so no zero ever travels: what arrives is exactly the halo volume
    (`halo_voxels`). Two neighbours along one axis share their border on the other axes, so the slabs
    they trade have matching shapes."""
    x = np.asarray(x)
    if r == 0:
        return x
    for (lo, hi), axis in zip(nbrs, AXES):
        if lo is not None:
            comm.send(lo, tag, take(x, axis, 0, r))
        if hi is not None:
            comm.send(hi, tag, take(x, axis, -r, None))
        parts = ([comm.recv(lo, tag)] if lo is not None else []) + [x] + \
                ([comm.recv(hi, tag)] if hi is not None else [])
        x = np.concatenate(parts, axis=axis)
    return np.pad(x, _border_pads(nbrs, r))


def exchange_adjoint(g: np.ndarray, r: int, nbrs, comm, tag: str = "halo") -> np.ndarray:
    """The adjoint of `exchange`: the gradient of a padded block -> the gradient of the block, with what
    fell into the halos sent back to (and added at) the neighbours that own those voxels."""
    g = np.asarray(g)
    if r == 0:
        return g
    g = g[tuple(slice(a, g.shape[i] - b) for i, (a, b) in enumerate(_border_pads(nbrs, r)))]  # border zeros
    for (lo, hi), axis in reversed(list(zip(nbrs, AXES))):
        if lo is not None:
            comm.send(lo, tag, take(g, axis, 0, r))
        if hi is not None:
            comm.send(hi, tag, take(g, axis, -r, None))
        core = np.array(take(g, axis, r if lo is not None else 0, -r if hi is not None else None))
        if lo is not None:
            take(core, axis, 0, r)[...] += comm.recv(lo, tag)
        if hi is not None:
            take(core, axis, -r, None)[...] += comm.recv(hi, tag)
        g = core
    return g


def halo_voxels(shape, grid, rank: int, r: int) -> int:
    """Analytic halo volume of `rank`'s block: its box grown by r per side and clipped to the volume,
    minus the block itself (what one exchange brings in, per batch item and channel)."""
    bounds = block(shape, grid, rank)
    grown = math.prod(min(b + r, n) - max(a - r, 0) for (a, b), n in zip(bounds, shape))
    return grown - math.prod(b - a for a, b in bounds)


def scatter(volume: np.ndarray, grid, rank: int) -> np.ndarray:
    """`rank`'s block of a full (N, D, H, W, C) volume."""
    (d0, d1), (h0, h1), (w0, w1) = block(volume.shape[1:4], grid, rank)
    return volume[:, d0:d1, h0:h1, w0:w1]


def gather(blocks: dict[int, np.ndarray], shape, grid) -> np.ndarray:
    """The full volume from every rank's block (the inverse of `scatter`)."""
    first = next(iter(blocks.values()))
    out = np.zeros((first.shape[0], *shape, first.shape[-1]), first.dtype)
    for rank, data in blocks.items():
        (d0, d1), (h0, h1), (w0, w1) = block(shape, grid, rank)
        out[:, d0:d1, h0:h1, w0:w1] = data
    return out
