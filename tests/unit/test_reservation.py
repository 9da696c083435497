"""Reservation server: JSON frames behind the job's secret, never pickle; timeouts name missing roles."""
import json
import pickle
import socket
import struct
import time

import pytest

from distributed import ps_wire, reservation, tfos
from distributed.reservation import ReservationTimeout, SecureClient, Server, from_json, to_json
from distributed.minicluster import free_ports

pytestmark = pytest.mark.unit

SECRET = "9f2c-job-secret-for-this-run"
HOST = "127.0.0.1"


def _node(executor_id: int, job: str = "worker", task: int = 0) -> dict:
    """The shape of the metadata TFSparkNode registers."""
    return {"executor_id": executor_id, "host": HOST, "job_name": job, "task_index": task,
            "port": 40000 + executor_id, "tb_pid": 0, "tb_port": 0,
            "addr": (HOST, 50000 + executor_id), "authkey": bytes([executor_id]) + b"\x00\xffkey"}


@pytest.fixture
def server():
    srv = Server(3, secret=SECRET, host=HOST, describe=tfos.Roles(ps=1, workers=2),
                 missing=tfos.missing_roles)
    addr = srv.start()
    yield srv, addr
    srv.close()


def _client(addr, secret=SECRET) -> SecureClient:
    return SecureClient(addr, secret, timeout_s=5)


def test_json_round_trip_of_node_meta():
    meta = {**_node(2), "nested": {"pairs": [(1, b"\x01"), ("a", (2, 3))], "none": None, "f": 1.5}}
    encoded = to_json(meta)
    wire = json.loads(json.dumps(encoded))  # really JSON-able
    assert from_json(wire) == meta
    back = from_json(wire)
    assert type(back["addr"]) is tuple and type(back["authkey"]) is bytes
    assert type(back["nested"]["pairs"][1][1]) is tuple


def test_register_query_and_await(server):
    srv, addr = server
    clients = [_client(addr) for _ in range(3)]
    try:
        for i, c in enumerate(clients[:2]):
            assert c.register(_node(i, "ps" if i == 0 else "worker", 0)) == "OK"
        assert reservation._request(clients[0].sock, "QUERY") is False
        assert len(clients[1].get_reservations()) == 2
        clients[2].register(_node(2, "worker", 1))
        assert reservation._request(clients[0].sock, "QUERY") is True
        got = clients[2].await_reservations()
        assert sorted(n["executor_id"] for n in got) == [0, 1, 2]
        assert {n["executor_id"]: n["addr"] for n in got} == {i: (HOST, 50000 + i) for i in range(3)}
        assert all(type(n["authkey"]) is bytes for n in got)
        assert srv.await_reservations(None, {}, timeout=5) == got
        assert clients[0].request_stop() == "OK"
    finally:
        for c in clients:
            c.close()


def test_results_and_wait_for(server):
    srv, addr = server
    assert srv.results() == {} and srv.wait_for({"worker:0"}, timeout_s=0.2) is False
    reservation.send_result(addr, SECRET, "worker:0", {"count": 5, "sum": 10})
    reservation.send_result(addr, SECRET, "ps:0", {"error": "Traceback ..."})
    assert srv.wait_for({"worker:0", "ps:0"}, timeout_s=5) is True
    assert srv.results() == {"worker:0": {"count": 5, "sum": 10}, "ps:0": {"error": "Traceback ..."}}
    started = time.monotonic()
    assert srv.wait_for({"worker:1"}, timeout_s=0.5) is False
    assert time.monotonic() - started >= 0.5  # waited its time, not returned at once


def test_wrong_secret_is_rejected_and_good_clients_still_served(server):
    srv, addr = server
    with pytest.raises((ps_wire.AuthError, ConnectionError)):
        _client(addr, secret="not-the-secret")
    with pytest.raises((ps_wire.AuthError, ConnectionError)):
        reservation.send_result(addr, "not-the-secret", "worker:0", {"forged": True}, timeout_s=5)
    good = _client(addr)
    try:
        assert good.register(_node(0, "ps")) == "OK"
        assert [n["executor_id"] for n in good.get_reservations()] == [0]
    finally:
        good.close()
    assert srv.results() == {}


def test_timeout_names_the_missing_roles(server):
    srv, addr = server
    clients = [_client(addr) for _ in range(2)]
    try:
        clients[0].register(_node(0, "ps", 0))
        clients[1].register(_node(1, "worker", 0))
        started = time.monotonic()
        with pytest.raises(ReservationTimeout) as err:
            srv.await_reservations(None, {}, timeout=2)
        assert time.monotonic() - started >= 2
    finally:
        for c in clients:
            c.close()
    msg = str(err.value)
    assert "Missing: worker:1 (executor 2)" in msg
    assert "ps:0 (127.0.0.1:40000)" in msg and "worker:0 (127.0.0.1:40001)" in msg
    assert "within 2s" in msg


def test_timeout_without_describe_counts_missing_nodes():
    srv = Server(3, secret=SECRET, host=HOST)
    srv.start()
    try:
        with pytest.raises(ReservationTimeout, match="Registered: none. Missing: 3 node"):
            srv.await_reservations(None, {}, timeout=0.5)
    finally:
        srv.close()


def test_error_status_fails_at_once(server):
    srv, _ = server
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="executor 1 lost") as err:
        srv.await_reservations(None, {"error": "executor 1 lost"}, timeout=60)
    assert not isinstance(err.value, ReservationTimeout)
    assert time.monotonic() - started < 30  # at once: not after the 60 s reservation timeout


class _Exploit:
    """Unpickling this creates `path`: proof that someone unpickled network bytes."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_bytes_are_never_unpickled(server, tmp_path):
    srv, addr = server
    marker = tmp_path / "pwned"
    # What TFoS's own client sends: a 4-byte length, then a pickle (here a hostile one).
    payload = pickle.dumps({"type": "REG", "data": _Exploit(marker)})
    payload = struct.pack(">I", len(payload)) + payload
    assert len(payload) >= ps_wire.NONCE_BYTES + ps_wire.MAC_BYTES  # reaches the server's check at once
    with socket.create_connection(addr, timeout=5) as raw:
        hello = raw.recv(64)
        assert hello.startswith(ps_wire.MAGIC)
        reply = b""
        try:
            raw.sendall(payload + b"\x00" * 64)
            while chunk := raw.recv(64):
                reply += chunk
        except OSError:
            pass  # the server closed on unread bytes: a reset is a rejection too
    assert reply in (b"", b"\x00")  # REJECT, or just closed
    assert not marker.exists()
    good = _client(addr)
    try:
        assert good.register(_node(0, "ps")) == "OK"
        assert len(good.get_reservations()) == 1
    finally:
        good.close()
    assert not marker.exists()
    assert srv.results() == {}


def _state(srv) -> tuple:
    return list(srv._reservations), srv.results(), srv.progress()


RESULT_NEEDS = "RESULT needs {'role': a name of 1-40 characters} and the result as its payload"


@pytest.mark.parametrize("op, data, why", [
    ("RESULT", None, RESULT_NEEDS),
    ("RESULT", {"role": 7}, RESULT_NEEDS),
    ("RESULT", {"role": "worker:0", "result": 1}, RESULT_NEEDS),          # the result is the payload now
    ("RESULT", {"role": "x" * 41}, RESULT_NEEDS),
    ("RESULT", {"role": "worker:0"}, "RESULT from worker:0: the result must be one byte string (JSON) as the "
                                     "payload"),
    ("REG", None, "REG needs a node record with executor_id, host, port and job_name"),
    ("REG", {"executor_id": 0, "host": HOST, "port": 1}, "REG needs a node record with executor_id, host, "
                                                          "port and job_name"),
    ("REG", [1, 2], "REG needs a node record with executor_id, host, port and job_name"),
    ("DROP", {}, "unknown op 'DROP'"),
    ("", None, "unknown op ''"),
])
def test_a_malformed_request_gets_its_error_and_changes_nothing(server, op, data, why):
    """An authenticated peer's bad message is answered with ERR naming what is wrong; nothing is
    stored, and the same connection (and the server) goes on serving."""
    srv, addr = server
    client = _client(addr)
    try:
        assert client.register(_node(0, "ps")) == "OK"
        before = _state(srv)
        ps_wire.send_message(client.sock, {"op": op, "data": to_json(data)})
        reply, _ = ps_wire.recv_message(client.sock)
        assert reply == {"op": "ERR", "data": why}
        assert _state(srv) == before
        assert [n["executor_id"] for n in client.get_reservations()] == [0]  # same connection still served
    finally:
        client.close()
    other = _client(addr)  # what a TFoS node sees: the client raises with the server's reason
    try:
        with pytest.raises(RuntimeError, match=r"^reservation server refused REG: REG needs a node record"):
            other.register({"executor_id": 1})
    finally:
        other.close()
    assert _state(srv) == before


def test_a_silent_connection_does_not_hold_up_other_clients(server):
    _, addr = server
    with socket.create_connection(addr, timeout=5) as silent:  # connects, never answers the challenge
        assert silent.recv(len(ps_wire.MAGIC)) == ps_wire.MAGIC  # the listener has taken it on
        good = SecureClient(addr, SECRET, timeout_s=3)
        try:
            assert good.register(_node(0, "ps")) == "OK"
        finally:
            good.close()


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(HOST, 5)
    assert len(set(ports)) == 5 and all(1024 <= p <= 65535 for p in ports)
    socks = [socket.create_server((HOST, p)) for p in ports]  # really free after the call
    for s in socks:
        s.close()


def test_reported_roles_lists_who_handed_in_a_result(server):
    srv, addr = server
    assert reservation.reported_roles(addr, SECRET) == []
    reservation.send_result(addr, SECRET, "chief:0", {"loss": 1.5})
    reservation.send_result(addr, SECRET, "worker:1", {"error": "boom"})
    assert reservation.reported_roles(addr, SECRET) == ["chief:0", "worker:1"]
    with pytest.raises((ps_wire.AuthError, ConnectionError)):
        reservation.reported_roles(addr, "a-wrong-secret-0000000000")


# ---------------------------------------------------------------------------------- PROGRESS
def test_progress_keeps_the_latest_record_per_role(server):
    srv, addr = server
    assert srv.progress() == {}
    reservation.send_progress(addr, SECRET, "worker:0", {"epoch": 1, "epochs": 6, "accuracy": 0.25, "tau": None})
    reservation.send_progress(addr, SECRET, "worker:1", {"epoch": 1, "what": "W01 domst", "final": False})
    reservation.send_progress(addr, SECRET, "worker:0", {"epoch": 2, "epochs": 6, "accuracy": 0.5})
    assert srv.progress() == {"worker:0": {"epoch": 2, "epochs": 6, "accuracy": 0.5},
                              "worker:1": {"epoch": 1, "what": "W01 domst", "final": False}}
    assert srv.results() == {}  # progress is not a result: shutdown still waits for the roles
    # every record in arrival order, for a display that polls now and then
    seq, received = srv.progress_since(0)
    assert seq == 3 and [(role, r["epoch"]) for role, r in received] == [("worker:0", 1), ("worker:1", 1),
                                                                          ("worker:0", 2)]
    assert srv.progress_since(2) == (3, [("worker:0", {"epoch": 2, "epochs": 6, "accuracy": 0.5})])
    assert srv.progress_since(3) == (3, [])


@pytest.mark.parametrize("role, record, why", [
    ("worker:0", {"nested": {"a": 1}}, "not a JSON scalar"),
    ("worker:0", {"list": [1, 2]}, "not a JSON scalar"),
    ("worker:0", {"blob": b"\x00\x01"}, "not a JSON scalar"),     # tagged bytes decode to bytes
    ("worker:0", {"what": "x" * 201}, "longer than 200"),
    ("worker:0", {f"f{i}": i for i in range(33)}, "at most 32 fields"),
    ("worker:0", {"k" * 41: 1}, "field names"),
    ("worker:0", [1, 2], "must be a dict"),
    ("", {"epoch": 1}, "role must be a name"),
    ("w" * 41, {"epoch": 1}, "role must be a name"),
])
def test_progress_refuses_records_that_are_not_small_flat_json(server, role, record, why):
    srv, addr = server
    with pytest.raises(RuntimeError, match=why):
        reservation.send_progress(addr, SECRET, role, record)
    assert srv.progress() == {}


def test_progress_total_size_and_role_count_are_bounded(server, monkeypatch):
    srv, addr = server
    big = {f"f{i}": "x" * 190 for i in range(30)}  # each field fits, the record does not
    with pytest.raises(RuntimeError, match="larger than 4096 bytes"):
        reservation.send_progress(addr, SECRET, "worker:0", big)
    monkeypatch.setitem(reservation.PROGRESS_LIMITS, "roles", 2)
    reservation.send_progress(addr, SECRET, "worker:0", {"epoch": 1})
    reservation.send_progress(addr, SECRET, "worker:1", {"epoch": 1})
    with pytest.raises(RuntimeError, match="too many roles"):
        reservation.send_progress(addr, SECRET, "worker:2", {"epoch": 1})
    reservation.send_progress(addr, SECRET, "worker:1", {"epoch": 2})  # a known role still updates
    assert srv.progress() == {"worker:0": {"epoch": 1}, "worker:1": {"epoch": 2}}


def test_progress_without_the_secret_is_refused(server):
    srv, addr = server
    with pytest.raises((ps_wire.AuthError, ConnectionError)):
        reservation.send_progress(addr, "not-the-secret", "worker:0", {"epoch": 99}, timeout_s=5)
    assert srv.progress() == {}


def test_progress_history_is_bounded(monkeypatch):
    monkeypatch.setitem(reservation.PROGRESS_LIMITS, "history", 2)
    srv = Server(1, secret=SECRET, host=HOST)
    addr = srv.start()
    try:
        for epoch in range(1, 5):
            reservation.send_progress(addr, SECRET, "worker:0", {"epoch": epoch})
        assert srv.progress_since(0) == (4, [("worker:0", {"epoch": 3}), ("worker:0", {"epoch": 4})])
    finally:
        srv.close()
