"""TensorFlowOnSpark's reservation server and client, behind the job's secret and without pickle.

TFoS 2.2.5 registers nodes over length-prefixed pickle on an unauthenticated port. These classes
keep its message set (REG, QUERY, QINFO, STOP) and add RESULT (a role's JSON result, carried as the
frame's payload, up to RESULT_MAX_BYTES), REPORTED (which
roles have a result, so a server role can wait for the role that drives it) and PROGRESS (a role's latest
small progress record, for the driver's display; only the newest one per role is kept), carried as
ps_wire frames: a challenge-response on the secret, then JSON headers under a per-connection MAC.
Node metadata holds bytes (the manager's authkey) and tuples (addresses); they are tagged in JSON.

The listener survives running out of file descriptors, and keeps at most MAX_PENDING connections
that have not yet passed the handshake (the oldest is dropped for a new one), so idle sockets opened
by anyone cannot stop registration, results or progress. What an authenticated peer may store is
bounded too: one node record per executor, one result per role.
"""
from __future__ import annotations

import collections
import errno
import functools
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Callable

import numpy as np

from distributed import ps_wire

log = logging.getLogger(__name__)


def to_json(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"__bytes__": obj.hex()}
    if isinstance(obj, tuple):
        return {"__tuple__": [to_json(v) for v in obj]}
    if isinstance(obj, list):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj


def from_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__bytes__"}:
            return bytes.fromhex(obj["__bytes__"])
        if set(obj) == {"__tuple__"}:
            return tuple(from_json(v) for v in obj["__tuple__"])
        return {k: from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    return obj


def _connect(addr, secret: str, timeout_s: float, tries: int = 3) -> socket.socket:
    """An authenticated connection. A connection the server dropped during the handshake is tried
    again: under a flood of idle connections the server drops the oldest unauthenticated ones."""
    for attempt in range(tries):
        sock = socket.create_connection(tuple(addr), timeout=timeout_s)
        try:
            ps_wire.client_handshake(sock, secret.encode())
            return sock
        except ConnectionError:
            sock.close()
            if attempt == tries - 1:
                raise
        except BaseException:
            sock.close()
            raise


def _request(sock: socket.socket, op: str, data: Any = None, payload: bytes = b"") -> Any:
    arrays = [np.frombuffer(payload, np.uint8)] if payload else []
    ps_wire.send_message(sock, {"op": op, "data": to_json(data)}, arrays)
    header, _ = ps_wire.recv_message(sock)
    if header.get("op") == "ERR":
        raise RuntimeError(f"reservation server refused {op}: {header.get('data')}")
    return from_json(header.get("data"))


class SecureClient:
    """Drop-in for tensorflowonspark.reservation.Client (same methods TFSparkNode calls)."""

    def __init__(self, server_addr, secret: str, timeout_s: float = 60):
        self.server_addr = tuple(server_addr)
        self.sock = _connect(self.server_addr, secret, timeout_s)

    def register(self, reservation: dict):
        return _request(self.sock, "REG", reservation)

    def get_reservations(self) -> list[dict]:
        return _request(self.sock, "QINFO")

    def await_reservations(self) -> list[dict]:
        while not _request(self.sock, "QUERY"):
            time.sleep(0.5)
        return self.get_reservations()

    def request_stop(self):
        return _request(self.sock, "STOP")

    def close(self) -> None:
        self.sock.close()


def install_client(tfos_reservation_module, secret: str) -> None:
    """Make TFoS's executor code use SecureClient with this job's secret."""
    tfos_reservation_module.Client = functools.partial(SecureClient, secret=secret)


def _send(server_addr, secret: str, op: str, data: dict, timeout_s: float, payload: bytes = b"") -> None:
    sock = _connect(server_addr, secret, timeout_s)
    try:
        _request(sock, op, data, payload)
    finally:
        sock.close()


# A result travels as the frame's payload (a role's series grow with the run: the land-cover sampler
# alone passes 64 KiB after a few minutes), bounded so that the driver's memory is: one per role.
RESULT_MAX_BYTES = 64 << 20
MAX_DEPTH = 64        # nesting of a stored record (REG node metadata, RESULT), far above any role's
MAX_PENDING = 32      # connections not yet through the handshake
MAX_NODE_BYTES = 16 << 10


class ResultTooLarge(ValueError):
    """A role's result is over RESULT_MAX_BYTES as JSON."""


def encode_result(role: str, result: Any, max_bytes: int = RESULT_MAX_BYTES) -> bytes:
    data = json.dumps(to_json(result), separators=(",", ":"), allow_nan=False).encode()
    if len(data) > max_bytes:
        raise ResultTooLarge(f"result of {role} is {len(data)} bytes of JSON, over the limit of {max_bytes} "
                             f"(reservation.RESULT_MAX_BYTES): write large outputs to storage and return "
                             f"their URI")
    return data


def send_result(server_addr, secret: str, role: str, result: Any, timeout_s: float = 30,
                max_bytes: int = RESULT_MAX_BYTES) -> None:
    """Hand a role's JSON-serialisable result to the driver (ResultTooLarge over max_bytes)."""
    _send(server_addr, secret, "RESULT", {"role": role}, timeout_s, encode_result(role, result, max_bytes))


def send_progress(server_addr, secret: str, role: str, record: dict, timeout_s: float = 2) -> None:
    """Hand the driver a role's latest progress record (flat JSON scalars, see PROGRESS_LIMITS)."""
    _send(server_addr, secret, "PROGRESS", {"role": role, "record": record}, timeout_s)


# A progress record is a display line, not a result: a flat dict of a few JSON scalars, small enough
# that a misbehaving role cannot grow the driver's memory (one record per role, a bounded number of roles).
PROGRESS_LIMITS = {"roles": 1024, "fields": 32, "key_chars": 40, "text_chars": 200, "bytes": 4096,
                   "history": 4096}  # records kept in arrival order, so a display polling now and then misses none


def progress_problem(data) -> str | None:
    """Why a PROGRESS message is refused, or None."""
    if not (isinstance(data, dict) and set(data) == {"role", "record"}):
        return "PROGRESS needs {'role': str, 'record': {...}}"
    role, record = data["role"], data["record"]
    if not isinstance(role, str) or not 0 < len(role) <= PROGRESS_LIMITS["key_chars"]:
        return f"PROGRESS: role must be a name of 1-{PROGRESS_LIMITS['key_chars']} characters"
    if not isinstance(record, dict) or len(record) > PROGRESS_LIMITS["fields"]:
        return f"PROGRESS from {role}: record must be a dict of at most {PROGRESS_LIMITS['fields']} fields"
    for key, value in record.items():
        if not isinstance(key, str) or len(key) > PROGRESS_LIMITS["key_chars"]:
            return f"PROGRESS from {role}: field names are strings of at most {PROGRESS_LIMITS['key_chars']} characters"
        if value is not None and type(value) not in (bool, int, float, str):
            return f"PROGRESS from {role}: field {key!r} is a {type(value).__name__}, not a JSON scalar"
        if isinstance(value, str) and len(value) > PROGRESS_LIMITS["text_chars"]:
            return f"PROGRESS from {role}: field {key!r} is longer than {PROGRESS_LIMITS['text_chars']} characters"
    if len(json.dumps(record)) > PROGRESS_LIMITS["bytes"]:
        return f"PROGRESS from {role}: record larger than {PROGRESS_LIMITS['bytes']} bytes"
    return None


def _malformed(op, data) -> str | None:
    """Why a message cannot be handled, or None; checked before anything is stored."""
    if op not in ("REG", "QUERY", "QINFO", "RESULT", "REPORTED", "STOP", "PROGRESS"):
        return f"unknown op {op!r}"
    if op == "PROGRESS":
        return progress_problem(data)
    if op == "REG" and not (isinstance(data, dict) and {"executor_id", "host", "port", "job_name"} <= set(data)):
        return "REG needs a node record with executor_id, host, port and job_name"
    if op == "REG" and not (type(data["executor_id"]) is int and len(json.dumps(to_json(data))) <= MAX_NODE_BYTES):
        return f"REG: executor_id must be an integer and the record at most {MAX_NODE_BYTES} bytes"
    if op == "RESULT" and not (isinstance(data, dict) and set(data) == {"role"} and isinstance(data["role"], str)
                               and 0 < len(data["role"]) <= PROGRESS_LIMITS["key_chars"]):
        return (f"RESULT needs {{'role': a name of 1-{PROGRESS_LIMITS['key_chars']} characters}} "
                f"and the result as its payload")
    return None


def _depth(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """True if JSON `obj` nests no deeper than `limit` (iterative: a hostile depth costs no recursion)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return True


def _decode(raw: Any, what: str) -> Any:
    """A JSON value from the wire -> Python (tags undone); ValueError says what is wrong."""
    if not _depth(raw):
        raise ValueError(f"{what} nests deeper than {MAX_DEPTH} levels")
    try:
        return from_json(raw)
    except (ValueError, TypeError) as exc:  # e.g. bad hex under __bytes__
        raise ValueError(f"{what} is malformed: {exc}") from None


def _decode_payload(arrays: list, role: str) -> Any:
    if len(arrays) != 1 or arrays[0].dtype != np.uint8:
        raise ValueError(f"RESULT from {role}: the result must be one byte string (JSON) as the payload")
    try:
        raw = json.loads(arrays[0].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"RESULT from {role}: the payload is not JSON ({type(exc).__name__})") from None
    return _decode(raw, f"RESULT from {role}")


def reported_roles(server_addr, secret: str, timeout_s: float = 30) -> list[str]:
    """Names of the roles that have handed in a result so far."""
    sock = _connect(server_addr, secret, timeout_s)
    try:
        return _request(sock, "REPORTED")
    finally:
        sock.close()


class ReservationTimeout(RuntimeError):
    """Not every role registered in time; the message names the missing ones."""


class Server:
    """Drop-in for tensorflowonspark.reservation.Server, bound to `host` and behind `secret`."""

    def __init__(self, count: int, *, secret: str, host: str | None, sc=None, describe=None,
                 missing: Callable | None = None):
        self.count = count
        self.secret = secret.encode()
        self.host = host or os.environ.get("TFOS_SERVER_HOST") or socket.gethostbyname(socket.gethostname())
        self.sc, self.describe, self.missing = sc, describe, missing
        self.done = False
        self._lock = threading.Condition()
        self._reservations: list[dict] = []
        self._pending: collections.OrderedDict = collections.OrderedDict()  # socket -> None, oldest first
        self._pending_lock = threading.Lock()
        self._accept_errors = 0
        self._results: dict[str, Any] = {}
        self._progress: dict[str, dict] = {}
        self._progress_log: collections.deque = collections.deque(maxlen=PROGRESS_LIMITS["history"])
        self._progress_seq = 0
        self._sock: socket.socket | None = None

    # -- what TFCluster calls ---------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        self._sock = socket.create_server((self.host, 0))
        self._sock.settimeout(0.5)  # the accept loop looks at self.done twice a second
        addr = (self.host, self._sock.getsockname()[1])
        threading.Thread(target=self._serve, name="tfos-reservations", daemon=True).start()
        log.info("reservation server (authenticated, JSON) at %s:%d", *addr)
        return addr

    def await_reservations(self, sc, status: dict, timeout: float = 600) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._reservations) < self.count:
                if "error" in status:
                    raise RuntimeError(f"a TFoS node failed before the cluster formed: {status['error']}")
                if time.monotonic() > deadline:
                    raise ReservationTimeout(self._timeout_message(timeout))
                self._lock.wait(1.0)
            return list(self._reservations)

    def stop(self) -> None:
        """TFCluster.shutdown calls this before roles have reported; close() really stops."""

    # -- what the adapter adds --------------------------------------------------------------------
    def results(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._results)

    def progress(self) -> dict[str, dict]:
        """The latest progress record of each role that sent one."""
        with self._lock:
            return {role: dict(record) for role, record in self._progress.items()}

    def progress_since(self, seq: int) -> tuple[int, list[tuple[str, dict]]]:
        """(the newest record's number, [(role, record)] received after record number `seq`, oldest
        first); records older than the last PROGRESS_LIMITS['history'] are gone."""
        with self._lock:
            return self._progress_seq, [(role, dict(record)) for n, role, record in self._progress_log if n > seq]

    def wait_for(self, roles: set[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            while not roles <= set(self._results):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 1.0))
            return True

    def close(self) -> None:
        self.done = True
        if self._sock is not None:
            self._sock.close()

    def _timeout_message(self, timeout: float) -> str:
        got = {r["executor_id"]: r for r in self._reservations}
        names = self.describe.names() if self.describe else {}
        have = ", ".join(f"{names.get(e, e)} ({r['host']}:{r['port']})" for e, r in sorted(got.items()))
        lost = ", ".join(self.missing(self.describe, got)) if self.missing else f"{self.count - len(got)} node(s)"
        executors = "?"
        if self.sc is not None:
            executors = str(self.sc._jsc.sc().getExecutorMemoryStatus().size() - 1)
        return (f"TensorFlowOnSpark roles did not all register within {timeout:.0f}s. "
                f"Registered: {have or 'none'}. Missing: {lost}. The application has {executors} executor(s) "
                f"for {self.count} roles: each role needs its own executor with one core "
                f"(spark.executor.cores=1, spark.cores.max={self.count}).")

    # -- the listener -----------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self.done:
            try:
                conn, peer = self._sock.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                if self.done or exc.errno == errno.EBADF:
                    break
                # Out of file descriptors (EMFILE, ENFILE) or memory, or a peer that reset before we
                # accepted: drop the oldest unauthenticated connection and go on accepting.
                self._accept_errors += 1
                if self._accept_errors in (1, 10, 100) or self._accept_errors % 1000 == 0:
                    log.warning("reservation server: accept failed (%s), %d time(s); dropping the oldest "
                                "connection that has not authenticated", exc, self._accept_errors)
                self._drop_oldest_pending()
                time.sleep(0.01)
                continue
            with self._pending_lock:
                self._pending[conn] = None
                crowded = len(self._pending) > MAX_PENDING
            if crowded:
                self._drop_oldest_pending()
            # One thread per connection: a peer that stalls in the handshake delays nobody else.
            threading.Thread(target=self._converse, args=(conn, peer), daemon=True).start()

    def _drop_oldest_pending(self) -> None:
        with self._pending_lock:
            if not self._pending:
                return
            oldest, _ = self._pending.popitem(last=False)
        try:  # its thread, blocked in the handshake, wakes up and closes it
            oldest.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _converse(self, conn: socket.socket, peer) -> None:
        with conn:
            conn.settimeout(10)
            try:
                ps_wire.server_handshake(conn, self.secret, RESULT_MAX_BYTES)
            except (OSError, ps_wire.WireError) as exc:
                log.warning("rejected reservation connection from %s: %s", peer, exc)
                return
            finally:
                with self._pending_lock:
                    self._pending.pop(conn, None)
            conn.settimeout(None)
            while not self.done:
                try:
                    try:
                        header, arrays = ps_wire.recv_message(conn)
                    except ps_wire.BadMessage as exc:  # consumed whole: answer it, keep the connection
                        ps_wire.send_message(conn, {"op": "ERR", "data": str(exc)[:500]})
                        continue
                    self._handle(conn, header, arrays)
                except (OSError, ps_wire.WireError) as exc:
                    log.debug("reservation connection from %s closed: %s", peer, exc)
                    return
                except Exception as exc:  # a bug on one request must not lose the peer's connection
                    log.exception("reservation server: error handling %r from %s", header.get("op"), peer)
                    ps_wire.send_message(conn, {"op": "ERR", "data": f"server error: {type(exc).__name__}"})

    def _handle(self, sock: socket.socket, header: dict, arrays: list) -> None:
        op = header.get("op")
        try:
            data = _decode(header.get("data"), f"{op!s:.20}")
            problem = _malformed(op, data)
            if not problem and arrays and op != "RESULT":
                problem = f"{op} carries no payload"
            if problem:
                raise ValueError(problem)
            if op == "RESULT":
                data["result"] = _decode_payload(arrays, data["role"])
            problem = self._over_bounds(op, data)
            if problem:
                raise ValueError(problem)
        except ValueError as exc:
            ps_wire.send_message(sock, {"op": "ERR", "data": str(exc)[:500]})
            return
        if op == "PROGRESS":  # frequent and independent of the rest: no wake-up of the waiters
            with self._lock:
                full = len(self._progress) >= PROGRESS_LIMITS["roles"] and data["role"] not in self._progress
                if not full:
                    self._progress[data["role"]] = data["record"]
                    self._progress_seq += 1
                    self._progress_log.append((self._progress_seq, data["role"], data["record"]))
            ps_wire.send_message(sock, {"op": "ERR", "data": "PROGRESS: too many roles"} if full
                                 else {"op": "OK", "data": "OK"})
            return
        with self._lock:
            if op == "REG":  # a retried node registers again: its newer record replaces the old one
                self._reservations = [r for r in self._reservations if r["executor_id"] != data["executor_id"]]
                self._reservations.append(data)
                reply = "OK"
            elif op == "QUERY":
                reply = len(self._reservations) >= self.count
            elif op == "QINFO":
                reply = list(self._reservations)
            elif op == "RESULT":
                self._results[str(data["role"])] = data["result"]
                reply = "OK"
            elif op == "REPORTED":
                reply = sorted(self._results)
            elif op == "STOP":
                reply = "OK"  # a worker asked to end feeding; shutdown is the driver's job
            self._lock.notify_all()
        ps_wire.send_message(sock, {"op": "OK", "data": to_json(reply)})

    def _over_bounds(self, op: str, data: dict) -> str | None:
        """Why storing this record would exceed what the run can need, or None."""
        with self._lock:
            if op == "REG" and not 0 <= data["executor_id"] < self.count:
                return f"REG: executor_id {data['executor_id']} is not one of this run's 0..{self.count - 1}"
            if op == "RESULT" and data["role"] not in self._results:
                if len(self._results) >= self.count:
                    return f"RESULT from {data['role']!r}: this run has {self.count} roles, all have reported"
        return None
