"""Point-to-point messages between the processes of a space-time parallel run.

`Mesh` connects every pair of processes once over distributed/ps_wire.py: each connection proves it
knows the run's secret (HMAC challenge-response), every frame carries a MAC and a sequence number, and
arrays travel as raw bytes with a JSON header, never pickle. TensorFlow's own gRPC servers would carry
tensors too, but they accept any client that reaches the port; this wire does not.

`LocalWorld` is the same interface over in-memory queues, for threads that emulate the processes of
a decomposition inside one process (the unit tests).

Both count what they move per tag (bytes of array payload, whole frames, messages), so a run can
report bytes per step and compare halo bytes with the analytic halo volume. A send never blocks the
caller: one sender thread per peer drains a queue, so two processes that send to each other at once
(a halo exchange) cannot deadlock on full socket buffers.
"""
from __future__ import annotations

import collections
import json
import queue
import socket
import threading
import time

import numpy as np

from distributed.ps_wire import (AuthError, WireError, client_handshake, frame_bytes, recv_message, send_message,
                                 server_handshake)


class MeshError(ConnectionError):
    """A peer was lost, sent what was not expected, or did not answer in time."""


class Counters:
    """Bytes and messages per tag, sent and received, by this process."""

    def __init__(self):
        self._lock = threading.Lock()
        self.data: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def add(self, tag: str, direction: str, payload: int, frame: int) -> None:
        with self._lock:
            c = self.data[tag]
            c[f"{direction}_payload"] += payload
            c[f"{direction}_frame"] += frame
            c[f"{direction}_messages"] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {tag: dict(c) for tag, c in self.data.items()}


def delta(after: dict, before: dict) -> dict[str, dict[str, int]]:
    """Counter differences between two snapshots, per tag."""
    return {tag: {k: v - before.get(tag, {}).get(k, 0) for k, v in values.items()} for tag, values in after.items()}


class LocalWorld:
    """`size` in-memory communicators for threads; world.comm(rank) is one process's view."""

    def __init__(self, size: int, timeout_s: float = 120):
        self.size, self.timeout_s = size, timeout_s
        self._queues = {(a, b): queue.Queue() for a in range(size) for b in range(size) if a != b}

    def comm(self, rank: int) -> "LocalComm":
        return LocalComm(self, rank)

    def run(self, fn) -> list:
        """fn(comm) in one thread per rank; their results in rank order (the first error is raised)."""
        results, errors = [None] * self.size, []

        def main(rank):
            try:
                results[rank] = fn(self.comm(rank))
            except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller below
                errors.append(exc)

        threads = [threading.Thread(target=main, args=(r,), daemon=True) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


class LocalComm:
    def __init__(self, world: LocalWorld, rank: int):
        self.world, self.rank, self.size = world, rank, world.size
        self.counters = Counters()

    def send(self, dst: int, tag: str, array) -> None:
        array = np.array(array, copy=True)  # the receiver must not see later changes
        self.counters.add(tag, "sent", array.nbytes, array.nbytes)
        self.world._queues[(self.rank, dst)].put((tag, array))

    def recv(self, src: int, tag: str) -> np.ndarray:
        try:
            got, array = self.world._queues[(src, self.rank)].get(timeout=self.world.timeout_s)
        except queue.Empty:
            raise MeshError(f"rank {self.rank}: nothing from rank {src} within {self.world.timeout_s}s "
                            f"(waiting for '{tag}')") from None
        if got != tag:
            raise MeshError(f"rank {self.rank}: expected '{tag}' from rank {src}, got '{got}'")
        self.counters.add(tag, "recv", array.nbytes, array.nbytes)
        return array

    def close(self) -> None:
        pass


def _frame_bytes(tag: str, array: np.ndarray) -> int:
    """Bytes of the ps_wire frame that carries `array` under `tag` (prefix, JSON header, payload, MACs)."""
    header = json.dumps({"op": tag, "arrays": [{"dtype": array.dtype.name, "shape": list(array.shape)}]},
                        separators=(",", ":"))
    return frame_bytes(len(header.encode()), array.nbytes)


class Mesh:
    """This process's authenticated connections to every other process of the run.

    addresses[i] is 'host:port' of rank i; this rank listens on its own (the port TFoS reserved for the
    role), connects to every lower rank and accepts every higher one; each connection opens with the
    ps_wire handshake on `secret` and a hello naming the connecting rank."""

    def __init__(self, rank: int, addresses: list[str], secret: bytes, timeout_s: float = 120):
        self.rank, self.size, self.timeout_s = rank, len(addresses), timeout_s
        self.counters = Counters()
        self._socks: dict[int, socket.socket] = {}
        self._outboxes: dict[int, queue.Queue] = {}
        self._senders: list[threading.Thread] = []
        self._failure: list[str] = []
        host, port = addresses[rank].rsplit(":", 1)
        self._listener = socket.create_server((host, int(port)), backlog=max(self.size, 1))
        try:
            self._connect(addresses, secret)
        except BaseException:
            self.close()
            raise
        for peer, sock in self._socks.items():
            box: queue.Queue = queue.Queue()
            self._outboxes[peer] = box
            thread = threading.Thread(target=self._send_loop, args=(peer, sock, box), daemon=True,
                                      name=f"mesh-send-{rank}-{peer}")
            thread.start()
            self._senders.append(thread)

    def _connect(self, addresses: list[str], secret: bytes) -> None:
        deadline = time.monotonic() + self.timeout_s
        accepting = threading.Thread(target=self._accept_all, args=(secret, deadline), daemon=True)
        accepting.start()
        for peer in range(self.rank):
            host, port = addresses[peer].rsplit(":", 1)
            while True:
                try:
                    sock = socket.create_connection((host, int(port)), timeout=5)
                    break
                except OSError as exc:  # the peer's listener is not up yet
                    if time.monotonic() > deadline:
                        raise MeshError(f"rank {self.rank}: cannot reach rank {peer} "
                                        f"at {addresses[peer]}: {exc}") from exc
                    time.sleep(0.2)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client_handshake(sock, secret)
            send_message(sock, {"op": "hello", "rank": self.rank})
            sock.settimeout(self.timeout_s)
            self._socks[peer] = sock
        accepting.join(max(0.0, deadline - time.monotonic()))
        missing = sorted(set(range(self.rank + 1, self.size)) - set(self._socks))
        if self._failure or missing:
            raise MeshError(f"rank {self.rank}: " + "; ".join(self._failure or
                                                              [f"ranks {missing} did not connect in time"]))

    def _accept_all(self, secret: bytes, deadline: float) -> None:
        expected = set(range(self.rank + 1, self.size))
        while expected - set(self._socks) and time.monotonic() < deadline:
            self._listener.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                sock, _ = self._listener.accept()
            except OSError:
                continue
            try:
                sock.settimeout(10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                server_handshake(sock, secret)
                hello, _ = recv_message(sock)
                peer = hello.get("rank")
                if hello.get("op") != "hello" or peer not in expected or peer in self._socks:
                    raise MeshError(f"unexpected hello {hello!r:.80}")
            except (OSError, WireError, MeshError) as exc:  # a stranger, or a client without the secret
                sock.close()
                if isinstance(exc, AuthError):
                    continue
                self._failure.append(f"handshake failed: {exc}")
                return
            sock.settimeout(self.timeout_s)
            self._socks[peer] = sock

    def _send_loop(self, peer: int, sock: socket.socket, box: queue.Queue) -> None:
        while True:
            item = box.get()
            if item is None:
                return
            tag, array = item
            try:
                send_message(sock, {"op": tag}, [array])
            except (OSError, WireError) as exc:
                self._failure.append(f"send to rank {peer} failed: {exc}")
                return

    def send(self, dst: int, tag: str, array) -> None:
        if self._failure:
            raise MeshError(f"rank {self.rank}: {self._failure[0]}")
        array = np.array(array, copy=True, order="C")  # a copy the caller may change; 0-d stays 0-d
        self.counters.add(tag, "sent", array.nbytes, _frame_bytes(tag, array))
        self._outboxes[dst].put((tag, array))

    def recv(self, src: int, tag: str) -> np.ndarray:
        sock = self._socks[src]
        try:
            header, arrays = recv_message(sock)
        except (OSError, WireError) as exc:
            raise MeshError(f"rank {self.rank}: lost rank {src} while waiting for '{tag}' "
                            f"({type(exc).__name__}: {exc})") from exc
        if header.get("op") != tag or len(arrays) != 1:
            raise MeshError(f"rank {self.rank}: expected '{tag}' from rank {src}, got {header.get('op')!r}")
        (array,) = arrays
        self.counters.add(tag, "recv", array.nbytes, _frame_bytes(tag, array))
        return array

    def close(self) -> None:
        for box in self._outboxes.values():
            box.put(None)
        for thread in self._senders:
            thread.join(timeout=10)
        for sock in self._socks.values():
            sock.close()
        self._listener.close()
