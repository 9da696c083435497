"""Parameter-server updates per second at 1, 8 and 32 concurrent clients, in one run.

For each client count N, a fresh ParameterServer (s=1: every push is one applied update) runs in its own
process and N client processes, each with its own PSClient, push a redshift-CNN-shaped update in a loop
for the same window (bench/ps_load.py, as ps_updates.py). Each count prints its rate and the updates the
server applied, which must equal the clients' count (window + one warm-up push each). The ratio is the
rate at the most clients over the rate at the fewest: above 1 the server serves more updates when more
clients push at once, below 1 contention costs more than the concurrency brings.

    PYTHONPATH=. .venv/bin/python bench/ps_scaling.py [--quick] [--clients 1,8,32] [--seconds 5]
                                                      [--classes 40 | --params N] [--pull]
"""
from __future__ import annotations

import argparse
import os

from bench import ps_load
from bench.ps_updates import measure_ps


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32",
                        help="comma-separated client counts, fewest first (default 1,8,32)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window per count (default 5)")
    ps_load.model_size_args(parser, 40, "output classes of the thesis CNN (default 40: 2.3M parameters, 9 MB)")
    parser.add_argument("--pull", action="store_true", help="each update pulls the weights first")
    parser.add_argument("--quick", action="store_true", help="a 3 s window per count")
    args = parser.parse_args(argv)
    try:
        args.counts = [int(c) for c in args.clients.split(",")]
    except ValueError:
        parser.error(f"--clients must be comma-separated integers, got {args.clients!r}")
    if len(args.counts) < 2 or min(args.counts) < 1 or args.counts != sorted(set(args.counts)):
        parser.error("--clients needs at least two distinct counts >= 1, fewest first")
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
    if args.params is not None:
        args.classes = ps_load.classes_for_params(args.params, args.bands)
    return args


def main(argv=None) -> float:
    args = parse_args(argv)
    shapes = ps_load.thesis_shapes(args.bands, args.classes)
    print(ps_load.describe(shapes, args.bands, args.classes))
    print(f"client counts {args.counts}, {args.seconds:g} s window each, "
          f"{'pull + push' if args.pull else 'push'} per update, {os.cpu_count()} CPUs")
    rates = {}
    for n in args.counts:
        result = measure_ps(shapes, n, args.seconds, args.pull)
        rates[n] = result["per_s"]
        print(f"{n:>3} client(s): {result['steps']} updates in {result['window_s']:.2f} s = {result['per_s']:.2f} "
              f"updates/s ({result['per_s'] / n:.2f} per client); server applied {result['applied']}, "
              f"server CPU {1000 * result['server_cpu_s'] / max(1, result['applied']):.1f} ms per update")
        if result["applied"] != result["steps"] + n:  # one warm-up push per client, then the window
            print(f"warning: expected {result['steps'] + n} applied updates (window + warm-up)")
    first, last = args.counts[0], args.counts[-1]
    ratio = rates[last] / rates[first]
    print("goal: none set; the ratio is reported (1.0: the same rate however many clients push at once)")
    print(f"RATIO ps_updates_per_s_{last}_vs_{first}_clients = {ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
