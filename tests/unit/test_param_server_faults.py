"""Parameter server faults over real sockets and real processes: a worker process killed (lost, s shrinks,
rejoin), the server's process killed under a worker blocked in a push, checkpoint contents and restore."""
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from distributed import checkpoint
from distributed.param_server import ParameterServer, ParameterServerError
from distributed.ps_client import ParameterServerLost, PSClient
from distributed.ps_wire import AuthError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"per-run-secret-0123456789abcdef!"
W0 = [np.array([8.0, 8.0]), np.array([[1.0, 2.0], [3.0, 4.0]])]


def delta(value):
    return [np.full(w.shape, value) for w in W0]


@contextlib.contextmanager
def running(num_workers, s=1, **kw):
    ps = ParameterServer(W0, SECRET, num_workers, s=s, **kw)
    try:
        yield ps, ps.start()
    finally:
        ps.stop()


def wait_for(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def python(code: str, *args: str) -> subprocess.Popen:
    """A separate Python process running `code` (the repository on its path), its stdout readable."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)))


WORKER = """
    import sys, time
    from distributed.ps_client import PSClient
    c = PSClient(("127.0.0.1", int(sys.argv[1])), sys.argv[2].encode(), worker=int(sys.argv[3]))
    c.join(0)
    c.pull()
    print("ready", flush=True)
    time.sleep(600)
"""


def test_a_killed_worker_process_is_lost_s_shrinks_and_a_retry_rejoins(caplog):
    with running(2, s=2) as (ps, (host, port)), PSClient((host, port), SECRET, 0) as c0:
        c0.join(0)
        worker1 = python(WORKER, str(port), SECRET.decode(), "1")
        try:
            assert worker1.stdout.readline().strip() == "ready"
            c0.report(0, {"accuracy": 0.5})
            os.kill(worker1.pid, signal.SIGKILL)  # mid-epoch: connected, between requests
            worker1.wait(timeout=10)
        finally:
            if worker1.poll() is None:
                worker1.kill()
        wait_for(lambda: ps.snapshot()["lost_workers"] == [1])
        (lost,) = ps.snapshot()["events"]
        assert lost["event"] == "lost" and lost["worker"] == 1 and lost["epochs_reported"] == 0
        assert lost["message"] == "worker 1 lost; s shrinks from 2 to 1"
        assert lost["address"] == host and lost["cause"].startswith("its connection was closed"), lost
        assert "worker 1 lost; s shrinks from 2 to 1" in caplog.text
        # With s = 2 this push would wait for worker 1 until the push timeout; now it is applied alone.
        assert c0.push(delta(1.0), 0) == 1
        c0.leave()
        assert not ps.wait_until_done(0.2), "a lost worker may still come back: the run stays open"
        with PSClient((host, port), SECRET, 1) as again:
            with pytest.raises(ParameterServerError, match="must 'join' again"):
                again.push(delta(1.0), 1)
            assert again.join(1) == {"version": 1, "epochs_reported": 0, "updates_applied": 0}
            assert again.push(delta(1.0), 1) == 2
            again.leave()
        assert ps.wait_until_done(5)
        events = ps.snapshot()["events"]
        assert [e["event"] for e in events] == ["lost", "rejoined"] and events[1]["epoch"] == 1
        with PSClient((host, port), SECRET, 1) as late, pytest.raises(ParameterServerError, match="already left"):
            late.join(3)


def test_a_clean_leave_and_a_refused_connection_are_not_losses():
    with running(2) as (ps, addr):
        with PSClient(addr, SECRET, 0) as c0:
            c0.join(0)
            c0.leave()
        with pytest.raises(AuthError):
            PSClient(addr, b"not-the-secret-0123456789abcdef!", 1)
        # every connection's handler has run its end-of-connection bookkeeping
        wait_for(lambda: not any(t.is_alive() and "process_request_thread" in t.name for t in threading.enumerate()))
        snap = ps.snapshot()
        assert snap["events"] == [] and snap["lost_workers"] == [] and snap["active_workers"] == [1]


PS_PROCESS = """
    import sys, time
    import numpy as np
    from distributed.param_server import ParameterServer
    ps = ParameterServer([np.zeros(3)], sys.argv[1].encode(), num_workers=2, s=2, push_timeout_s=600)
    print(ps.start()[1], flush=True)
    time.sleep(600)
"""


def test_a_worker_blocked_in_a_push_returns_at_once_when_the_ps_process_dies():
    server = python(PS_PROCESS, SECRET.decode())
    try:
        port = int(server.stdout.readline())
        client = PSClient(("127.0.0.1", port), SECRET, 0, timeout_s=630, name="ps:0")
        client.join(0)
        outcome = {}

        def push():  # s = 2 and worker 1 never pushes: this blocks in the server's wait
            started = time.monotonic()
            try:
                client.push([np.ones(3)], 0)
            except ParameterServerLost as exc:
                outcome["error"], outcome["after_s"] = exc, time.monotonic() - started

        pusher = threading.Thread(target=push, daemon=True)
        pusher.start()
        time.sleep(0.5)
        assert pusher.is_alive(), "the push should be waiting for a second update"
        os.kill(server.pid, signal.SIGKILL)
        pusher.join(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=10)
    assert not pusher.is_alive(), "the push still waits after its server died"
    # the closed socket ended it, not the client's 630 s timeout (which the 60 s join above could not reach)
    assert not isinstance(outcome["error"].__cause__, TimeoutError), outcome
    assert "timed out" not in str(outcome["error"]), outcome
    assert f"lost the parameter server ps:0 at 127.0.0.1:{port}: 'push' failed" in str(outcome["error"])
    with pytest.raises(ConnectionError):  # and the client stays closed
        client.pull()


def test_checkpoint_holds_weights_version_and_progress_and_restore_goes_on_from_it(tmp_path):
    uri = str(tmp_path / "ps.h5")
    with running(2, s=1) as (ps, addr), PSClient(addr, SECRET, 0) as c0, PSClient(addr, SECRET, 1) as c1:
        c0.join(0), c1.join(0)
        c0.push(delta(1.0), 0)
        c0.report(0, {"accuracy": 0.25})
        c1.push(delta(0.5), 0)  # tau 1
        c1.report(0, {"accuracy": 0.5})
        c1.report(1, {"accuracy": 0.75})
        weights, state = ps.checkpoint()
        checkpoint.save(uri, {"weights": weights}, state)
    # s = 1, lambda(0) = lambda(1) = 1: W0 - d(1.0) - d(0.5), derived by hand, not read from the server
    expected = [w - 1.5 for w in W0]
    arrays, state = checkpoint.load(uri)
    assert state["version"] == 2 and state["epochs_reported"] == [1, 2] and state["num_workers"] == 2
    assert [(u["worker"], u["tau"]) for u in state["updates"]] == [(0, 0), (1, 1)]
    assert state["pushes_received"] == 2 and state["pushes_withdrawn"] == 0
    assert len(arrays["weights"]) == len(expected)
    for got, want in zip(arrays["weights"], expected):
        np.testing.assert_array_equal(got, want)

    restored = ParameterServer(W0, SECRET, 2, s=1)
    restored.restore(arrays["weights"], state)
    try:
        addr = restored.start()
        with PSClient(addr, SECRET, 0) as c0:
            assert c0.join(2) == {"version": 2, "epochs_reported": 1, "updates_applied": 1}
            w, v = c0.pull()
            assert v == 2
            assert len(w) == len(expected)
            for got, want in zip(w, expected):
                np.testing.assert_array_equal(got, want)
            assert c0.push(delta(0.0), 2) == 3
        snap = restored.snapshot()
        assert snap["pushes_received"] == 3 and len(snap["updates"]) == 3
    finally:
        restored.stop()
    with pytest.raises(ValueError, match="checkpoint is for 2 workers"):
        ParameterServer(W0, SECRET, 3).restore(arrays["weights"], state)
