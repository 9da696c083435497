"""The parameter server's memory by design: model-sized buffers are reused, at most s + 1 exist however
many workers push at once, a push is read straight into one, and aggregate_into keeps aggregate()'s rule."""
import threading
import time

import numpy as np
import pytest

from distributed.param_server import ParameterServer, ParameterServerError
from distributed.ps_buffers import SlabPool
from distributed.ps_client import PSClient
from distributed.staleness import CHUNK, aggregate, aggregate_into

pytestmark = pytest.mark.unit

SECRET = b"per-run-secret-0123456789abcdef!"
SHAPES = [(30, 20), (20,), (3000,)]


@pytest.mark.parametrize("s, workers", [(1, 6), (3, 3)])
def test_concurrent_pushes_use_at_most_s_plus_one_buffers_and_every_update_lands(s, workers):
    w0 = [np.full(shape, 1.0, np.float32) for shape in SHAPES]
    ps = ParameterServer(w0, SECRET, workers, s=s)
    addr, rounds = ps.start(), 4
    errors = []

    def worker(w):
        try:
            with PSClient(addr, SECRET, w) as c:
                for _ in range(rounds):
                    _, version = c.pull()
                    c.push([np.full(shape, 2.0 ** -(w + 4), np.float32) for shape in SHAPES], version)
                c.leave()
        except Exception as e:  # recorded for the assertion
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == [] and ps.wait_until_done(10)
        snap = ps.snapshot()
        assert len(snap["updates"]) == workers * rounds == snap["pushes_received"]
        assert ps._pool.made <= s + 1, f"{ps._pool.made} model-sized buffers for s={s}"
        # replay the log: each update's own factor over its aggregate's size, every value exact in float32
        want = np.float64(1.0)
        for version in sorted({u["applied_version"] for u in snap["updates"]}):
            batch = [u for u in snap["updates"] if u["applied_version"] == version]
            want -= sum(u["lambda"] * 2.0 ** -(u["worker"] + 4) for u in batch) / len(batch)
        for got in snap["weights"]:
            np.testing.assert_allclose(got, want, rtol=1e-5)
    finally:
        ps.stop()


def test_a_push_is_received_into_a_pooled_buffer_and_its_aggregate_becomes_the_weights():
    w0 = [np.zeros(shape, np.float32) for shape in SHAPES]
    ps = ParameterServer(w0, SECRET, 1, s=1)
    addr = ps.start()
    try:
        with PSClient(addr, SECRET, 0) as c:
            first = ps._current
            c.push([np.ones(shape, np.float32) for shape in SHAPES], 0)
            second = ps._current
            c.push([np.ones(shape, np.float32) for shape in SHAPES], 1)
            assert ps._current is first and second is not first   # the two buffers take turns
            weights, version = c.pull()
        assert version == 2 and all((w == -2).all() for w in weights)
        assert ps._pool.made == 2
    finally:
        ps.stop()


@pytest.mark.parametrize("dtype, taus", [(np.float32, [0]), (np.float32, [2, 0, 5]), (np.float64, [0, 1])])
def test_aggregate_into_keeps_the_rule_of_aggregate_in_place(dtype, taus):
    rng = np.random.default_rng(len(taus))
    shapes = [(30, 20), (CHUNK + 5,)]   # one tensor longer than a chunk
    weights = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    deltas = [[rng.standard_normal(shape).astype(dtype) * 1e-2 for shape in shapes] for _ in taus]
    want = aggregate(weights, deltas, taus, len(taus))
    out = [d.copy() for d in deltas[0]]
    aggregate_into(out, weights, [out] + deltas[1:], taus, len(taus))   # in place over the first delta
    eps = np.finfo(dtype).eps
    for got, w, ref in zip(out, weights, want):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, rtol=0, atol=4 * eps * (np.abs(w).max() + 1))
    if taus == [0]:  # one update, lambda 1, s 1: W - dW rounded once, as aggregate()
        assert all(np.array_equal(g, r) for g, r in zip(out, want))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_nan_past_the_first_piece_of_a_large_tensor_is_refused(dtype):
    """The finiteness check runs piece by piece as a push lands (into a pooled buffer in the model's
    float32, or a buffer of its own in float64): a NaN in the last element of a multi-piece tensor counts."""
    shapes = [(3, 4), (700_000,)]                             # 2.8 MB: three pieces of 1 MiB in float32
    ps = ParameterServer([np.zeros(shape, np.float32) for shape in shapes], SECRET, 1, s=1)
    addr = ps.start()
    try:
        with PSClient(addr, SECRET, 0) as c:
            poisoned = [np.ones(shape, dtype) for shape in shapes]
            poisoned[1][-1] = np.nan
            with pytest.raises(ParameterServerError, match="tensor 1 holds NaN or inf"):
                c.push(poisoned, 0)
            assert ps.pushes_refused == [1] and ps.version == 0
            assert c.push([np.ones(shape, dtype) for shape in shapes], 0) == 1
        assert ps._pool.made == 2
    finally:
        ps.stop()


def test_a_freed_buffer_goes_to_the_push_that_waited_longest_not_to_one_that_just_arrived():
    """At 32 clients a waiting push lost its buffer again and again to pushes that arrived later: some
    workers got 26 updates in, others 40, in the same window."""
    lock = threading.RLock()
    pool = SlabPool([(np.dtype(np.float32), (4,), 16)], 1, lock)
    slab, order = pool.take(), []

    def waiter():
        with lock:  # the pool's caller holds the server's lock
            mine = pool.take()
            order.append("waited")
            pool.give(mine)

    thread = threading.Thread(target=waiter)
    thread.start()
    for _ in range(500):
        with lock:
            if pool._waiting:
                break
        time.sleep(0.01)
    with lock:
        assert len(pool._waiting) == 1
        pool.give(slab)
        mine = pool.take()  # arrives while the freed buffer is still on its way to the waiter
        order.append("arrived")
        pool.give(mine)
    thread.join(5)
    assert order == ["waited", "arrived"] and pool.made == 1
