"""The parameter server under load: 32 client processes pull and push over loopback for a fixed window.

Beyond test_param_server.py's eight threads (one process), this takes 32 separate processes with their
own sockets, at s=1 and s=8, and checks that nothing is lost or applied twice: every push a client saw
acknowledged is in the server's update log exactly once, with the versions the client was told, each
aggregate applied under one new version, and the final weights equal to the log replayed. It also
bounds the server's memory while it serves them (RSS of this process, where the server runs).
"""
from __future__ import annotations

import gc
import multiprocessing as mp
import threading
import time

import numpy as np
import psutil
import pytest

from distributed.param_server import ParameterServer
from distributed.ps_client import PSClient
from distributed.staleness import staleness_factor

pytestmark = [pytest.mark.unit, pytest.mark.timeout(240)]

SECRET = b"load-test-secret-0123456789abcdef"
CLIENTS = 32
WINDOW_S = 2.0
SHAPES = [(128, 128), (128,), (64, 40)]  # float64: 152 KiB, small enough for 32 clients on 2 cores
MODEL_BYTES = sum(int(np.prod(s)) for s in SHAPES) * 8
# Memory the server may use beyond its weights while it serves: a delta being received per connection,
# the s buffered ones, the aggregate's float64 temporaries, a pulled copy in flight per connection
# (2 * CLIENTS + s + 8 models in all), and the update log (a small dict per applied push).
LOG_BYTES_PER_UPDATE = 2048
# A fork server: clients start from a clean single-threaded process, not from pytest's (whose other
# threads may hold locks at fork time), and without the import cost of one fresh interpreter each.
CTX = mp.get_context("forkserver")
CTX.set_forkserver_preload(["numpy", "distributed.ps_client"])


def initial_weights() -> list[np.ndarray]:
    return [np.full(s, 1.0) for s in SHAPES]


def client_step(worker: int) -> float:
    """Each worker pushes the same constant delta every time, so the log alone gives the final weights."""
    return (worker + 1) * 1e-4


def client(port_conn, ready, go, results, worker: int, seconds: float) -> None:
    """Connect and push once (warm-up), wait for everyone, then pull + push until the window closes;
    report every ack, then leave."""
    port = port_conn.recv()
    delta = [np.full(s, client_step(worker)) for s in SHAPES]
    acks = []

    def step():
        _, read = c.pull()
        acks.append((read, c.push(delta, read)))

    with PSClient(("127.0.0.1", port), SECRET, worker, timeout_s=60) as c:
        step()
        ready.wait(60)
        go.wait(60)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            step()
        c.leave()
    results.put((worker, acks))


class PeakRSS:
    """Samples this process's resident set every 10 ms in a thread; `peak` is the largest seen."""

    def __init__(self):
        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def run_load(s: int) -> dict:
    """32 client processes against a server in this process; returns the snapshot, acks and memory."""
    ready, go, results = CTX.Barrier(CLIENTS + 1), CTX.Barrier(CLIENTS + 1), CTX.Queue()
    pipes = [CTX.Pipe() for _ in range(CLIENTS)]
    procs = [CTX.Process(target=client, args=(there, ready, go, results, w, WINDOW_S), daemon=True)
             for w, (_, there) in enumerate(pipes)]
    for p in procs:
        p.start()
    ps = ParameterServer(initial_weights(), SECRET, CLIENTS, s=s, heartbeat_s=1.0, push_timeout_s=60)
    acks = {}
    try:
        port = ps.start()[1]
        for here, _ in pipes:
            here.send(port)
        ready.wait(60)  # every client connected and pushed once: threads and buffers exist
        gc.collect()
        baseline = psutil.Process().memory_info().rss
        with PeakRSS() as rss:
            go.wait(60)
            for _ in procs:  # bounded: a deadlock fails here instead of hanging the run
                worker, got = results.get(timeout=WINDOW_S + 60)
                acks[worker] = got
            assert ps.wait_until_done(30), "not every client left"
            snap = ps.snapshot()
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0] * CLIENTS
    finally:
        ps.stop()
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    return {"snap": snap, "acks": acks, "growth": rss.peak - baseline}


@pytest.mark.parametrize("s", [1, 8])
def test_32_client_processes_lose_nothing_apply_nothing_twice_and_stay_bounded(s):
    out = run_load(s)
    snap, acks = out["snap"], out["acks"]
    log = snap["updates"]
    acknowledged = sum(len(a) for a in acks.values())
    assert sorted(acks) == list(range(CLIENTS))
    assert all(acks[w] for w in acks), "a client never got a push through"
    # counts reconcile: acknowledged == received == the log's entries == the aggregates' batch sizes
    groups: dict[int, list[dict]] = {}
    for u in log:
        groups.setdefault(u["applied_version"], []).append(u)
    assert acknowledged == snap["pushes_received"] == len(log) == sum(len(g) for g in groups.values())
    assert snap["pushes_withdrawn"] == 0
    # one new version per aggregate, in the order applied, each of at most s pushes
    applied = [u["applied_version"] for u in log]
    assert applied == sorted(applied) and sorted(groups) == list(range(1, snap["version"] + 1))
    assert all(1 <= len(g) <= s for g in groups.values())
    if s > 1:
        assert len(groups[1]) == s  # all clients active at first: s_eff = s
    # each client's acks are the server's log for that worker, entry by entry
    for w, got in acks.items():
        assert [(u["read_version"], u["applied_version"]) for u in log if u["worker"] == w] == got, w
        versions = [v for _, v in got]
        assert all(b > a for a, b in zip(versions, versions[1:])), f"worker {w}: versions not increasing"
    # the weights are the log replayed: no update applied that the log does not hold, none twice
    want = initial_weights()
    for version in sorted(groups):
        g = groups[version]
        assert all(u["tau"] == version - 1 - u["read_version"] for u in g)
        step = sum(staleness_factor(u["tau"]) * client_step(u["worker"]) for u in g) / len(g)
        want = [x - step for x in want]
    for got_w, want_w in zip(snap["weights"], want):
        np.testing.assert_allclose(got_w, want_w, rtol=0, atol=1e-9)
    # memory: the server's growth is bounded by a fixed number of models plus its log
    bound = (2 * CLIENTS + s + 8) * MODEL_BYTES + LOG_BYTES_PER_UPDATE * len(log)
    assert out["growth"] < bound, (f"RSS grew by {out['growth'] / 2**20:.1f} MiB over {len(log)} pushes, "
                                   f"bound {bound / 2**20:.1f} MiB ({MODEL_BYTES / 2**10:.0f} KiB model)")
    # the check has teeth: keeping every pushed delta would exceed the bound many times over
    assert len(log) * MODEL_BYTES > 2 * bound, f"only {len(log)} pushes: too few to show a leak"
