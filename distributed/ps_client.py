"""A worker's connection to the parameter server (distributed/param_server.py), over ps_wire."""
from __future__ import annotations

import socket
import threading

import numpy as np

from distributed.param_server import ParameterServerError, worker_credential
from distributed.ps_connections import HEARTBEAT_S, detect_cut_peer
from distributed.ps_wire import WireError, client_handshake, recv_message, send_message


class ParameterServerLost(ConnectionError):
    """The connection to the parameter server broke mid-run: its process is gone (or unreachable).

    A dead process's socket is closed by the kernel, so a worker learns of it at its next request,
    or at once when it is blocked in a push, not after a timeout."""


class PSClient:
    """One worker's connection. Every failure to reach the server raises ConnectionError.

    ``timeout_s`` bounds each wait for the server; a push that waits for other workers
    stays alive through the server's heartbeats, so keep timeout_s above heartbeat_s.
    ``credential`` is this worker's (param_server.worker_credential); without one it is made from
    ``secret``, which only a server whose worker key is the secret accepts. ``connect_timeout_s``
    bounds the connection itself (default timeout_s). A server whose host stops answering is found as
    the server finds a cut worker (TCP keepalive, ps_connections.detect_cut_peer), not after timeout_s.
    """

    def __init__(self, address, secret: bytes, worker: int, timeout_s: float = 60, name: str = "parameter server",
                 credential: str | None = None, connect_timeout_s: float | None = None):
        self.address, self.worker, self.timeout_s = (address[0], int(address[1])), worker, timeout_s
        self._who = {"worker": worker, "credential": credential or worker_credential(secret, worker)}
        self.name = name  # how errors name the server, e.g. its role 'ps:0'
        self.last_tau: int | None = None  # staleness of this worker's last applied push
        self._lock = threading.Lock()
        try:
            sock = socket.create_connection(self.address, timeout=connect_timeout_s or timeout_s)
            sock.settimeout(timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            detect_cut_peer(sock, HEARTBEAT_S)
        except OSError as e:
            raise ConnectionError(f"cannot reach parameter server at {self._where()}: {e}") from e
        try:
            client_handshake(sock, secret)
        except WireError:
            sock.close()
            raise
        except OSError as e:
            sock.close()
            raise ConnectionError(f"handshake with parameter server at {self._where()} failed: {e}") from e
        self._sock: socket.socket | None = sock

    def _where(self) -> str:
        return "%s:%d" % self.address

    def _request(self, header: dict, arrays=()):
        with self._lock:
            if self._sock is None:
                raise ConnectionError(f"client for parameter server at {self._where()} is closed")
            try:
                send_message(self._sock, header, arrays)
                reply, out = recv_message(self._sock)
                while reply["op"] == "waiting":  # heartbeat while a push waits for its aggregate
                    reply, out = recv_message(self._sock)
            except (OSError, WireError) as e:
                self._close_locked()
                raise ParameterServerLost(f"lost the parameter server {self.name} at {self._where()}: "
                                          f"'{header['op']}' failed ({type(e).__name__}: {e}; "
                                          f"timeout {self.timeout_s} s)") from e
        if reply["op"] == "error":
            raise ParameterServerError(reply.get("message", "unspecified error"))
        return reply, out

    def pull(self) -> tuple[list[np.ndarray], int]:
        reply, weights = self._request({"op": "pull", "worker": self.worker})
        return weights, reply["version"]

    def push(self, delta, read_version: int) -> int:
        """The version that applied this update; its staleness is then in `last_tau`."""
        reply, _ = self._request({"op": "push", **self._who, "read_version": int(read_version)},
                                 list(delta))
        self.last_tau = reply.get("tau")
        return reply["version"]

    def report(self, epoch: int, metrics: dict) -> None:
        self._request({"op": "report", **self._who, "epoch": int(epoch),
                       "metrics": {str(k): float(v) for k, v in metrics.items()}})

    def join(self, epoch: int | None = None) -> dict:
        """Announce this worker, resuming at `epoch` (by default where its reports to the server end);
        a worker the server lost is taken back.

        Returns the server's view: version, epochs_reported and updates_applied for this worker."""
        at = {} if epoch is None else {"epoch": int(epoch)}
        reply, _ = self._request({"op": "join", **self._who, **at})
        return {k: v for k, v in reply.items() if k != "op"}

    def leave(self) -> None:
        self._request({"op": "leave", **self._who})

    def _close_locked(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
