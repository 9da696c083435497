"""Wire format: authenticated JSON+raw-bytes frames, never pickle."""
import json
import pickle
import socket
import struct
import threading

import numpy as np
import pytest

from distributed import ps_wire
from distributed.ps_wire import (AuthError, ProtocolError, client_handshake, recv_message,
                                 send_message, server_handshake)

pytestmark = pytest.mark.unit

SECRET = b"s3cret-for-this-run-0123456789ab"


def _pair(server_secret=SECRET, client_secret=SECRET, max_payload=ps_wire.DEFAULT_MAX_PAYLOAD):
    """Handshake both ends of a socketpair; return (server_sock, client_sock, errors by side)."""
    srv, cli = socket.socketpair()
    for s in (srv, cli):
        s.settimeout(5)
    errors = {}

    def run_server():
        try:
            server_handshake(srv, server_secret, max_payload)
        except Exception as e:  # recorded for the assertions below
            errors["server"] = e

    t = threading.Thread(target=run_server)
    t.start()
    try:
        client_handshake(cli, client_secret, max_payload)
    except Exception as e:
        errors["client"] = e
    t.join(5)
    return srv, cli, errors


@pytest.fixture
def pair():
    srv, cli, errors = _pair()
    assert errors == {}
    yield srv, cli
    srv.close()
    cli.close()


def test_round_trip_of_several_dtypes_and_shapes(pair):
    srv, cli = pair
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(7),
              np.arange(-5, 5, dtype=np.int32).reshape(2, 5), np.array(2**40, dtype=np.int64),
              np.zeros((0, 3), dtype=np.float32), np.asfortranarray(rng.standard_normal((2, 3)))]
    send_message(cli, {"op": "push", "worker": 3, "read_version": 9}, arrays)
    header, got = recv_message(srv)
    assert header == {"op": "push", "worker": 3, "read_version": 9}
    assert len(got) == len(arrays)
    for a, b in zip(arrays, got):
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)
    # And back the other way, twice, so both sequence counters advance.
    for version in (1, 2):
        send_message(srv, {"op": "weights", "version": version}, arrays[:1])
        header, got = recv_message(cli)
        assert header["version"] == version
        np.testing.assert_array_equal(got[0], arrays[0])


def test_wrong_secret_fails_on_both_sides():
    srv, cli, errors = _pair(client_secret=b"not-the-secret-of-this-job-00000")
    try:
        assert isinstance(errors.get("server"), AuthError)
        assert isinstance(errors.get("client"), AuthError)
        with pytest.raises(ProtocolError, match="handshake"):   # no session, no frames
            send_message(cli, {"op": "pull"})
    finally:
        srv.close()
        cli.close()


def test_client_rejects_a_server_that_does_not_speak_the_protocol():
    srv, cli = socket.socketpair()
    try:
        cli.settimeout(5)
        srv.sendall(b"HTTP/1.1 200 OK\r\n" + b"x" * 40)
        with pytest.raises(ProtocolError, match="magic"):
            client_handshake(cli, SECRET)
    finally:
        srv.close()
        cli.close()


def _capture_frame(sender, raw_reader, header, arrays=()):
    send_message(sender, header, arrays)
    raw_reader.settimeout(0.5)
    data = b""
    try:
        while True:
            chunk = raw_reader.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    raw_reader.settimeout(5)
    return data


def test_tampered_frame_is_rejected(pair):
    srv, cli = pair
    frame = bytearray(_capture_frame(cli, srv, {"op": "push", "worker": 0, "read_version": 0},
                                     [np.ones(4, dtype=np.float32)]))
    frame[-ps_wire.TAG_BYTES - 1] ^= 0x01       # flip one bit of the payload's last byte
    cli.sendall(bytes(frame))                   # raw bytes, bypassing the session
    with pytest.raises(AuthError, match="MAC"):
        recv_message(srv)


@pytest.mark.parametrize("where", ["tag", "header_mac"])
def test_a_frame_with_a_wrong_tag_or_header_mac_is_rejected(pair, where):
    srv, cli = pair
    frame = bytearray(_capture_frame(cli, srv, {"op": "push"}, [np.arange(10_000, dtype=np.float32)]))
    at = -1 if where == "tag" else -(ps_wire.TAG_BYTES + 40_000 + 1)
    frame[at] ^= 0x80
    cli.sendall(bytes(frame))
    with pytest.raises(AuthError, match="MAC"):
        recv_message(srv)


def test_two_frames_with_the_same_bytes_carry_different_tags(pair):
    """Each frame's tag has a key of its own: GMAC under a key and nonce used twice would let a forger
    recover its hash key."""
    srv, cli = pair
    frames = [_capture_frame(cli, srv, {"op": "push"}, [np.ones(8, np.float32)]) for _ in range(2)]
    assert frames[0][-ps_wire.TAG_BYTES:] != frames[1][-ps_wire.TAG_BYTES:]


def test_replayed_frame_is_rejected_within_and_across_connections(pair):
    srv, cli = pair
    frame = _capture_frame(cli, srv, {"op": "leave", "worker": 1})
    cli.sendall(frame)
    assert recv_message(srv)[0] == {"op": "leave", "worker": 1}   # first delivery is fine
    cli.sendall(frame)
    with pytest.raises(AuthError, match="sequence"):
        recv_message(srv)
    srv2, cli2, errors = _pair()
    try:
        assert errors == {}
        cli2.sendall(frame)                     # same bytes, other connection's key
        with pytest.raises(AuthError, match="MAC"):
            recv_message(srv2)
    finally:
        srv2.close()
        cli2.close()


def test_oversize_header_is_rejected_before_reading_it(pair):
    srv, cli = pair
    cli.sendall(struct.pack(">IQQ", ps_wire.MAX_HEADER_BYTES + 1, 0, 0))
    with pytest.raises(ProtocolError, match="header"):
        recv_message(srv)
    with pytest.raises(ProtocolError, match="header"):
        send_message(cli, {"op": "report", "blob": "x" * ps_wire.MAX_HEADER_BYTES})


def test_payload_over_the_configured_limit_is_rejected():
    srv, cli, errors = _pair(max_payload=1024)
    try:
        assert errors == {}
        with pytest.raises(ProtocolError, match="payload"):
            send_message(cli, {"op": "push"}, [np.zeros(1000, dtype=np.float64)])
        cli.sendall(struct.pack(">IQQ", 10, 1025, 0))
        with pytest.raises(ProtocolError, match="payload"):
            recv_message(srv)
    finally:
        srv.close()
        cli.close()


def _send_raw_header(sock, header: dict, payload: bytes):
    ps_wire._send_frame(sock, json.dumps(header).encode(), [payload])


@pytest.mark.parametrize("dtype", ["object", "|O", "<U4", "V8", "float16", "complex128"])
def test_disallowed_dtype_is_refused_and_nothing_is_unpickled(pair, monkeypatch, dtype):
    srv, cli = pair
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(a))
    payload = pickle.dumps({"evil": object})
    _send_raw_header(cli, {"op": "push", "arrays": [{"dtype": dtype, "shape": [1]}]}, payload)
    with pytest.raises(ProtocolError, match="dtype"):
        recv_message(srv)
    assert calls == []
    with pytest.raises(ProtocolError, match="dtype"):
        send_message(cli, {"op": "push"}, [np.array([object()], dtype=object)])


@pytest.mark.parametrize("header, payload, match", [
    ({"op": "push", "arrays": [{"dtype": "float32", "shape": [3]}]}, b"\0" * 8, "bytes"),
    ({"op": "push", "arrays": [{"dtype": "float32", "shape": [-1]}]}, b"", "shape"),
    ({"op": "push", "arrays": [{"dtype": "int64", "shape": [2**62, 2**62]}]}, b"\0" * 8, "bytes"),
    ({"op": 7, "arrays": []}, b"", "op"),
    ({"op": "push"}, b"", "arrays"),
])
def test_inconsistent_headers_are_protocol_errors(pair, header, payload, match):
    srv, cli = pair
    _send_raw_header(cli, header, payload)
    with pytest.raises(ProtocolError, match=match):
        recv_message(srv)


def test_header_that_is_not_json_is_a_protocol_error(pair):
    srv, cli = pair
    ps_wire._send_frame(cli, b"\x80\x04not json", [])
    with pytest.raises(ProtocolError, match="JSON"):
        recv_message(srv)


def test_on_piece_sees_every_element_of_every_array_once_as_it_lands(pair):
    """The server scans each piece for NaN/inf while it is in cache: a piece missed or cut mid-element
    would let a poisoned update through."""
    srv, cli = pair
    big = np.arange(3 * (1 << 18) + 5, dtype=np.float32)      # three full pieces and a tail
    arrays = [np.arange(7, dtype=np.float64), big, np.zeros(0, np.float32), np.arange(6, dtype=np.int32)]
    sender = threading.Thread(target=send_message, args=(cli, {"op": "push"}, arrays))
    sender.start()
    seen = [[] for _ in arrays]
    _, got = recv_message(srv, on_piece=lambda i, piece: seen[i].append(piece.copy()))
    sender.join(5)
    assert [len(pieces) for pieces in seen] == [1, 4, 0, 1]
    for want, pieces in zip(arrays, seen):
        if pieces:
            joined = np.concatenate(pieces)
            assert joined.dtype == want.dtype
            np.testing.assert_array_equal(joined, want.reshape(-1))
    np.testing.assert_array_equal(got[1], big)
