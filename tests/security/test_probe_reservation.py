"""Probes of the reservation server (the driver's registration, results and progress channel) as an
attacker would run them: idle raw sockets that exhaust its file descriptors, results over the old 64 KiB
header limit and over the new bound, and malformed records from a peer that knows the secret."""
import json
import os
import select
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from distributed import ps_wire, reservation, tfos
from distributed.reservation import ResultTooLarge, SecureClient, Server

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SECRET = "job-secret-of-this-run-0123456789"
HOST = "127.0.0.1"


def closed_by_peer(sock) -> bool:
    """The server closed this connection (a reset: it closed with our bytes unread); a timeout fails."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def node(executor_id: int, **extra) -> dict:
    return {"executor_id": executor_id, "host": HOST, "job_name": "worker", "task_index": executor_id,
            "port": 40000 + executor_id, "addr": (HOST, 50000 + executor_id), "authkey": b"\x01key", **extra}


SERVER = """
    import os, resource, sys, time
    from distributed.reservation import Server
    srv = Server(2, secret=sys.argv[1], host="127.0.0.1")
    port = srv.start()[1]
    if sys.argv[2] == "scarce":  # a handful of descriptors to spare: idle sockets run it out of them at once
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 6, hard))
    print(port, flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("descriptors", ["scarce", "plenty"])
def test_idle_sockets_neither_exhaust_the_server_nor_stop_registration(tmp_path, descriptors):
    log = (tmp_path / "server.log").open("w+")
    server = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SERVER), SECRET, descriptors], cwd=ROOT,
                              text=True,
                              stdout=subprocess.PIPE, stderr=log, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    idle = []
    try:
        addr = (HOST, int(server.stdout.readline()))
        for _ in range(300):                          # far more than the server has descriptors for
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(addr)
            idle.append(sock)
        deadline = time.monotonic() + 60              # until the kernel has connected every one of them
        while ([s for s in idle if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                           and not select.select([], [s], [], 0)[1]]) and time.monotonic() < deadline:
            time.sleep(0.1)
        client = SecureClient(addr, SECRET, timeout_s=20)   # while all of them stay open
        try:
            assert client.register(node(0)) == "OK"
            assert [n["executor_id"] for n in client.get_reservations()] == [0]
            # Accepted after every idle socket: at most MAX_PENDING of them are still held open.
            held = len(os.listdir(f"/proc/{server.pid}/fd"))
        finally:
            client.close()
        assert server.poll() is None and reservation.MAX_PENDING <= 64 and held < 100  # of 300 idle sockets
    finally:
        for sock in idle:
            sock.close()
        server.kill()
        server.wait(10)
    log.seek(0)
    if descriptors == "scarce":                       # the exhaustion really happened and was survived
        assert "Too many open files" in log.read()


@pytest.fixture
def server():
    srv = Server(3, secret=SECRET, host=HOST, describe=tfos.Roles(ps=1, workers=2), missing=tfos.missing_roles)
    addr = srv.start()
    yield srv, addr
    srv.close()


def test_a_result_over_64_kib_is_delivered_and_one_over_the_limit_is_refused_clearly(server):
    srv, addr = server
    series = {"t": [i * 0.5 for i in range(40_000)], "cpu": [0.25] * 40_000, "raw": b"\x00\xff" * 1000}
    reservation.send_result(addr, SECRET, "worker:0", series)          # about 500 KB of JSON
    assert len(reservation.encode_result("worker:0", series)) > 7 * ps_wire.MAX_HEADER_BYTES
    assert srv.results() == {"worker:0": series}
    with pytest.raises(ResultTooLarge, match=r"result of worker:1 is \d+ bytes of JSON, over the limit of "
                                             r"67108864 \(reservation.RESULT_MAX_BYTES\)"):
        reservation.send_result(addr, SECRET, "worker:1", {"t": "x" * reservation.RESULT_MAX_BYTES})
    with socket.create_connection(addr, timeout=10) as sock:          # a peer that skips the check
        session = ps_wire.client_handshake(sock, SECRET.encode(), max_payload=1 << 31)
        header = json.dumps({"op": "RESULT", "data": {"role": "worker:1"},
                             "arrays": [{"dtype": "uint8", "shape": [reservation.RESULT_MAX_BYTES + 1]}]}).encode()
        prefix = struct.pack(">IQQ", len(header), reservation.RESULT_MAX_BYTES + 1, 0)
        sock.sendall(prefix + header + ps_wire._header_mac(session.key, b"client", prefix, header))
        assert closed_by_peer(sock)                  # closed before a byte of the payload is read
    assert srv.results() == {"worker:0": series}


def _raw(sock, header: bytes, payload: bytes = b"") -> dict:
    ps_wire._send_frame(sock, header, [payload] if payload else [])
    return ps_wire.recv_message(sock)[0]


def test_malformed_and_unbounded_records_from_an_authenticated_peer_are_answered(server):
    srv, addr = server
    client = SecureClient(addr, SECRET, timeout_s=10)
    try:
        sock = client.sock
        u8 = lambda n: ',"arrays":[{"dtype":"uint8","shape":[%d]}]}' % n  # noqa: E731
        cases = [
            (b'{"op":"REG","data":{"executor_id":0,"host":"h","port":1,"job_name":"w","authkey":{"__bytes__":"zz"}},'
             b'"arrays":[]}', b"", "malformed"),
            (b'{"op":"REG","data":' + b"[" * 500 + b"]" * 500 + b',"arrays":[]}', b"", "deeper than 64"),
            (b'{"op":"QINFO","data":' + b"[" * 30000 + b"]" * 30000 + b',"arrays":[]}', b"", "nested too deeply"),
            (json.dumps({"op": "REG", "data": reservation.to_json(node(7)), "arrays": []}).encode(), b"",
             "executor_id 7 is not one of this run's 0..2"),
            (json.dumps({"op": "REG", "data": reservation.to_json(node(0, pad="x" * 20000)),
                         "arrays": []}).encode(), b"", "at most 16384 bytes"),
            (b'{"op":"RESULT","data":{"role":"worker:0"}' + u8(9).encode(), b"[" * 9, "not JSON"),
            (b'{"op":"RESULT","data":{"role":"worker:0"}' + u8(400).encode(), b"[" * 200 + b"]" * 200, "deeper"),
            (b'{"op":"QUERY","data":null' + u8(3).encode(), b"abc", "QUERY carries no payload"),
        ]
        for header, payload, why in cases:
            reply = _raw(sock, header, payload)
            assert reply["op"] == "ERR" and why in reply["data"], (why, reply)
        assert srv.results() == {} and srv._reservations == []
        for role in ("ps:0", "worker:0", "worker:1"):
            reservation.send_result(addr, SECRET, role, {"ok": role})
        with pytest.raises(RuntimeError, match="this run has 3 roles, all have reported"):
            reservation.send_result(addr, SECRET, "worker:99", {"ok": 1})
        reservation.send_result(addr, SECRET, "worker:1", {"ok": "again"})   # a retried role replaces its own
        assert len(srv.results()) == 3 and srv.results()["worker:1"] == {"ok": "again"}
        assert client.register(node(0)) == "OK" and client.register(node(0, port=1)) == "OK"
        assert [(n["executor_id"], n["port"]) for n in client.get_reservations()] == [(0, 1)]
    finally:
        client.close()
