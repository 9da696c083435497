"""Staleness-aware parameter server (numpy only): the update rule's bookkeeping. Its connections (one
thread each: handshake, cut-peer detection, reading and answering requests) are ``ps_connections``, its
wire ``ps_wire``, its client ``ps_client``.

Workers pull (weights, version), train, and push dW = W_read - W_local with the
version they read.  The server computes tau = version - read_version, buffers the
update, and once s_eff = min(s, active workers) updates are buffered applies the rule
of ``staleness.aggregate`` (``aggregate_into``) and bumps the version.  A push returns
only when its own update has been applied, so s = M is synchronous training.  While a push waits the
server sends 'waiting' heartbeats, so the client's socket timeout detects a dead
server without limiting how long a synchronous round may take.

A worker proves who it is with a credential only its own role holds: HMAC(worker key, its index),
in every request that names it (``worker_credential``). The server holds the key; a holder of the
job's connection secret without the credential can pull, but cannot push, report, join or leave as
a worker, and its connection never counts as that worker's. Pushes with a NaN or inf are refused
and counted per worker; the weights stay finite.

A worker whose connection drops without 'leave' (its process died, or its host was cut off and TCP
keepalive found it: ``ps_connections.detect_cut_peer``) is *lost*: it stops counting towards s_eff, so
the others go on, and the server keeps the run open for it, because Spark retries the task and the retried worker
comes back with 'join'.  Only 'leave' from every worker ends the run.  ``checkpoint()`` and
``restore()`` carry the weights, the version counter and the progress across a restart of the server
itself.

Memory and copies: every model-sized array lives in a few reused buffers (distributed/ps_buffers.py):
the weights, the updates waiting for their aggregate, and the one being received, at most s + 1 at a time. A push is
received straight into a free buffer; its aggregate is written into that same buffer, which then
becomes the weights (copy-on-write: a pull sends the weights it read from their own buffer, unlocked,
while the next aggregate is computed elsewhere). The lock guards only the bookkeeping and the swap.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import math
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from distributed.ps_buffers import Slab, SlabPool
from distributed.ps_connections import HEARTBEAT_S, Handler, Intake, Refused, TCPServer
from distributed.ps_wire import WireError, send_message
from distributed.staleness import DEFAULT_EXPONENTIAL_BASE, aggregate_into, staleness_factor

log = logging.getLogger(__name__)


class ParameterServerError(RuntimeError):
    """The server refused a request (bad field, unknown worker, push not applied in time)."""


# What one worker may store on the server: its reports are a few numbers per epoch.
LIMITS = {"epoch": 1_000_000, "reports": 100_000, "metrics": 32, "metric_chars": 64}


def worker_credential(key: bytes, worker: int) -> str:
    """The credential of one worker: only the holder of `key` (the ps, the driver) can make it."""
    return hmac.new(bytes(key), b"worker:%d" % worker, hashlib.sha256).hexdigest()


@dataclass(eq=False)
class _Pending:
    worker: int
    read_version: int
    tau: int
    delta: list
    received: float
    slab: "Slab | None" = None      # the buffer delta lives in, when it came in the model's layout
    formed: bool = False             # taken into an aggregate (no longer withdrawable)
    applied_version: int | None = None
    error: str | None = None


def _int_field(header: dict, name: str, lo: int | None = None, hi: int | None = None) -> int:
    value = header.get(name)
    if type(value) is not int or (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = "" if lo is None else f" in {lo}..{hi}" if hi is not None else f" >= {lo}"
        raise Refused(f"field {name!r} must be an integer{bounds}, got {repr(value)[:40]}")
    return value


class ParameterServer:
    def __init__(self, initial_weights, secret: bytes, num_workers: int, s: int = 1,
                 schedule: str = "inverse", host: str = "127.0.0.1", port: int = 0,
                 push_timeout_s: float = 300, heartbeat_s: float = HEARTBEAT_S,
                 handshake_timeout_s: float = 10.0, max_payload: int | None = None,
                 schedule_base: float = DEFAULT_EXPONENTIAL_BASE, worker_key: bytes | None = None):
        """`worker_key` makes the workers' credentials (default: the secret itself, for a process
        that holds both); `max_payload` defaults to the largest push the model allows."""
        if type(num_workers) is not int or num_workers < 1:
            raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}")
        if type(s) is not int or not 1 <= s <= num_workers:
            raise ValueError(f"s must be an integer with 1 <= s <= num_workers={num_workers}, got {s!r}")
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes (the driver generates it per run)")
        staleness_factor(1, schedule, schedule_base)  # rejects unknown schedules now, not mid-run
        initial = [np.asarray(w) for w in initial_weights]
        for i, w in enumerate(initial):
            if w.dtype not in (np.float32, np.float64):
                raise ValueError(f"initial weight {i} has dtype {w.dtype}; only float32/float64 travel")
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        layout = [(np.dtype(w.dtype.name), w.shape, w.nbytes) for w in initial]
        # the weights, s - 1 updates waiting, one being received (its aggregate becomes the next weights)
        self._pool = SlabPool(layout, s + 1, lock)
        self._current = self._pool.take()
        for mine, w in zip(self._current.arrays, initial):
            mine[...] = w
        self._weights = self._current.arrays
        self._secret, self.num_workers, self.s = bytes(secret), num_workers, s
        self._credentials = [worker_credential(self._secret if worker_key is None else worker_key, w)
                             for w in range(num_workers)]
        self.schedule, self.schedule_base = schedule, schedule_base
        self.host, self.port = host, port
        self.push_timeout_s, self.heartbeat_s = push_timeout_s, heartbeat_s
        # A push carries the model's shapes in float32 or float64: nothing much larger is ever read
        # (the margin lets a slightly wrong push be answered with what is wrong instead of cut off).
        self.max_payload = (max_payload if max_payload is not None
                            else sum(w.size for w in self._weights) * 8 + (1 << 20))
        self.handshake_timeout_s = handshake_timeout_s
        self._version = 0   # published: the weights a pull gets are this version's
        self._formed = 0    # aggregates formed (>= version while one is being computed)
        self._buffer: list[_Pending] = []
        self._active = set(range(num_workers))
        self._updates: list[dict] = []
        self._metrics: list[list[dict]] = [[] for _ in range(num_workers)]
        self._pushes_received = self._pushes_withdrawn = 0
        self._refused = [0] * num_workers  # pushes refused per worker because of a NaN or inf
        self._owner: dict[int, socket.socket] = {}  # worker -> the connection it last spoke on
        self._lost: set[int] = set()    # connection dropped without 'leave': may come back with 'join'
        self._events: list[dict] = []   # workers lost and rejoined, for the run's summary
        self._done = threading.Event()
        self._stopping = False
        self._conns: set[socket.socket] = set()
        self._server: TCPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        try:
            self._server = TCPServer((self.host, self.port), Handler)
        except OSError as e:
            raise OSError(e.errno, f"parameter server cannot listen on {self.host}:{self.port}: "
                                   f"{e.strerror}") from e
        self._server.ps = self
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"param-server-{self.port}", daemon=True)
        self._thread.start()
        log.info("parameter server on %s:%d: %d workers, s=%d, schedule=%s",
                 self.host, self.port, self.num_workers, self.s, self.schedule)
        return self.host, self.port

    def stop(self) -> None:
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
            self._pool.wake_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._cond:
            conns = list(self._conns)
        for conn in conns:  # shutdown (not close) wakes a handler blocked in recv
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_until_done(self, timeout: float | None = None) -> bool:
        """True once every worker has sent 'leave'."""
        return self._done.wait(timeout)

    def _register(self, sock):
        with self._cond:
            self._conns.add(sock)

    def _unregister(self, sock):
        with self._cond:
            self._conns.discard(sock)

    # ---- state -----------------------------------------------------------------
    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    @property
    def pushes_received(self) -> int:
        with self._cond:
            return self._pushes_received

    @property
    def pushes_withdrawn(self) -> int:
        with self._cond:
            return self._pushes_withdrawn

    @property
    def pushes_refused(self) -> list[int]:
        """Per worker: pushes refused because they held a NaN or inf."""
        with self._cond:
            return list(self._refused)

    @property
    def updates_applied(self) -> int:
        with self._cond:
            return len(self._updates)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._buffer)

    def snapshot(self) -> dict:
        with self._cond:
            return {"weights": self._copy_weights(), "version": self._version,
                    "updates": [dict(u) for u in self._updates],
                    "metrics": [[dict(r, metrics=dict(r["metrics"])) for r in reports]
                                for reports in self._metrics],
                    "active_workers": sorted(self._active),
                    "lost_workers": sorted(self._lost),
                    "events": [dict(e) for e in self._events],
                    "pushes_received": self._pushes_received,
                    "pushes_withdrawn": self._pushes_withdrawn,
                    "pushes_refused": list(self._refused)}

    def checkpoint(self) -> tuple[list[np.ndarray], dict]:
        """(weights, JSON state) at one instant: what restore() needs to go on from here.

        Updates still buffered are not in it (they were never applied); they are not counted
        as received either, so received == applied + withdrawn holds after a restore."""
        with self._cond:
            weights = self._copy_weights()
            state = {"version": self._version, "updates": [dict(u) for u in self._updates],
                     "metrics": [[dict(r, metrics=dict(r["metrics"])) for r in reports]
                                 for reports in self._metrics],
                     "pushes_received": self._pushes_received - len(self._buffer),
                     "pushes_withdrawn": self._pushes_withdrawn,
                     "events": [dict(e) for e in self._events],
                     "epochs_reported": [self._epochs_reported(w) for w in range(self.num_workers)],
                     "num_workers": self.num_workers}
        return weights, state

    def restore(self, weights, state: dict) -> None:
        """Go on from checkpoint(): call before start(). Every worker is expected (again)."""
        if self._server is not None:
            raise RuntimeError("restore() must come before start()")
        if state.get("num_workers") != self.num_workers:
            raise ValueError(f"checkpoint is for {state.get('num_workers')} workers, this server has "
                             f"{self.num_workers}")
        if len(weights) != len(self._weights) or any(
                np.shape(w) != v.shape for w, v in zip(weights, self._weights)):
            raise ValueError("checkpoint weights do not match the model's shapes")
        for mine, w in zip(self._weights, weights):
            mine[...] = w
        self._version = self._formed = int(state["version"])
        self._updates = [dict(u) for u in state["updates"]]
        self._metrics = [[dict(r) for r in reports] for reports in state["metrics"]]
        self._pushes_received = int(state["pushes_received"])
        self._pushes_withdrawn = int(state["pushes_withdrawn"])
        self._events = [dict(e) for e in state.get("events", [])]

    def wait_for_update(self, version: int, timeout: float | None = None) -> int:
        """Block until the version differs from `version`, the run is done or stopping; the version."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != version or self._done.is_set() or self._stopping,
                                timeout=timeout)
            return self._version

    def _epochs_reported(self, worker: int) -> int:
        """Caller holds the lock. Epochs this worker has completed, by its reports (0-based epochs)."""
        return 1 + max((r["epoch"] for r in self._metrics[worker]), default=-1)

    def epochs_reported(self) -> list[int]:
        """Per worker, the epochs it has completed by its reports."""
        with self._cond:
            return [self._epochs_reported(w) for w in range(self.num_workers)]

    def _s_eff(self) -> int:
        return min(self.s, len(self._active))

    # ---- ops -------------------------------------------------------------------
    # ---- buffers ---------------------------------------------------------------
    def _copy_weights(self) -> list[np.ndarray]:
        """Caller holds the lock: a copy of the weights (rare: snapshots, checkpoints)."""
        return [w.copy() for w in self._weights]

    def _pin(self) -> tuple[Slab, int]:
        """The weights and their version, kept out of the pool until _unpin: weights are replaced,
        never written, so they are a consistent view without the lock."""
        with self._cond:
            self._current.readers += 1
            return self._current, self._version

    def _unpin(self, slab: Slab) -> None:
        with self._cond:
            slab.readers -= 1
            if slab.retired and slab.readers == 0:
                self._pool.give(slab)

    def _receive_buffer(self, header: dict, specs: list, intake: Intake):
        """ps_wire's `into`: a worker's push in the model's own layout is read straight into a pooled
        buffer. Only a request with its worker's credential gets one (it could hold it by stalling)."""
        worker, credential = header.get("worker"), header.get("credential")
        if (header.get("op") != "push" or type(worker) is not int or not 0 <= worker < self.num_workers
                or not isinstance(credential, str)
                or not hmac.compare_digest(credential, self._credentials[worker])
                or [(d, sh) for d, sh, _ in specs] != [(d, sh) for d, sh, _ in self._pool.layout]):
            return None
        with self._cond:
            intake.slab = self._pool.take(lambda: self._stopping)
        return intake.slab.raw

    def _give_back(self, intake: Intake) -> None:
        if intake.slab is not None:
            with self._cond:
                self._pool.give(intake.slab)
                intake.slab = None

    # ---- ops -------------------------------------------------------------------
    def _dispatch(self, sock, header: dict, arrays: list, intake: Intake):
        op = header["op"]
        if op == "pull":
            slab, version = self._pin()
            return {"op": "weights", "version": version}, slab.arrays, slab
        worker = _int_field(header, "worker")
        if not 0 <= worker < self.num_workers:
            raise Refused(f"unknown worker {worker}; this job has workers 0..{self.num_workers - 1}")
        credential = header.get("credential")
        if not (isinstance(credential, str) and hmac.compare_digest(credential, self._credentials[worker])):
            raise Refused(f"'{op[:20]}' for worker {worker} refused: its credential is missing or wrong")
        with self._cond:  # the connection a worker proved itself on: if it drops, the worker is lost
            self._owner[worker] = sock
        if op == "push":
            version, tau = self._push(sock, worker, header, arrays, intake)
            return {"op": "pushed", "version": version, "tau": tau}, ()
        if op == "report":
            self._report(worker, header)
            return {"op": "ok"}, ()
        if op == "leave":
            self._leave(worker)
            return {"op": "ok"}, ()
        if op == "join":
            return {"op": "joined", **self._join(worker, header)}, ()
        raise Refused(f"unknown op {op!r:.40}")

    def _push(self, sock, worker: int, header: dict, delta: list, intake: Intake) -> tuple[int, int]:
        """Buffer one update; returns (the version that applied it, its staleness tau) once applied."""
        read_version = _int_field(header, "read_version")
        # The whole delta is checked before anything is buffered (an update is applied whole or not at
        # all), without the lock: the model's shapes never change.
        shapes = None
        if len(delta) != len(self._weights):
            shapes = f"push has {len(delta)} tensors, the model has {len(self._weights)}"
        for i, (w, d) in enumerate(zip(self._weights, delta)):
            if shapes is None and (d.shape != w.shape or d.dtype.kind != "f"):
                shapes = f"tensor {i}: got {d.dtype} {d.shape}, expected floats of shape {w.shape}"
        bad = None if shapes else intake.not_finite  # scanned as it landed
        with self._cond:
            if self._stopping:
                raise Refused("parameter server is stopping")
            if worker in self._lost:
                raise Refused(f"worker {worker} was lost; it must 'join' again before it pushes")
            if worker not in self._active:
                raise Refused(f"worker {worker} already left; its push is refused")
            if not 0 <= read_version <= self._version:
                raise Refused(f"read_version {read_version} is not a version this server "
                              f"has published (current {self._version})")
            if shapes:
                raise Refused(shapes)
            if bad is not None:  # one diverged worker must not poison the shared weights
                self._refused[worker] += 1
                log.warning("push from worker %d refused: tensor %d holds NaN or inf (%d refused from it)",
                            worker, bad, self._refused[worker])
                raise Refused(f"push from worker {worker} refused: tensor {bad} holds NaN or inf; "
                              f"the weights are unchanged")
            # tau counts the aggregates formed since the read, one being computed included
            entry = _Pending(worker, read_version, self._formed - read_version, delta, time.time(),
                             slab=intake.slab)
            intake.slab = None
            self._buffer.append(entry)
            self._pushes_received += 1
            batch = self._take_batch()
        self._apply(batch)
        deadline = time.monotonic() + self.push_timeout_s
        while True:
            with self._cond:
                remaining = deadline - time.monotonic()
                self._cond.wait_for(lambda: entry.applied_version is not None or entry.error or self._stopping,
                                    timeout=max(0.0, min(remaining, self.heartbeat_s)))
                if entry.applied_version is not None:
                    return entry.applied_version, entry.tau
                if entry.error:
                    raise Refused(entry.error)
                if (self._stopping or remaining <= 0) and not entry.formed:
                    self._withdraw(entry)
                    raise Refused("parameter server is stopping" if self._stopping else
                                  f"push not applied within {self.push_timeout_s} s: "
                                  f"{len(self._buffer)} of {self._s_eff()} updates arrived")
                if self._stopping:  # its aggregate is being computed; nobody waits for the answer
                    raise Refused("parameter server is stopping")
            try:
                send_message(sock, {"op": "waiting"})
            except (OSError, WireError):
                with self._cond:  # the pusher is gone; it will never learn the result
                    if not entry.formed:
                        self._withdraw(entry)
                raise

    def _withdraw(self, entry: _Pending) -> None:
        """Caller holds the lock."""
        self._buffer.remove(entry)
        self._pushes_withdrawn += 1
        if entry.slab is not None:
            self._pool.give(entry.slab)
        entry.slab = entry.delta = None
        log.warning("push from worker %d withdrawn before it was applied", entry.worker)

    def _take_batch(self) -> tuple[int, list[_Pending]] | None:
        """Caller holds the lock. Once the buffer holds s_eff updates, take them as the next aggregate:
        (the version it will publish, its updates), for _apply without the lock."""
        if not self._buffer or len(self._buffer) < max(1, self._s_eff()):
            return None
        batch, self._buffer = self._buffer, []
        for e in batch:
            e.formed = True
        self._formed += 1
        return self._formed, batch

    def _apply(self, ticket: tuple[int, list[_Pending]] | None) -> None:
        """Compute an aggregate outside the lock, into a buffer of its own, then swap it in.

        Aggregates are applied in the order they were formed: each one starts from the weights the one
        before it published, which stay the weights (so unchanged) until this one swaps."""
        if ticket is None:
            return
        version, batch = ticket
        with self._cond:
            self._cond.wait_for(lambda: self._version == version - 1)
            base = self._current
            out = next((e.slab for e in batch if e.slab is not None), None)
            if out is None:  # every update came in another dtype: a buffer beyond the limit, for once
                out = self._pool.take(force=True)
        order = sorted(batch, key=lambda e: e.slab is not out)  # the update in `out` first: read in place
        try:
            aggregate_into(out.arrays, base.arrays, [e.delta for e in order], [e.tau for e in order],
                           len(batch), self.schedule, self.schedule_base)
            error = None
        except Exception as e:  # nothing is applied; the version moves on so later aggregates do
            log.exception("parameter server: an aggregate of %d updates failed", len(batch))
            error = f"the server failed to apply this push: {type(e).__name__}: {str(e)[:200]}"
        with self._cond:
            if error is None:
                self._current, self._weights = out, out.arrays
                self._retire(base)
            else:
                self._pool.give(out)
                self._pushes_withdrawn += len(batch)
            self._version = version
            now = time.time()
            for e in batch:
                if e.slab is not None and e.slab is not out:
                    self._pool.give(e.slab)
                e.slab = e.delta = None
                if error is not None:
                    e.error = error
                    continue
                e.applied_version = version
                self._updates.append({"worker": e.worker, "read_version": e.read_version, "tau": e.tau,
                                      "lambda": staleness_factor(e.tau, self.schedule, self.schedule_base),
                                      "applied_version": version, "received": e.received,
                                      "time": now})
            self._cond.notify_all()

    def _retire(self, slab: Slab) -> None:
        """Caller holds the lock. Weights no longer current go back to the pool once nobody reads them."""
        if slab.readers:
            slab.retired = True
        else:
            self._pool.give(slab)

    def _report(self, worker: int, header: dict) -> None:
        epoch, metrics = _int_field(header, "epoch", 0, LIMITS["epoch"]), header.get("metrics")
        if not isinstance(metrics, dict) or len(metrics) > LIMITS["metrics"] or not all(
                isinstance(k, str) and len(k) <= LIMITS["metric_chars"] and type(v) in (int, float)
                for k, v in metrics.items()):
            raise Refused(f"field 'metrics' must map at most {LIMITS['metrics']} names of at most "
                          f"{LIMITS['metric_chars']} characters to numbers")
        values = {}
        for k, v in metrics.items():
            try:
                values[k] = float(v)
            except OverflowError:  # an integer beyond float's range
                values[k] = math.inf
            if not math.isfinite(values[k]):
                raise Refused(f"metric {k!r} of worker {worker} is {v if isinstance(v, float) else 'too large'}, "
                              f"not a finite number")
        with self._cond:
            if len(self._metrics[worker]) >= LIMITS["reports"]:
                raise Refused(f"worker {worker} has sent {LIMITS['reports']} reports; no more are kept")
            self._metrics[worker].append({"epoch": epoch, "metrics": values, "time": time.time()})

    def _leave(self, worker: int) -> None:
        with self._cond:
            if worker in self._lost:  # a lost worker that gives up without joining again
                self._lost.discard(worker)
                if not self._active and not self._lost:
                    self._done.set()
                self._cond.notify_all()
                return
            if worker not in self._active:
                return
            before = self._s_eff()
            self._active.discard(worker)
            after = self._s_eff()
            if self._active and after < before:
                log.info("s shrinks from %d to %d: worker %d left", before, after, worker)
            else:
                log.info("worker %d left; %d still active", worker, len(self._active))
            batch = self._take_batch()  # a smaller s_eff may complete the buffer: nobody waits forever
            self._cond.notify_all()
        self._apply(batch)
        with self._cond:
            if not self._active and not self._lost:
                self._done.set()
            self._cond.notify_all()

    def _disconnected(self, sock, address: str = "", cause: str = "") -> None:
        """A connection ended (from `address`, for `cause`). If an active worker spoke last on it without
        leaving, it is lost."""
        with self._cond:
            gone = [w for w, owner in self._owner.items() if owner is sock]
            for w in gone:
                del self._owner[w]
            if self._stopping:
                return
            batches = [self._lose(w, address, cause) for w in gone if w in self._active]
        for batch in batches:
            self._apply(batch)

    def _lose(self, worker: int, address: str = "", cause: str = "") -> tuple[int, list[_Pending]] | None:
        """Caller holds the lock. The worker's process is gone: the others must not wait for it.
        Returns the aggregate this completes, to _apply once the lock is released."""
        before = self._s_eff()
        self._active.discard(worker)
        self._lost.add(worker)
        after = self._s_eff()
        message = (f"worker {worker} lost; s shrinks from {before} to {after}" if after < before and self._active
                   else f"worker {worker} lost; {len(self._active)} still active")
        log.warning("%s (%s, without 'leave'; it may join again)", message, cause or "connection dropped")
        self._events.append({"event": "lost", "worker": worker, "time": time.time(), "version": self._version,
                             "epochs_reported": self._epochs_reported(worker), "message": message,
                             "address": address, "cause": cause})
        self._cond.notify_all()
        return self._take_batch()

    def _join(self, worker: int, header: dict) -> dict:
        """A worker (re)connects: first start, a retried task after a loss, or a resumed run."""
        with self._cond:
            # without one, the worker resumes where its reports end (its checkpoint of that epoch)
            epoch = _int_field({"epoch": self._epochs_reported(worker), **header}, "epoch", 0, LIMITS["epoch"])
            if self._stopping:
                raise Refused("parameter server is stopping")
            if worker in self._lost:
                before = self._s_eff()
                self._lost.discard(worker)
                self._active.add(worker)
                message = f"worker {worker} rejoined at epoch {epoch}; s is {self._s_eff()} (was {before})"
                log.info(message)
                self._events.append({"event": "rejoined", "worker": worker, "time": time.time(),
                                     "version": self._version, "epoch": epoch, "message": message})
            elif worker not in self._active:
                raise Refused(f"worker {worker} already left; it cannot join again")
            return {"version": self._version, "epochs_reported": self._epochs_reported(worker),
                    "updates_applied": sum(1 for u in self._updates if u["worker"] == worker)}
