"""Probes of the parameter server as an attacker would run them: a second process or a raw socket that
knows the job's connection secret but not a worker's credential, and malformed or non-finite messages
from a worker's own authenticated connection. Each asserts the refusal and that the state is unchanged."""
import contextlib
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from distributed import ps_wire
from distributed.param_server import ParameterServer, ParameterServerError, worker_credential
from distributed.ps_client import PSClient

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"connection-secret-0123456789abcd"   # every role holds it (it opens a connection)
WORKER_KEY = b"worker-key-only-the-ps-holds-012"  # makes the credentials; only the ps holds it
W0 = [np.array([8.0, 8.0]), np.array([[1.0, 2.0], [3.0, 4.0]])]


@contextlib.contextmanager
def running(num_workers=2, s=1, **kw):
    ps = ParameterServer(W0, SECRET, num_workers, s=s, worker_key=WORKER_KEY, **kw)
    try:
        yield ps, ps.start()
    finally:
        ps.stop()


def closed_by_peer(sock) -> bool:
    """The server closed this connection (a reset: it closed with our bytes unread); a timeout fails."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def worker(addr, index, **kw) -> PSClient:
    return PSClient(addr, SECRET, index, credential=worker_credential(WORKER_KEY, index), timeout_s=10, **kw)


def delta(value):
    return [np.full(w.shape, value) for w in W0]


def state(ps):
    snap = ps.snapshot()
    return (snap["version"], snap["pushes_received"], ps.pending, snap["active_workers"], snap["lost_workers"],
            snap["events"], [w.tolist() for w in snap["weights"]])


def in_other_process(code: str, port: int) -> str:
    """Run `code` in a separate Python process (the repository on its path); its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(port), SECRET.decode()], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_nan_and_inf_pushes_are_refused_per_worker_and_change_nothing():
    with running(2, s=1) as (ps, addr), worker(addr, 0) as w0, worker(addr, 1) as w1:
        w0.join(0)
        w1.join(0)
        before = state(ps)
        poisoned = delta(0.5)
        poisoned[1][1, 0] = np.nan
        with pytest.raises(ParameterServerError, match=r"worker 1 refused: tensor 1 holds NaN or inf"):
            w1.push(poisoned, 0)
        with pytest.raises(ParameterServerError, match=r"worker 0 refused: tensor 0 holds NaN or inf"):
            w0.push([np.array([np.inf, 0.0]), np.zeros((2, 2))], 0)
        with pytest.raises(ParameterServerError, match="worker 1 refused"):
            w1.push([x.astype(np.float32) for x in poisoned], 0)
        assert state(ps) == before
        assert ps.pushes_refused == [1, 2] and ps.snapshot()["pushes_refused"] == [1, 2]
        assert w1.push(delta(1.0), 0) == 1             # the same connection goes on with a finite update
        assert np.isfinite(np.concatenate([w.ravel() for w in w0.pull()[0]])).all()


FORGER = """
    import socket, sys
    from distributed import ps_wire
    from distributed.param_server import worker_credential
    port, secret = int(sys.argv[1]), sys.argv[2].encode()
    forged = [None, "00" * 32, worker_credential(secret, 1)]      # none, junk, made from the shared secret
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        ps_wire.client_handshake(sock, secret)
        for credential in forged:
            for header in ({"op": "join", "epoch": 0}, {"op": "push", "read_version": 0},
                           {"op": "report", "epoch": 0, "metrics": {"accuracy": 1.0}}, {"op": "leave"}):
                header = dict(header, worker=1, **({} if credential is None else {"credential": credential}))
                arrays = [[8.0, 8.0], [[1.0, 2.0], [3.0, 4.0]]] if header["op"] == "push" else []
                import numpy as np
                ps_wire.send_message(sock, header, [np.array(a) for a in arrays])
                reply, _ = ps_wire.recv_message(sock)
                print(reply["op"], reply.get("message", ""))
    # the connection closes here, after naming worker 1 in every request
"""


def test_a_second_process_with_the_secret_but_no_credential_cannot_act_as_a_worker_or_get_it_lost():
    with running(2, s=2) as (ps, (host, port)), worker((host, port), 1) as real:
        real.join(0)
        before = state(ps)
        lines = in_other_process(FORGER, port).splitlines()
        assert len(lines) == 12
        assert all(line.startswith("error ") and "worker 1 refused: its credential is missing or wrong" in line
                   for line in lines), lines
        time.sleep(0.3)                               # the forger's connection has closed by now
        assert state(ps) == before                    # not lost, no report, no push, still active
        assert ps.snapshot()["metrics"] == [[], []]
        real.report(0, {"accuracy": 0.5})             # the real worker is still itself
        assert [r["epoch"] for r in ps.snapshot()["metrics"][1]] == [0]


SHORT = """
    import socket, sys
    import numpy as np
    from distributed import ps_wire
    port, secret = int(sys.argv[1]), sys.argv[2].encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        ps_wire.client_handshake(sock, secret)
        ps_wire.send_message(sock, {"op": "pull", "worker": 1})   # names worker 1, needs no credential
        print(ps_wire.recv_message(sock)[0]["op"])
"""


def test_a_short_connection_that_names_a_worker_and_closes_does_not_get_it_lost():
    with running(2, s=2) as (ps, (host, port)), worker((host, port), 0) as w0, worker((host, port), 1) as w1:
        w0.join(0)
        w1.join(0)
        before = state(ps)
        assert in_other_process(SHORT, port).split() == ["weights"]
        time.sleep(0.3)
        assert state(ps) == before and ps.snapshot()["lost_workers"] == []
        w1.close()                                    # the real worker's own connection drops: lost
        deadline = time.monotonic() + 10
        while ps.snapshot()["lost_workers"] != [1]:
            assert time.monotonic() < deadline, "the real worker's dropped connection was not noticed"
            time.sleep(0.02)


def _raw_frame(sock, header: bytes):
    """A frame with a hand-written header (JSON the client library would never write)."""
    ps_wire._send_frame(sock, header)
    return ps_wire.recv_message(sock)[0]


def test_malformed_messages_from_a_workers_own_connection_are_answered_and_it_stays():
    with running(2, s=1) as (ps, (host, port)), worker((host, port), 0) as w0:
        w0.join(0)
        cred = worker_credential(WORKER_KEY, 0).encode()
        sock = w0._sock                               # the worker's own authenticated connection
        before = state(ps)
        cases = [
            (b'{"op":"report","worker":0,"credential":"%s","epoch":0,"metrics":{"loss":1e400},"arrays":[]}' % cred,
             "'loss' of worker 0 is inf, not a finite number"),
            (b'{"op":"report","worker":0,"credential":"%s","epoch":0,"metrics":{"loss":1%s},"arrays":[]}'
             % (cred, b"0" * 400), "'loss' of worker 0 is too large, not a finite number"),
            (b'{"op":"report","worker":0,"credential":"%s","epoch":%s,"metrics":{},"arrays":[]}'
             % (cred, b"9" * 30), "'epoch' must be an integer in 0..1000000"),
            (b'{"op":"join","worker":0,"credential":"%s","epoch":-1,"arrays":[]}' % cred,
             "'epoch' must be an integer in 0..1000000"),
            (b'{"op":"report","arrays":[],"x":' + b"[" * 20000 + b"]" * 20000 + b"}", "nested too deeply"),
            (b'{"op":"report","arrays":[],"x":1' + b"0" * 5000 + b"}", "not UTF-8 JSON"),
            (b'{"op":"push","worker":0,"credential":"%s","read_version":0,'
             b'"arrays":[{"dtype":"object","shape":[1]}]}' % cred, "dtype"),
        ]
        for header, why in cases:
            reply = _raw_frame(sock, header)
            assert reply["op"] == "error" and why in reply["message"], (why, reply)
        assert state(ps) == before and ps.snapshot()["metrics"] == [[], []]
        assert w0.push(delta(1.0), 0) == 1            # the same connection still works


def test_a_large_payload_is_refused_before_it_is_read():
    with running(1) as (ps, addr):
        with socket.create_connection(addr, timeout=10) as sock:
            ps_wire.client_handshake(sock, SECRET)
            size = ps.max_payload                     # the most the server reads
            header = b'{"op":"push","arrays":[{"dtype":"uint8","shape":[%d]}]}' % size
            # A forged header MAC: closed at once, the declared payload is never waited for nor allocated.
            sock.sendall(struct.pack(">IQQ", len(header), size, 0) + header + b"\0" * 32)
            assert closed_by_peer(sock)
        with socket.create_connection(addr, timeout=10) as sock:
            header = b'{"op":"push","arrays":[{"dtype":"uint8","shape":[1073741824]}]}'
            session = ps_wire.client_handshake(sock, SECRET, max_payload=1 << 31)
            # Authenticated, but larger than any push of this model: refused before the payload.
            prefix = struct.pack(">IQQ", len(header), 1 << 30, 0)
            sock.sendall(prefix + header + ps_wire._header_mac(session.key, b"client", prefix, header))
            assert closed_by_peer(sock)
        assert ps.max_payload < 1 << 21 and (ps.version, ps.pushes_received) == (0, 0)
