"""Load for the parameter-server benches: model-shaped arrays, servers in child processes, and client
processes that push for a fixed window.

Everything that runs in a child is a module-level function here, so the 'spawn' start method (one
fresh interpreter per process, no GIL shared with the parent) can import it. No TensorFlow: the
arrays only need the shapes and dtype of the redshift CNN's weights.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import socket
import socketserver
import struct
import time
from math import prod

import numpy as np

CTX = mp.get_context("spawn")
_LENGTH = struct.Struct("<Q")


# ---------------------------------------------------------------- model shapes (pure)
def thesis_shapes(bands: int, classes: int) -> list[tuple[int, ...]]:
    """Weight shapes of the thesis variant (2 Conv1D + softmax) in Keras's get_weights() order."""
    from jobs.redshift_config import config_model
    from models.redshift import conv_output_length, resolve
    p = resolve(config_model(bands, classes))
    shapes, channels = [], 1
    for f in p["filters"]:
        shapes += [(p["kernel_size"], channels, f), (f,)]
        channels = f
    width = conv_output_length(p) * channels
    for units in p["dense_units"] + [classes]:
        shapes += [(width, units), (units,)]
        width = units
    return shapes


def classes_for_params(params: int, bands: int) -> int:
    """Output classes that bring the thesis variant at `bands` closest to `params` parameters."""
    from jobs.redshift_config import config_model
    from models.redshift import count_params
    fixed = count_params(config_model(bands, 1))
    per_class = count_params(config_model(bands, 2)) - fixed
    return max(1, round((params - fixed) / per_class) + 1)


def model_size_args(parser, default_classes: int, classes_help: str):
    """--bands and the --classes | --params choice the ps benches share; returns the choice's group
    (a bench may add its own sizes to it). --params is resolved by the caller, after its own presets."""
    parser.add_argument("--bands", type=int, default=1800, help="spectrum length of the model (default 1800)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--classes", type=int, default=default_classes, help=classes_help)
    size.add_argument("--params", type=int, help="pick the classes that give about this many parameters")
    return size


def model_bytes(shapes, itemsize: int = 4) -> int:
    return sum(prod(s) for s in shapes) * itemsize


def filled(shapes, value: float) -> list[np.ndarray]:
    """Arrays written to (not np.zeros, whose untouched pages would not count in the RSS)."""
    return [np.full(s, value, np.float32) for s in shapes]


def describe(shapes, bands: int, classes: int) -> str:
    n = sum(prod(s) for s in shapes)
    return (f"model: thesis CNN at {bands} bands, {classes} classes: {n:,} float32 parameters "
            f"in {len(shapes)} arrays = {model_bytes(shapes) / 2**20:.1f} MiB")


# ---------------------------------------------------------------- servers (child processes)
def serve_ps(conn, shapes, secret: bytes, workers: int) -> None:
    """Report the pid with no weights yet (baseline), then on 'go' hold the weights and serve until 'stop'."""
    from distributed.param_server import ParameterServer
    conn.send(("ready", os.getpid()))
    if conn.recv() != "go":
        return
    weights = filled(shapes, 0.01)
    server = ParameterServer(weights, secret, num_workers=workers, s=1, schedule="inverse")
    del weights  # the server holds its own copy, as in the job's ps role after the model is gone
    conn.send(("listening", server.start()[1]))
    cpu = _cpu_s()
    try:
        conn.recv()
    finally:
        applied = server.updates_applied
        server.stop()
    conn.send(("stopped", applied, _cpu_s() - cpu))


def _cpu_s() -> float:
    """CPU seconds this process has used (user + system, every thread): what serving costs, whatever
    else the machine runs at the same time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _recv_into(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            raise ConnectionError("peer closed")
        got += n


class _Sink(socketserver.BaseRequestHandler):
    """Reads length-prefixed messages into one reused buffer and acknowledges each with one byte."""

    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = memoryview(bytearray(self.server.max_bytes))
        head = memoryview(bytearray(_LENGTH.size))
        try:
            while True:
                _recv_into(sock, head)
                (n,) = _LENGTH.unpack(head)
                if n > len(buf):
                    return
                _recv_into(sock, buf[:n])
                sock.sendall(b"k")
                self.server.messages += 1
        except (ConnectionError, OSError):
            return


class _ThreadingSink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_sink(conn, max_bytes: int) -> None:
    """A thread per connection, like the parameter server's socketserver, but doing nothing with the bytes."""
    import threading
    server = _ThreadingSink(("127.0.0.1", 0), _Sink)
    server.max_bytes, server.messages = max_bytes, 0
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    conn.send(("listening", server.server_address[1]))
    cpu = _cpu_s()
    conn.recv()
    server.shutdown()
    server.server_close()
    conn.send(("stopped", server.messages, _cpu_s() - cpu))


# ---------------------------------------------------------------- clients (child processes)
def _window(start, seconds: float, step) -> tuple[int, float, float]:
    """Wait at the barrier for every client and the parent, then call step() until `seconds` have passed:
    (calls, elapsed, when the last call that ended within the window ended). The last call ends after the
    window; every earlier one ended within it."""
    start.wait(300)
    t0 = time.monotonic()
    n, last_within = 0, 0.0
    while (now := time.monotonic() - t0) < seconds:
        if n:
            last_within = now
        step()
        n += 1
    return n, time.monotonic() - t0, last_within


def ps_client(port: int, secret: bytes, worker: int, shapes, seconds: float, pull: bool, start, results) -> None:
    """Push a model-sized update per step (pulling first when `pull`), against the version last seen."""
    from distributed.ps_client import PSClient
    delta = filled(shapes, 1e-6)
    with PSClient(("127.0.0.1", port), secret, worker=worker, timeout_s=300) as client:
        _, version = client.pull()
        version = client.push(delta, version)  # warm-up: first frame, buffers allocated

        def step():
            nonlocal version
            if pull:
                _, version = client.pull()
            version = client.push(delta, version)

        results.put((worker, *_window(start, seconds, step)))
        client.leave()


def sink_client(port: int, worker: int, nbytes: int, messages: int, seconds: float, start, results) -> None:
    """Per step, send `messages` messages of the byte count one push carries, each acknowledged by one byte."""
    payload = np.full(nbytes // 4, 1e-6, np.float32).view(np.uint8)
    head = _LENGTH.pack(payload.nbytes)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def step():
            for _ in range(messages):
                sock.sendall(head)
                sock.sendall(payload)
                if sock.recv(1) != b"k":
                    raise ConnectionError("sink closed the connection")

        step()
        results.put((worker, *_window(start, seconds, step)))


# ---------------------------------------------------------------- parent side
def window_line(result: dict, unit: str) -> str:
    """One window of run_clients in words: its count, its rate and the earlier all-steps-over-the-longest-window
    figure beside it."""
    return (f"{result['steps']} {unit}, longest window {result['window_s']:.2f} s: {result['per_s']:.2f} {unit}/s "
            f"(all steps / longest window {result['steps_over_longest_window']:.2f})")


def start_server(target, *args):
    """Start a server child; return (process, pipe end, first message)."""
    here, there = CTX.Pipe()
    proc = CTX.Process(target=target, args=(there, *args), daemon=True)
    proc.start()
    if not here.poll(120):
        proc.terminate()
        raise RuntimeError(f"{target.__name__}: child process sent nothing within 120 s")
    return proc, here, here.recv()


def stop_server(proc, conn, timeout_s: float = 30, cpu: dict | None = None) -> int:
    """Ask the child to stop; return the count it reports (updates applied for the ps, messages for the
    sink). `cpu`, if given, gets the child's CPU seconds while it served ('cpu_s')."""
    try:
        conn.send("stop")
        reply = conn.recv() if conn.poll(timeout_s) else ("stopped", -1, float("nan"))
        count = reply[1]
        if cpu is not None:
            cpu["cpu_s"] = reply[2]
    finally:
        proc.join(timeout_s)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
    return count


def run_clients(target, arg_lists: list[tuple], seconds: float) -> dict:
    """One process per argument tuple; once all have connected and warmed up, open the window for all.

    Rate = the sum of the clients' own rates, each the steps it completed within the window over the time
    of the last of them (clients_rate). A client's last step ends after the window. Its steps less one
    over the whole window would undercount by half a step per client on average, so more the more
    clients; all steps over the longest window (the earlier figure, also returned) undercounts more still:
    the longest window runs on while the clients that are done stop pushing and exit."""
    start, results = CTX.Barrier(len(arg_lists) + 1), CTX.Queue()
    procs = [CTX.Process(target=target, args=(*a, start, results), daemon=True) for a in arg_lists]
    for p in procs:
        p.start()
    try:
        start.wait(timeout=300)
        got = [results.get(timeout=seconds + 300) for _ in procs]
        for p in procs:
            p.join(30)
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"{target.__name__}: client processes exited with codes {bad}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    steps = sum(n for _, n, _, _ in got)
    window = max(e for _, _, e, _ in got)
    return {"steps": steps, "window_s": window, "per_s": clients_rate([(n, last) for _, n, _, last in got]),
            "steps_over_longest_window": steps / window, "per_client": [n for _, n, _, _ in sorted(got)]}


def clients_rate(clients: list[tuple[int, float]]) -> float:
    """The sum of the clients' own rates, from (steps, when the last one that ended within the window
    ended) each: every step but the last ended within the window."""
    return sum((n - 1) / last for n, last in clients if n > 1)
