"""Wire format between workers and the parameter server: JSON header + raw array bytes.

Never pickle: a message is a small UTF-8 JSON header (``op``, its fields, and an
``arrays`` list of ``{dtype, shape}``) followed by the C-contiguous little-endian
bytes of those arrays.  Only float32/float64/int32/int64 are accepted, so no
bytes from the network can ever describe a Python object.

Every connection starts with a challenge-response on the job's secret:

    server -> client   MAGIC, nonce_s (32 random bytes)
    client -> server   nonce_c, HMAC(secret, nonce_s || nonce_c)
    server -> client   ACCEPT + HMAC(secret, "server" || nonce_s || nonce_c)   or REJECT, close

Afterwards every frame is ``prefix(header_len u32, payload_len u64, seq u64) |
header | header_mac | payload | tag``, under a per-connection session key derived from both
nonces.  header_mac is HMAC-SHA256 over the sender's role, the prefix (hence the sequence
number and the declared payload size) and the header.  tag is GMAC (AES-256-GCM over no plaintext)
of the header and the payload, keyed per frame by HMAC-SHA256(session key, role, prefix): a key used
for one frame only, so the fixed nonce is never reused under a key. With AES-NI and carry-less multiply
it runs at about ten times HMAC-SHA256's speed on the large payloads (bench/README.md).
A frame therefore cannot be altered, reflected back, replayed within a connection or replayed
on another one, and the receiver checks header_mac, the header and the declared sizes before
it allocates or reads the payload: a peer without the key cannot make it read a large one.
A frame whose MAC holds but whose header is malformed raises BadMessage once the whole frame
is consumed, so the connection stays usable and the caller can answer with an error.
Timeouts are whatever the caller set on the socket.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MAGIC = b"RSPS\x01"
NONCE_BYTES = 32
MAC_BYTES = 32
TAG_BYTES = 16   # GMAC
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_PAYLOAD = 1 << 30
ALLOWED_DTYPES = {name: np.dtype(name).newbyteorder("<")
                  for name in ("float32", "float64", "int32", "int64", "uint8")}  # uint8: raw bytes
_PREFIX = struct.Struct(">IQQ")
_GMAC_NONCE = bytes(12)  # every frame has a key of its own (_payload_mac)
_ACCEPT, _REJECT = b"\x01", b"\x00"
_MAX_NDIM = 32
_COALESCE_BYTES = 1 << 20
_IOV_MAX = 512  # buffers per sendmsg (Linux allows 1024)


class WireError(Exception):
    """Base class of the errors this module raises about the peer's bytes."""


class ProtocolError(WireError):
    """The peer sent bytes that are not a valid message (size, JSON, dtype, shape)."""


class BadMessage(ProtocolError):
    """An authenticated frame whose header is malformed; the frame was consumed whole, so the
    connection is still in step and can be answered."""


class AuthError(WireError):
    """The peer does not know the job's secret, or a frame failed its MAC."""


@dataclass
class _Session:
    key: bytes
    role: bytes            # b"server" or b"client": who sends with this side's socket
    peer_role: bytes
    max_payload: int
    send_seq: int = 0
    recv_seq: int = 0
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    recv_lock: threading.Lock = field(default_factory=threading.Lock)


# A socket is usable for messages only after a handshake registered its session here.
_SESSIONS: "weakref.WeakKeyDictionary[socket.socket, _Session]" = weakref.WeakKeyDictionary()


def _recv_into(sock: socket.socket, view: memoryview, what: str) -> None:
    n, got = len(view), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError(f"connection closed by peer while reading {what} "
                                  f"({got} of {n} bytes)")
        got += k


def _recv_exact(sock: socket.socket, n: int, what: str) -> bytearray:
    buf = bytearray(n)
    _recv_into(sock, memoryview(buf), what)
    return buf


def _send_all(sock: socket.socket, parts: list) -> None:
    """Send byte-like parts in order with as few system calls as possible (no joined copy)."""
    views = [memoryview(p).cast("B") for p in parts]
    views = [v for v in views if v.nbytes]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        while views and sent >= views[0].nbytes:
            sent -= views[0].nbytes
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]


def _check_secret(secret) -> bytes:
    if not isinstance(secret, (bytes, bytearray)) or len(secret) == 0:
        raise ValueError("the job secret must be non-empty bytes")
    return bytes(secret)


def _proofs(secret: bytes, nonce_s: bytes, nonce_c: bytes) -> tuple[bytes, bytes, bytes]:
    client = hmac.new(secret, nonce_s + nonce_c, hashlib.sha256).digest()
    server = hmac.new(secret, b"server" + nonce_s + nonce_c, hashlib.sha256).digest()
    session = hmac.new(secret, b"session" + nonce_s + nonce_c, hashlib.sha256).digest()
    return client, server, session


def server_handshake(sock: socket.socket, secret: bytes,
                     max_payload: int = DEFAULT_MAX_PAYLOAD) -> _Session:
    """Authenticate the connecting client; on failure send REJECT and raise AuthError."""
    secret = _check_secret(secret)
    nonce_s = os.urandom(NONCE_BYTES)
    sock.sendall(MAGIC + nonce_s)
    answer = _recv_exact(sock, NONCE_BYTES + MAC_BYTES, "handshake answer")
    nonce_c, client_mac = bytes(answer[:NONCE_BYTES]), bytes(answer[NONCE_BYTES:])
    want_client, server_proof, key = _proofs(secret, nonce_s, nonce_c)
    if not hmac.compare_digest(client_mac, want_client):
        try:
            sock.sendall(_REJECT)
        except OSError:
            pass
        raise AuthError("client failed the challenge: it does not know the job secret")
    sock.sendall(_ACCEPT + server_proof)
    session = _Session(key, b"server", b"client", max_payload)
    _SESSIONS[sock] = session
    return session


def client_handshake(sock: socket.socket, secret: bytes,
                     max_payload: int = DEFAULT_MAX_PAYLOAD) -> _Session:
    """Answer the server's challenge and check the server's own proof."""
    secret = _check_secret(secret)
    hello = _recv_exact(sock, len(MAGIC) + NONCE_BYTES, "handshake challenge")
    if bytes(hello[:len(MAGIC)]) != MAGIC:
        raise ProtocolError("peer is not a parameter server speaking this protocol (bad magic)")
    nonce_s, nonce_c = bytes(hello[len(MAGIC):]), os.urandom(NONCE_BYTES)
    client_mac, want_server, key = _proofs(secret, nonce_s, nonce_c)
    sock.sendall(nonce_c + client_mac)
    verdict = _recv_exact(sock, 1, "handshake verdict")
    if bytes(verdict) != _ACCEPT:
        raise AuthError("server rejected this client: wrong job secret")
    server_mac = bytes(_recv_exact(sock, MAC_BYTES, "server proof"))
    if not hmac.compare_digest(server_mac, want_server):
        raise AuthError("server failed to prove it knows the job secret")
    session = _Session(key, b"client", b"server", max_payload)
    _SESSIONS[sock] = session
    return session


def _session_of(sock: socket.socket) -> _Session:
    session = _SESSIONS.get(sock)
    if session is None:
        raise ProtocolError("socket has not completed the handshake; refusing to send or parse frames")
    return session


def frame_bytes(header_len: int, payload_len: int) -> int:
    """Bytes one frame takes on the wire: prefix, header, header MAC, payload, tag."""
    return _PREFIX.size + header_len + MAC_BYTES + payload_len + TAG_BYTES


def _header_mac(key: bytes, role: bytes, prefix: bytes, header: bytes) -> bytes:
    return hmac.new(key, role + b"|head|" + prefix + header, hashlib.sha256).digest()


class _PayloadMac:
    """GMAC of one frame, fed piece by piece: AES-256-GCM over additional data only."""

    def __init__(self, key: bytes):
        self._gcm = Cipher(algorithms.AES(key), modes.GCM(_GMAC_NONCE)).encryptor()

    def update(self, data) -> None:
        self._gcm.authenticate_additional_data(data)

    def finalize(self) -> bytes:
        self._gcm.finalize()
        return self._gcm.tag


def _payload_mac(key: bytes, role: bytes, prefix: bytes, header: bytes) -> _PayloadMac:
    """The tag's MAC, started on the header. Its key is used once: the prefix holds the frame's sequence
    number and the role tells the two directions apart."""
    mac = _PayloadMac(hmac.new(key, role + b"|tag|" + prefix, hashlib.sha256).digest())
    mac.update(header)
    return mac


def _send_frame(sock: socket.socket, header_bytes: bytes, payload_parts=()) -> None:
    """Send already-encoded header bytes and payload chunks as one authenticated frame."""
    session = _session_of(sock)
    parts = [memoryview(p).cast("B") for p in payload_parts]
    payload_len = sum(p.nbytes for p in parts)
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(header_bytes)} bytes exceeds {MAX_HEADER_BYTES}")
    if payload_len > session.max_payload:
        raise ProtocolError(f"payload of {payload_len} bytes exceeds {session.max_payload}")
    with session.send_lock:
        prefix = _PREFIX.pack(len(header_bytes), payload_len, session.send_seq)
        head = prefix + header_bytes + _header_mac(session.key, session.role, prefix, header_bytes)
        # The whole payload is MACed before its first byte is sent, so the peer reads it at the speed of
        # the copy: a receiver serving many senders one at a time never waits on this sender's MAC.
        mac = _payload_mac(session.key, session.role, prefix, header_bytes)
        for part in parts:
            for a in range(0, part.nbytes, _COALESCE_BYTES):  # the MAC holds the GIL: give it back between pieces
                mac.update(part[a:a + _COALESCE_BYTES])
        _send_all(sock, [head, *parts, mac.finalize()])  # gather writes straight from the arrays
        session.send_seq += 1


def send_message(sock: socket.socket, header: dict, arrays=()) -> None:
    """Send ``header`` (a JSON-able dict with 'op') and numpy ``arrays`` as one frame."""
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise ValueError("header must be a dict with a string 'op'")
    if "arrays" in header:
        raise ValueError("'arrays' is reserved in the header; pass the arrays separately")
    specs, parts = [], []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        name = a.dtype.name
        if name not in ALLOWED_DTYPES:
            raise ProtocolError(f"array {i}: dtype {a.dtype} not allowed; "
                                f"allowed: {', '.join(ALLOWED_DTYPES)}")
        a = np.asarray(a, dtype=ALLOWED_DTYPES[name], order="C")  # keeps 0-d arrays 0-d
        specs.append({"dtype": name, "shape": list(a.shape)})
        parts.append(a.reshape(-1).view(np.uint8))
    body = dict(header, arrays=specs)
    _send_frame(sock, json.dumps(body, separators=(",", ":")).encode("utf-8"), parts)


def _parse_header(raw: bytes) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:  # ValueError: also an int of thousands of digits
        raise ProtocolError(f"header is not UTF-8 JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("header is JSON nested too deeply") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise ProtocolError("header must be a JSON object with a string 'op'")
    if not isinstance(header.get("arrays"), list):
        raise ProtocolError("header must list its arrays under 'arrays'")
    return header


def _array_specs(specs: list, payload_len: int) -> list[tuple[np.dtype, tuple, int]]:
    out, total = [], 0
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"}:
            raise ProtocolError(f"array {i}: spec must be {{dtype, shape}}, got {spec!r:.100}")
        dtype, shape = spec["dtype"], spec["shape"]
        if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"array {i}: dtype {dtype!r:.40} not allowed; "
                                f"allowed: {', '.join(ALLOWED_DTYPES)}")
        if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise ProtocolError(f"array {i}: shape must be a list of at most {_MAX_NDIM} "
                                f"non-negative integers, got {shape!r:.100}")
        count = 1
        for d in shape:
            count *= d          # Python ints: no overflow on hostile shapes
        nbytes = count * ALLOWED_DTYPES[dtype].itemsize
        total += nbytes
        if total > payload_len:
            break
        out.append((ALLOWED_DTYPES[dtype], tuple(shape), nbytes))
    if total != payload_len:
        raise ProtocolError(f"arrays described in the header need {total} bytes, "
                            f"the frame carries {payload_len}")
    return out


def _drain(sock: socket.socket, n: int, mac) -> None:
    """Read and MAC n payload bytes in small pieces: a refused frame costs no large allocation."""
    buf = bytearray(min(n, _COALESCE_BYTES) or 1)
    view, left = memoryview(buf), n
    while left:
        k = sock.recv_into(view[:min(left, len(buf))])
        if k == 0:
            raise ConnectionError(f"connection closed by peer while reading frame payload ({n - left} of {n} bytes)")
        mac.update(view[:k])
        left -= k


def recv_message(sock: socket.socket, max_payload: int | None = None, into=None,
                 on_piece=None) -> tuple[dict, list]:
    """Receive one frame; return (header without 'arrays', list of numpy arrays).

    ``into(header, specs, payload_len)`` may give a writable buffer of at least payload_len bytes
    for the payload (None: a new one); it is called once the header passed its MAC and checks, so
    the arrays returned are views of that buffer. specs: [(dtype, shape, nbytes)] in order.
    ``on_piece(i, piece)`` sees each piece of array i (a numpy array of its dtype) as it lands, while it
    is in cache; it runs before the frame's tag is checked, so it may only look and record.
    AuthError/ProtocolError: the connection is out of step or unauthenticated, close it.
    BadMessage: an authenticated frame with a malformed header, consumed whole: answer it."""
    session = _session_of(sock)
    limit = session.max_payload if max_payload is None else max_payload
    with session.recv_lock:
        prefix = bytes(_recv_exact(sock, _PREFIX.size, "frame prefix"))
        header_len, payload_len, seq = _PREFIX.unpack(prefix)
        # Sizes are checked before any allocation, so a hostile prefix costs nothing.
        if header_len > MAX_HEADER_BYTES:
            raise ProtocolError(f"header of {header_len} bytes exceeds {MAX_HEADER_BYTES}")
        if payload_len > limit:
            raise ProtocolError(f"payload of {payload_len} bytes exceeds the limit of {limit}")
        header_raw = bytes(_recv_exact(sock, header_len, "frame header"))
        head_mac = bytes(_recv_exact(sock, MAC_BYTES, "frame header MAC"))
        # The header and its declared payload size are authenticated before the payload is read.
        if not hmac.compare_digest(head_mac, _header_mac(session.key, session.peer_role, prefix, header_raw)):
            raise AuthError("frame failed its MAC: altered, or replayed from another connection")
        if seq != session.recv_seq:
            raise AuthError(f"frame sequence {seq}, expected {session.recv_seq}: replayed frame")
        try:
            header = _parse_header(header_raw)
            specs = _array_specs(header.pop("arrays"), payload_len)
            problem = None
        except ProtocolError as e:
            problem = e
        mac = _payload_mac(session.key, session.peer_role, prefix, header_raw)
        if problem is None:
            given = into(header, specs, payload_len) if into is not None and payload_len else None
            payload = (bytearray(payload_len) if given is None
                       else memoryview(given).cast("B")[:payload_len])
            view, start = memoryview(payload), 0
            for i, (dtype, _, nbytes) in enumerate(specs):  # MACed piece by piece, while in cache
                for a in range(start, start + nbytes, _COALESCE_BYTES):
                    piece = view[a:min(a + _COALESCE_BYTES, start + nbytes)]
                    _recv_into(sock, piece, "frame payload")
                    mac.update(piece)
                    if on_piece is not None:
                        on_piece(i, np.frombuffer(piece, dtype))
                start += nbytes
        else:
            _drain(sock, payload_len, mac)
        if not hmac.compare_digest(bytes(_recv_exact(sock, TAG_BYTES, "frame tag")), mac.finalize()):
            raise AuthError("frame failed its MAC: altered, or replayed from another connection")
        session.recv_seq += 1
    if problem is not None:
        raise BadMessage(str(problem)) from None
    arrays, offset = [], 0
    for dtype, shape, nbytes in specs:
        flat = np.frombuffer(payload, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        arrays.append(flat.reshape(shape).astype(dtype.newbyteorder("="), copy=False))
        offset += nbytes
    return header, arrays
