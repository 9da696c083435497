"""Peak resident memory of a parameter-server process over the size of the model it serves.

A ParameterServer runs in a child process. Its RSS is sampled (psutil, every 50 ms) first while the
child holds no weights (the interpreter, numpy and the server's modules: the baseline), then while it
holds the weights and N client processes pull and push model-sized updates for a few seconds. The ratio
is peak RSS / model bytes, printed also net of the baseline: (peak - baseline) / model bytes.

    PYTHONPATH=. .venv/bin/python bench/ps_memory.py [--quick] [--clients 4] [--seconds 5]
                                                     [--classes 800 | --params N]
"""
from __future__ import annotations

import argparse
import os
import threading
import time

import psutil

from bench import ps_load

SAMPLE_S = 0.05


class RssSampler:
    """Samples one process's RSS every `interval` seconds in a thread; keeps the peak and the count."""

    def __init__(self, pid: int, interval: float = SAMPLE_S):
        self._proc, self.interval = psutil.Process(pid), interval
        self.peak = self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                rss = self._proc.memory_info().rss
            except psutil.Error:  # the child has exited
                return
            self.peak, self.samples = max(self.peak, rss), self.samples + 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="client processes pulling and pushing (default 4)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the clients run (default 5)")
    ps_load.model_size_args(parser, 800,
                            "output classes of the thesis CNN (default 800, the paper's: 45.7M parameters)")
    parser.add_argument("--quick", action="store_true", help="3 s of load on a 200-class model (11.4M parameters)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
        if args.params is None and args.classes == 800:
            args.classes = 200
    if args.params is not None:
        args.classes = ps_load.classes_for_params(args.params, args.bands)
    if args.clients < 1 or args.seconds <= 0:
        parser.error("--clients must be >= 1 and --seconds > 0")
    return args


def measure(shapes, clients: int, seconds: float) -> dict:
    secret = os.urandom(32)
    proc, conn, (_, pid) = ps_load.start_server(ps_load.serve_ps, shapes, secret, clients)
    try:
        with RssSampler(pid) as before:
            time.sleep(0.5)
        with RssSampler(pid) as during:
            conn.send("go")
            _, port = conn.recv()
            loaded = psutil.Process(pid).memory_info().rss
            load = ps_load.run_clients(ps_load.ps_client, [(port, secret, w, shapes, seconds, True)
                                                           for w in range(clients)], seconds)
    finally:
        applied = ps_load.stop_server(proc, conn)
    return {"baseline": before.peak, "loaded": loaded, "peak": during.peak, "samples": during.samples,
            "updates": load["steps"], "applied": applied, "window_s": load["window_s"]}


def main(argv=None) -> float:
    args = parse_args(argv)
    shapes = ps_load.thesis_shapes(args.bands, args.classes)
    nbytes = ps_load.model_bytes(shapes)
    print(ps_load.describe(shapes, args.bands, args.classes))
    print(f"{args.clients} client processes, each pull + push, for {args.seconds:g} s; RSS sampled every "
          f"{SAMPLE_S * 1000:.0f} ms")
    m = measure(shapes, args.clients, args.seconds)
    mib = 2**20
    print(f"baseline RSS (no weights yet):     {m['baseline'] / mib:8.1f} MiB")
    print(f"RSS once the server holds weights: {m['loaded'] / mib:8.1f} MiB")
    print(f"peak RSS under load:               {m['peak'] / mib:8.1f} MiB ({m['samples']} samples, "
          f"{m['updates']} updates in {m['window_s']:.1f} s, server applied {m['applied']})")
    print(f"model:                             {nbytes / mib:8.1f} MiB")
    net = (m["peak"] - m["baseline"]) / nbytes
    print(f"net of the interpreter: (peak - baseline) / model bytes = {net:.3f}")
    # model bytes = parameters x 4, computed (analytic); beside it, one measured on both sides:
    print(f"measured both sides: peak RSS under load / RSS once the server holds weights = "
          f"{m['peak'] / m['loaded']:.3f}")
    ratio = m["peak"] / nbytes
    print("goal: none set; the ratio is reported")
    print(f"RATIO ps_peak_rss_over_analytic_model_bytes = {ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
