"""Parameter-server updates per second vs a plain loopback socket copy of the same bytes.

Side A: a ParameterServer (s=1, so every push is one applied update) in its own process, and N client
processes, each with its own PSClient, pushing a redshift-CNN-sized update in a loop. Side B: a sink in
its own process (a thread per connection, like the server) and N sender processes, each sending the
same byte count per message over 127.0.0.1 and waiting for a one-byte ack. Both sides run for the same
window; a side's rate is the sum of its clients' rates within the window (ps_load.run_clients).
The ratio is PS updates/s over plain messages/s, so it prices the wire's authentication, the JSON
header, the aggregation and the server's locking against moving the bytes alone.

    PYTHONPATH=. .venv/bin/python bench/ps_updates.py [--quick] [--clients 8] [--seconds 10]
                                                      [--classes 40 | --params N | --full] [--pull]
"""
from __future__ import annotations

import argparse
import os

from bench import ps_load

FULL_CLASSES = 800  # the paper's redshift bins; 1800 bands: 45.7M parameters, 183 MB per update


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes (default 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window per side (default 10)")
    size = ps_load.model_size_args(parser, 40,
                                   "output classes of the thesis CNN (default 40: 2.3M parameters, 9 MB)")
    size.add_argument("--full", action="store_true", help=f"the paper's size: {FULL_CLASSES} classes (183 MB)")
    parser.add_argument("--pull", action="store_true",
                        help="each update pulls the weights first (a plain step then sends two messages)")
    parser.add_argument("--quick", action="store_true", help="a 4 s window per side")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 4.0)
    if args.full:
        args.classes = FULL_CLASSES
    elif args.params is not None:
        args.classes = ps_load.classes_for_params(args.params, args.bands)
    if args.clients < 1 or args.seconds <= 0:
        parser.error("--clients must be >= 1 and --seconds > 0")
    return args


def measure_ps(shapes, clients: int, seconds: float, pull: bool) -> dict:
    secret = os.urandom(32)
    proc, conn, _ = ps_load.start_server(ps_load.serve_ps, shapes, secret, clients)
    try:
        conn.send("go")
        _, port = conn.recv()
        result = ps_load.run_clients(ps_load.ps_client,
                                     [(port, secret, w, shapes, seconds, pull) for w in range(clients)], seconds)
    finally:
        cpu = {}
        applied = ps_load.stop_server(proc, conn, cpu=cpu)
    result["applied"], result["server_cpu_s"] = applied, cpu["cpu_s"]
    return result


def measure_plain(nbytes: int, clients: int, seconds: float, messages_per_step: int) -> dict:
    proc, conn, (_, port) = ps_load.start_server(ps_load.serve_sink, nbytes)
    cpu = {}
    try:
        result = ps_load.run_clients(ps_load.sink_client, [(port, w, nbytes, messages_per_step, seconds)
                                                           for w in range(clients)], seconds)
    finally:
        messages = ps_load.stop_server(proc, conn, cpu=cpu)
    result["messages"], result["server_cpu_s"] = messages, cpu["cpu_s"]
    return result


def main(argv=None) -> float:
    args = parse_args(argv)
    shapes = ps_load.thesis_shapes(args.bands, args.classes)
    nbytes = ps_load.model_bytes(shapes)
    print(ps_load.describe(shapes, args.bands, args.classes))
    print(f"{args.clients} client processes, {args.seconds:g} s window per side, "
          f"{'pull + push' if args.pull else 'push'} per update, {os.cpu_count()} CPUs")
    plain = measure_plain(nbytes, args.clients, args.seconds, 2 if args.pull else 1)
    mib = nbytes / 2**20
    copies = 2 if args.pull else 1
    print(f"plain loopback copy: {copies} message(s) per step, {ps_load.window_line(plain, 'steps')}, "
          f"{plain['per_s'] * copies * mib:.0f} MiB/s, per sender {plain['per_client']}")
    ps = measure_ps(shapes, args.clients, args.seconds, args.pull)
    print(f"parameter server:    {ps_load.window_line(ps, 'updates')}, {ps['per_s'] * copies * mib:.0f} MiB/s, "
          f"per client {ps['per_client']}; server applied {ps['applied']}")
    if ps["applied"] != ps["steps"] + args.clients:  # each client pushes once to warm up, then in the window
        print(f"warning: expected {ps['steps'] + args.clients} applied updates (window + warm-up)")
    ratio = ps["per_s"] / plain["per_s"]
    # CPU per message of each server process: the work each side's server does, which the machine's
    # other load changes far less than it changes rates
    ps_ms, plain_ms = (1000 * ps["server_cpu_s"] / max(1, ps["applied"]),
                       1000 * plain["server_cpu_s"] / max(1, plain["messages"] // copies))
    print(f"server CPU per update: parameter server {ps_ms:.1f} ms (all threads, {ps['applied']} updates), "
          f"plain sink {plain_ms:.1f} ms per step ({plain['messages']} messages); "
          f"sink/ps = {plain_ms / ps_ms:.3f}")
    print("goal: none set; the ratio is reported (1.0 would mean the server costs nothing beyond the copy)")
    print(f"RATIO ps_vs_loopback_updates_per_s = {ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
