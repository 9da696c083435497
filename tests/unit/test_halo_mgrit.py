"""Halo exchange and MGRIT as pure numpy, one thread per emulated process (distributed.mesh.LocalWorld)."""
import numpy as np
import pytest

from distributed import halo, mgrit
from distributed.mesh import LocalWorld, MeshError

pytestmark = pytest.mark.unit


def test_split_grid_and_neighbours():
    assert halo.split(7, 2) == [(0, 4), (4, 7)]
    assert halo.split(9, 4) == [(0, 3), (3, 5), (5, 7), (7, 9)]
    assert [halo.grid_for(p) for p in (1, 2, 4, 8, 6)] == [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2), (3, 2, 1)]
    assert halo.neighbours(0, (2, 2, 2)) == ((None, 4), (None, 2), (None, 1))
    assert halo.neighbours(7, (2, 2, 2)) == ((3, None), (5, None), (6, None))
    with pytest.raises(ValueError, match="thinner than the halo"):
        halo.check_halo((8, 3, 8), (1, 2, 1), 2)


@pytest.mark.parametrize("processes,shape,r", [(2, (7, 5, 6), 1), (4, (7, 9, 5), 2), (8, (5, 7, 9), 1),
                                               (8, (8, 8, 8), 2), (1, (4, 5, 6), 2)])
def test_exchange_fills_the_halo_with_the_neighbours_voxels_and_zeros_at_the_border(processes, shape, r):
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(2, *shape, 3)).astype(np.float32)
    grid = halo.grid_for(processes)
    halo.check_halo(shape, grid, r)
    padded_full = np.pad(volume, [(0, 0)] + [(r, r)] * 3 + [(0, 0)])

    def run(comm):
        return halo.exchange(halo.scatter(volume, grid, comm.rank), r, halo.neighbours(comm.rank, grid), comm), \
            comm.counters.snapshot()

    for rank, (padded, counts) in enumerate(LocalWorld(processes).run(run)):
        (d0, d1), (h0, h1), (w0, w1) = halo.block(shape, grid, rank)
        want = padded_full[:, d0:d1 + 2 * r, h0:h1 + 2 * r, w0:w1 + 2 * r]
        np.testing.assert_array_equal(padded, want)
        received = counts.get("halo", {}).get("recv_payload", 0)
        assert received == halo.halo_voxels(shape, grid, rank, r) * 2 * 3 * 4  # batch 2, 3 channels, float32


@pytest.mark.parametrize("processes,shape,r", [(2, (7, 5, 6), 2), (4, (5, 9, 7), 1), (8, (6, 7, 5), 2)])
def test_exchange_adjoint_is_the_adjoint_of_exchange(processes, shape, r):
    """<exchange(x), y> == <x, exchange_adjoint(y)> summed over the blocks (the dot-product test)."""
    rng = np.random.default_rng(2)
    grid = halo.grid_for(processes)
    x = rng.normal(size=(1, *shape, 2))

    def run(comm):
        nbrs = halo.neighbours(comm.rank, grid)
        mine = halo.scatter(x, grid, comm.rank)
        padded = halo.exchange(mine, r, nbrs, comm)
        y = np.random.default_rng(10 + comm.rank).normal(size=padded.shape)
        back = halo.exchange_adjoint(y, r, nbrs, comm)
        assert back.shape == mine.shape
        return float(np.sum(padded * y)), float(np.sum(mine * back))

    lhs, rhs = map(sum, zip(*LocalWorld(processes).run(run)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_a_message_with_the_wrong_tag_is_an_error():
    def run(comm):
        if comm.rank == 0:
            comm.send(1, "halo", np.zeros(2))
        else:
            comm.recv(0, "mgrit")
    with pytest.raises(MeshError, match="expected 'mgrit' from rank 0, got 'halo'"):
        LocalWorld(2).run(run)


# ---------------------------------------------------------------- MGRIT on a small nonlinear ODE
DT, N_TOTAL = 0.1, 16
A = np.array([[0.0, 1.0], [-1.0, -0.2]])


def phi(level, i_global, x, c):
    """h + c^level dt tanh(A h + b_i): a residual 'network' of 2-vectors with per-step parameters."""
    b = np.array([np.sin(0.3 * i_global * c ** level), 0.1])
    return x + (c ** level) * DT * np.tanh(A @ x + b)


def serial(u0):
    states = [u0]
    for i in range(N_TOTAL):
        states.append(phi(0, i, states[-1], 2))
    return states


def mgrit_states(processes, c, levels, iterations, fcf=True):
    n = N_TOTAL // processes
    u0 = np.array([1.0, -0.5])

    def run(comm):
        p = comm.rank
        step = lambda level, j, x: phi(level, p * n // c ** level + j, x, c)  # noqa: E731
        solver = mgrit.Solver(step, comm, p - 1 if p else None, p + 1 if p < processes - 1 else None, c=c,
                              levels=levels, fcf=fcf)
        u = [u0.copy() if (p == 0 and k == 0) else np.zeros(2) for k in range(n + 1)]
        residuals = solver.solve(u, iterations)
        return u, residuals
    out = LocalWorld(processes).run(run)
    states = [s for u, _ in out for s in u[:-1]] + [out[-1][0][-1]]
    return states, np.sqrt(np.sum([rs for _, rs in out], axis=0))


@pytest.mark.parametrize("processes,c,levels,fcf", [(1, 2, 2, True), (2, 2, 2, True), (4, 2, 2, False),
                                                    (4, 2, 3, True), (2, 4, 2, True), (8, 2, 2, True)])
def test_mgrit_converges_to_serial_propagation(processes, c, levels, fcf):
    want = serial(np.array([1.0, -0.5]))
    iterations = N_TOTAL // c  # one coarse interval per iteration at least
    states, residuals = mgrit_states(processes, c, levels, iterations, fcf)
    error = max(np.max(np.abs(a - b)) for a, b in zip(states, want))
    assert error < 1e-10
    assert residuals[-1] < 1e-10 and residuals[0] > 1e-3


def test_mgrit_error_falls_per_iteration_and_one_iteration_is_only_an_approximation():
    want = serial(np.array([1.0, -0.5]))
    errors = []
    for iterations in range(1, 5):
        states, _ = mgrit_states(4, 2, 2, iterations)
        errors.append(max(np.max(np.abs(a - b)) for a, b in zip(states, want)))
    assert errors[0] > 1e-4  # not serial after one iteration
    assert all(b < a for a, b in zip(errors, errors[1:])), errors


def test_levels_must_coarsen_evenly():
    with pytest.raises(ValueError, match="multiple of 4"):
        mgrit.check_levels(6, 2, 3)
    mgrit.check_levels(8, 2, 3)
