"""Parameter server over real loopback sockets: staleness log, sync mode, leave, auth, load."""
import contextlib
import logging
import socket
import threading
import time

import numpy as np
import pytest

from distributed.param_server import ParameterServer, ParameterServerError
from distributed.ps_client import PSClient
from distributed import ps_wire
from distributed.ps_wire import AuthError, client_handshake
from distributed.staleness import staleness_factor

pytestmark = pytest.mark.unit

SECRET = b"per-run-secret-0123456789abcdef!"
W0 = [np.array([8.0, 8.0]), np.array([[1.0, 2.0], [3.0, 4.0]])]


@contextlib.contextmanager
def running(num_workers, s=1, weights=W0, **kw):
    ps = ParameterServer(weights, SECRET, num_workers, s=s, **kw)
    try:
        yield ps, ps.start()
    finally:
        ps.stop()


def delta(value):
    return [np.full(w.shape, value) for w in W0]


def minus(weights, *scaled_deltas):
    out = [w.copy() for w in weights]
    for d in scaled_deltas:
        out = [o - x for o, x in zip(out, d)]
    return out


def assert_weights(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


def in_thread(fn, *args):
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except Exception as e:  # recorded for the assertions
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def test_async_s1_scripted_interleaving_logs_the_right_staleness():
    dA, dB, dC, dD = delta(1.0), delta(0.5), delta(2.0), delta(0.25)
    with running(2, s=1) as (ps, addr), PSClient(addr, SECRET, 0) as c0, PSClient(addr, SECRET, 1) as c1:
        w, v = c0.pull()
        assert v == 0
        assert_weights(w, W0)
        assert c1.pull()[1] == 0
        assert c0.push(dA, 0) == 1                        # tau 0
        w, v = c0.pull()
        assert v == 1
        assert_weights(w, minus(W0, dA))                  # one fresh delta lands on W_local
        assert c1.push(dB, 0) == 2                        # tau 1 - 0 = 1, lambda 1
        assert (c0.last_tau, c1.last_tau) == (0, 1)       # each push's reply carries its staleness
        assert c1.pull()[1] == 2
        assert c1.push(dD, 2) == 3                        # tau 0
        assert c0.push(dC, 1) == 4                        # tau 3 - 1 = 2, lambda 1/2
        assert (c0.last_tau, c1.last_tau) == (2, 0)
        snap = ps.snapshot()
    log = snap["updates"]
    assert [u["worker"] for u in log] == [0, 1, 1, 0]
    assert [u["read_version"] for u in log] == [0, 0, 2, 1]
    assert [u["tau"] for u in log] == [0, 1, 0, 2]
    assert [u["lambda"] for u in log] == [1.0, 1.0, 1.0, 0.5]
    assert [u["applied_version"] for u in log] == [1, 2, 3, 4]
    assert snap["version"] == 4
    assert_weights(snap["weights"], minus(W0, dA, dB, dD, [0.5 * x for x in dC]))


def test_synchronous_pushes_block_until_all_workers_pushed():
    deltas = [delta(1.0), delta(2.0), delta(6.0)]
    with running(3, s=3, heartbeat_s=0.05) as (ps, addr):
        clients = [PSClient(addr, SECRET, i, timeout_s=5) for i in range(3)]
        try:
            first = [in_thread(clients[i].push, deltas[i], 0) for i in range(2)]
            wait_for(lambda: ps.pending == 2)
            time.sleep(0.3)                               # several heartbeats go by
            assert all(t.is_alive() for t, _ in first), "a push returned before s updates arrived"
            assert ps.version == 0
            assert clients[2].push(deltas[2], 0) == 1
            for t, box in first:
                t.join(5)
                assert box == {"value": 1}
            weights, version = clients[0].pull()
        finally:
            for c in clients:
                c.close()
    assert version == 1
    mean = [sum(d[i] for d in deltas) / 3 for i in range(len(W0))]   # tau 0 everywhere
    assert_weights(weights, minus(W0, mean))


def test_leave_shrinks_s_and_releases_waiting_pushes(caplog):
    caplog.set_level(logging.INFO, logger="distributed.param_server")
    with running(3, s=3, heartbeat_s=0.05) as (ps, addr):
        clients = [PSClient(addr, SECRET, i, timeout_s=5) for i in range(3)]
        try:
            waiting = [in_thread(clients[i].push, delta(float(i + 1)), 0) for i in range(2)]
            wait_for(lambda: ps.pending == 2)
            clients[2].leave()
            for t, box in waiting:
                t.join(5)
                assert box == {"value": 1}
            with pytest.raises(ParameterServerError, match="left"):
                clients[2].push(delta(1.0), 1)
            assert not ps.wait_until_done(0.05)
            clients[0].leave()
            clients[1].leave()
            assert ps.wait_until_done(2)
            snap = ps.snapshot()
        finally:
            for c in clients:
                c.close()
    assert "s shrinks from 3 to 2: worker 2 left" in caplog.text
    assert_weights(snap["weights"], minus(W0, [(1.0 + 2.0) / 2 * x for x in delta(1.0)]))
    assert snap["active_workers"] == []


def test_wrong_secret_and_garbage_are_rejected_while_a_good_client_works():
    with running(1) as (ps, addr), PSClient(addr, SECRET, 0) as good:
        assert good.pull()[1] == 0
        with pytest.raises(AuthError):
            PSClient(addr, b"wrong-secret-wrong-secret-wrong!", 0, timeout_s=2)
        with socket.create_connection(addr, timeout=2) as raw:       # junk instead of a handshake
            raw.sendall(b"\x80\x04\x95" + b"\xff" * 100)
            assert raw.recv(100)                          # challenge, then REJECT or close
        socket.create_connection(addr, timeout=2).close()            # connect and vanish
        with socket.create_connection(addr, timeout=2) as authed:     # knows the secret, sends junk
            client_handshake(authed, SECRET)
            ps_wire._send_frame(authed, b'{"op":"push","arrays":[{"dtype":"object","shape":[1]}]}',
                                [b"\x80\x04N."])
            reply, _ = ps_wire.recv_message(authed)       # answered; the connection stays usable
            assert reply["op"] == "error" and "dtype" in reply["message"]
            ps_wire.send_message(authed, {"op": "pull"})
            assert ps_wire.recv_message(authed)[0] == {"op": "weights", "version": 0}
        assert good.push(delta(1.0), 0) == 1
        assert_weights(good.pull()[0], minus(W0, delta(1.0)))
        with PSClient(addr, SECRET, 0) as again:
            assert again.pull()[1] == 1


def test_bad_pushes_are_refused_whole_and_nothing_is_applied():
    with running(1) as (ps, addr), PSClient(addr, SECRET, 0) as c:
        bad_shape = [np.zeros(2), np.zeros((2, 3))]
        with pytest.raises(ParameterServerError, match="tensor 1"):
            c.push(bad_shape, 0)
        with pytest.raises(ParameterServerError, match="3 tensors"):
            c.push(delta(1.0) + [np.zeros(1)], 0)
        with pytest.raises(ParameterServerError, match="read_version"):
            c.push(delta(1.0), 5)
        with PSClient(addr, SECRET, 7) as stranger, \
                pytest.raises(ParameterServerError, match="unknown worker"):
            stranger.push(delta(1.0), 0)
        assert (ps.version, ps.pushes_received, ps.updates_applied) == (0, 0, 0)
        assert_weights(c.pull()[0], W0)


def test_push_that_never_completes_is_withdrawn_after_the_timeout():
    with running(2, s=2, push_timeout_s=0.3, heartbeat_s=0.05) as (ps, addr), \
            PSClient(addr, SECRET, 0, timeout_s=2) as c:
        start = time.monotonic()
        with pytest.raises(ParameterServerError, match="not applied within"):
            c.push(delta(1.0), 0)
        assert time.monotonic() - start < 2
        assert (ps.pending, ps.pushes_withdrawn, ps.version) == (0, 1, 0)


def test_reports_are_kept_per_worker():
    with running(2) as (ps, addr), PSClient(addr, SECRET, 1) as c:
        c.report(0, {"accuracy": 0.5, "loss": 2})
        c.report(1, {"accuracy": 0.625, "loss": 1.5})
        metrics = ps.snapshot()["metrics"]
    assert metrics[0] == []
    assert [(r["epoch"], r["metrics"]) for r in metrics[1]] == [
        (0, {"accuracy": 0.5, "loss": 2.0}), (1, {"accuracy": 0.625, "loss": 1.5})]


def test_eight_concurrent_workers_reconcile_without_deadlock():
    workers, rounds, s = 8, 50, 3

    def work(worker):
        with PSClient(addr, SECRET, worker, timeout_s=10) as c:
            for _ in range(rounds):
                _, version = c.pull()
                c.push(delta((worker + 1) * 1e-3), version)
            c.leave()

    with running(workers, s=s) as (ps, addr):
        threads = [in_thread(work, w) for w in range(workers)]
        for t, _ in threads:
            t.join(30)
        assert not any(t.is_alive() for t, _ in threads), "deadlock: workers still pushing"
        assert [box for _, box in threads] == [{"value": None}] * workers
        assert ps.wait_until_done(2)
        snap = ps.snapshot()
    log = snap["updates"]
    assert snap["pushes_received"] == len(log) == workers * rounds
    groups = {}
    for u in log:
        groups.setdefault(u["applied_version"], []).append(u)
    assert sorted(groups) == list(range(1, snap["version"] + 1))     # one version per aggregate
    assert all(1 <= len(g) <= s for g in groups.values())
    assert len(groups[1]) == s                    # all 8 active at first: s_eff = s
    # Recompute the final weights from the log alone.
    want = [w.copy() for w in W0]
    for version in sorted(groups):
        g = groups[version]
        assert all(u["tau"] == version - 1 - u["read_version"] for u in g)
        step = sum(staleness_factor(u["tau"]) * (u["worker"] + 1) * 1e-3 for u in g) / len(g)
        want = [w - step for w in want]
    assert_weights(snap["weights"], want)


def test_client_raises_connection_error_when_the_server_goes_away():
    ps = ParameterServer(W0, SECRET, 2, s=2, heartbeat_s=0.05)
    addr = ps.start()
    try:
        idle = PSClient(addr, SECRET, 0, timeout_s=2)
        pusher = PSClient(addr, SECRET, 1, timeout_s=2)
        t, box = in_thread(pusher.push, delta(1.0), 0)
        wait_for(lambda: ps.pending == 1)
    finally:
        ps.stop()
    start = time.monotonic()
    t.join(3)
    assert isinstance(box.get("error"), (ConnectionError, ParameterServerError))
    with pytest.raises(ConnectionError):
        idle.pull()
    with pytest.raises(ConnectionError):
        idle.pull()                                       # stays failed, never hangs
    assert time.monotonic() - start < 3
    with pytest.raises(ConnectionError):
        PSClient(addr, SECRET, 0, timeout_s=1)            # nobody listens any more


def test_port_already_in_use_is_a_clear_error():
    with running(1) as (ps, addr):
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1:%d" % addr[1]):
            ParameterServer(W0, SECRET, 1, port=addr[1]).start()


def test_client_times_out_on_a_server_that_never_answers():
    with socket.socket() as silent:                       # accepts into the backlog, says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.monotonic()
        with pytest.raises(ConnectionError, match="timed out"):
            PSClient(silent.getsockname(), SECRET, 0, timeout_s=0.5)
        assert time.monotonic() - start < 2
