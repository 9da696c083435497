"""The parameter server's refusals over real loopback sockets: each one names what is wrong and leaves
the server's state (version, weights, pushes received, pending updates, reports, workers) as it was."""
import contextlib
import socket
import threading
import time

import numpy as np
import pytest

from distributed.param_server import ParameterServer, ParameterServerError, worker_credential
from distributed.ps_client import PSClient
from distributed.ps_wire import client_handshake, recv_message, send_message

pytestmark = pytest.mark.unit

METRICS = "field 'metrics' must map at most 32 names of at most 64 characters to numbers"

SECRET = b"per-run-secret-0123456789abcdef!"
W0 = [np.array([8.0, 8.0]), np.array([[1.0, 2.0], [3.0, 4.0]])]


@contextlib.contextmanager
def running(num_workers, s=1, **kw):
    ps = ParameterServer(W0, SECRET, num_workers, s=s, **kw)
    try:
        yield ps, ps.start()
    finally:
        ps.stop()


def delta(value, dtype=float):
    return [np.full(w.shape, value, dtype=dtype) for w in W0]


def state(ps) -> dict:
    """What a refused request must not change (times and weights compared separately)."""
    snap = ps.snapshot()
    return {"version": snap["version"], "updates": snap["updates"], "metrics": snap["metrics"],
            "active": snap["active_workers"], "lost": snap["lost_workers"], "events": snap["events"],
            "received": snap["pushes_received"], "withdrawn": snap["pushes_withdrawn"], "pending": ps.pending}


def assert_unchanged(ps, before: dict) -> None:
    assert state(ps) == before
    for got, want in zip(ps.snapshot()["weights"], W0):
        np.testing.assert_array_equal(got, want)


def wait_for(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


@contextlib.contextmanager
def raw_connection(addr):
    """An authenticated connection that sends whatever header it is given (PSClient would not)."""
    sock = socket.create_connection(addr, timeout=10)
    try:
        client_handshake(sock, SECRET)
        yield sock
    finally:
        sock.close()


def signed(header: dict) -> dict:
    """The header with the credential of the worker it names (the default key: the secret), as that
    worker's own role would send it; a worker this server does not have gets none."""
    worker = header.get("worker")
    return {**header, "credential": worker_credential(SECRET, worker)} if worker in (0, 1) else header


def ask(sock, header: dict, arrays=()) -> dict:
    send_message(sock, signed(header), arrays)
    reply, _ = recv_message(sock)
    return reply


# ---------------------------------------------------------------------------------- constructor
@pytest.mark.parametrize("kw, error", [
    ({"num_workers": 0}, "num_workers must be an integer >= 1, got 0"),
    ({"num_workers": 2.0}, "num_workers must be an integer >= 1, got 2.0"),
    ({"num_workers": 2, "s": 3}, "s must be an integer with 1 <= s <= num_workers=2, got 3"),
    ({"num_workers": 2, "s": 0}, "s must be an integer with 1 <= s <= num_workers=2, got 0"),
    ({"num_workers": 2, "s": True}, "s must be an integer with 1 <= s <= num_workers=2, got True"),
    ({"num_workers": 1, "secret": b"short"}, "secret must be at least 16 bytes"),
    ({"num_workers": 1, "secret": "a-str-not-bytes-0123456789"}, "secret must be at least 16 bytes"),
    ({"num_workers": 1, "weights": [np.array([1, 2])]}, "initial weight 0 has dtype int64; only float32/float64"),
])
def test_constructor_refuses_bad_settings(kw, error):
    kw = {"weights": W0, "secret": SECRET, **kw}
    with pytest.raises(ValueError) as info:
        ParameterServer(kw.pop("weights"), kw.pop("secret"), **kw)
    assert str(info.value).startswith(error), str(info.value)


def test_constructor_refuses_an_unknown_schedule():
    with pytest.raises(ValueError, match="schedule"):
        ParameterServer(W0, SECRET, 1, schedule="no-such-schedule")


# ---------------------------------------------------------------------------------- restore
def test_restore_after_start_is_refused_and_changes_nothing():
    with running(1) as (ps, addr):
        before = state(ps)
        weights, saved = ps.checkpoint()
        with pytest.raises(RuntimeError, match=r"^restore\(\) must come before start\(\)$"):
            ps.restore([w + 1 for w in weights], {**saved, "version": 7})
        assert_unchanged(ps, before)


@pytest.mark.parametrize("weights", [
    [np.zeros(2)],                                          # a tensor missing
    [np.zeros(2), np.zeros((2, 2)), np.zeros(1)],           # one too many
    [np.zeros(3), np.zeros((2, 2))],                        # a wrong shape
    [np.zeros(2), np.zeros((4,))],                          # same size, other shape
])
def test_restore_with_weights_of_other_shapes_is_refused_and_changes_nothing(weights):
    ps = ParameterServer(W0, SECRET, 2)
    _, saved = ps.checkpoint()
    before = state(ps)
    with pytest.raises(ValueError, match=r"^checkpoint weights do not match the model's shapes$"):
        ps.restore(weights, {**saved, "version": 5, "pushes_received": 5})
    assert_unchanged(ps, before)


# ---------------------------------------------------------------------------------- requests
@pytest.mark.parametrize("header, error", [
    ({"op": "join", "worker": 0, "epoch": -1}, "field 'epoch' must be an integer in 0..1000000, got -1"),
    ({"op": "join", "worker": 0, "epoch": "1"}, "field 'epoch' must be an integer in 0..1000000, got '1'"),
    ({"op": "join", "worker": 0, "epoch": 1.0}, "field 'epoch' must be an integer in 0..1000000, got 1.0"),
    ({"op": "report", "worker": 0, "epoch": 0, "metrics": {"accuracy": "high"}},
     METRICS),
    ({"op": "report", "worker": 0, "epoch": 0, "metrics": [0.5]}, METRICS),
    ({"op": "report", "worker": 0, "epoch": 0, "metrics": {"accuracy": None}},
     METRICS),
    ({"op": "report", "worker": 0, "epoch": "0", "metrics": {"accuracy": 0.5}},
     "field 'epoch' must be an integer in 0..1000000, got '0'"),
    ({"op": "rewind", "worker": 0}, "unknown op 'rewind'"),
    ({"op": "push", "worker": 0, "read_version": "0"}, "field 'read_version' must be an integer, got '0'"),
    ({"op": "leave", "worker": 5}, "unknown worker 5; this job has workers 0..1"),
])
def test_a_bad_request_gets_its_error_and_changes_nothing(header, error):
    with running(2) as (ps, addr), raw_connection(addr) as sock:
        assert ask(sock, {"op": "join", "worker": 0, "epoch": 0})["op"] == "joined"
        before = state(ps)
        assert ask(sock, header) == {"op": "error", "message": error}
        assert_unchanged(ps, before)
        assert ask(sock, {"op": "pull", "worker": 0})["version"] == 0  # the connection goes on


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_a_push_of_integer_tensors_is_refused_whole(dtype):
    with running(1) as (ps, addr), PSClient(addr, SECRET, 0) as c0:
        c0.join(0)
        before = state(ps)
        name = np.dtype(dtype).name
        with pytest.raises(ParameterServerError, match=rf"^tensor 0: got {name} \(2,\), "
                                                       rf"expected floats of shape \(2,\)$"):
            c0.push(delta(1, dtype), 0)
        assert_unchanged(ps, before)


# ---------------------------------------------------------------------------------- faults
def test_a_pusher_that_disconnects_while_waiting_is_withdrawn_and_never_applied():
    # s = 2: worker 0's push waits for worker 1's. Its connection drops while it waits: the update is
    # withdrawn (never applied), and worker 1's later push is applied alone, not with the orphan.
    with running(2, s=2, heartbeat_s=0.05) as (ps, addr):
        with raw_connection(addr) as sock:
            assert ask(sock, {"op": "join", "worker": 0, "epoch": 0})["op"] == "joined"
            send_message(sock, signed({"op": "push", "worker": 0, "read_version": 0}), delta(1.0))
            assert recv_message(sock)[0] == {"op": "waiting"}  # buffered, waiting for a second update
            assert ps.pending == 1 and ps.pushes_received == 1
        wait_for(lambda: ps.pushes_withdrawn == 1)
        snap = ps.snapshot()
        assert ps.pending == 0 and snap["version"] == 0 and snap["updates"] == []
        assert snap["pushes_received"] == 1 and snap["lost_workers"] == [0]  # dropped without 'leave'
        for got, want in zip(snap["weights"], W0):
            np.testing.assert_array_equal(got, want)
        with PSClient(addr, SECRET, 1) as c1:
            c1.join(0)
            assert c1.push(delta(0.5), 0) == 1  # s shrank to 1 with worker 0 lost
            (update,) = ps.snapshot()["updates"]
            assert update["worker"] == 1
            for got, want in zip(c1.pull()[0], W0):
                np.testing.assert_array_equal(got, want - 0.5)


def test_a_lost_worker_that_never_rejoins_ends_the_run_by_leaving():
    with running(2) as (ps, addr), PSClient(addr, SECRET, 0) as c0:
        c0.join(0)
        with PSClient(addr, SECRET, 1) as c1:
            c1.join(0)
        wait_for(lambda: ps.snapshot()["lost_workers"] == [1])
        c0.push(delta(1.0), 0)
        c0.leave()
        assert not ps.wait_until_done(0.2), "a lost worker may still come back: the run stays open"
        before = state(ps)
        with PSClient(addr, SECRET, 1) as retry:  # the retried task gives up without joining
            retry.leave()
        assert ps.wait_until_done(5)
        after = state(ps)
        assert after["lost"] == [] and after["active"] == []
        assert {k: v for k, v in after.items() if k != "lost"} == {k: v for k, v in before.items() if k != "lost"}
        with PSClient(addr, SECRET, 1) as late, pytest.raises(ParameterServerError, match="^worker 1 already left; "
                                                                                        "it cannot join again$"):
            late.join(1)


def test_requests_after_stop_are_refused_or_cut():
    ps = ParameterServer(W0, SECRET, 1)
    addr = ps.start()
    with PSClient(addr, SECRET, 0) as c0:
        c0.join(0)
        ps.stop()
        with pytest.raises(ConnectionError):
            c0.push(delta(1.0), 0)
    assert ps.version == 0 and ps.pushes_received == 0 and ps.pending == 0
    assert not any(t.name.startswith(f"param-server-{addr[1]}") and t.is_alive() for t in threading.enumerate())
