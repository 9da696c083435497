"""Parameter-server updates per second at 1, 8 and 32 concurrent clients, in one run.

For each client count N, a fresh ParameterServer (s=1: every push is one applied update) runs in its own
process and N client processes, each with its own PSClient, push a redshift-CNN-shaped update in a loop
for the same window (bench/ps_load.py, as ps_updates.py; a window's rate is the sum of its clients' rates
within it). Each window prints its rate, the fewest and most steps of one client (how fairly pushes are
served) and the updates the server applied, which must equal the clients' count (window + one warm-up
push each). The ratio is the rate at the most clients over the rate at the fewest: above 1 the server
serves more updates when more clients push at once, below 1 contention costs more than the concurrency
brings. The counts run in --rounds interleaved rounds (1, 8, 32, 1, 8, 32, ...) and each count's rate is
the median of its rounds: on a shared machine one window's rate moves by 10% or more with the other load,
more than the counts differ.

    PYTHONPATH=. .venv/bin/python bench/ps_scaling.py [--quick] [--clients 1,8,32] [--seconds 5]
                                                      [--rounds 3] [--classes 40 | --params N] [--pull]
"""
from __future__ import annotations

import argparse
import os
import statistics

from bench import ps_load
from bench.ps_updates import measure_ps


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32",
                        help="comma-separated client counts, fewest first (default 1,8,32)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window per count (default 5)")
    ps_load.model_size_args(parser, 40, "output classes of the thesis CNN (default 40: 2.3M parameters, 9 MB)")
    parser.add_argument("--pull", action="store_true", help="each update pulls the weights first")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every count, interleaved; a count's rate is its median (default 3)")
    parser.add_argument("--quick", action="store_true", help="a 3 s window per count, one round")
    args = parser.parse_args(argv)
    try:
        args.counts = [int(c) for c in args.clients.split(",")]
    except ValueError:
        parser.error(f"--clients must be comma-separated integers, got {args.clients!r}")
    if len(args.counts) < 2 or min(args.counts) < 1 or args.counts != sorted(set(args.counts)):
        parser.error("--clients needs at least two distinct counts >= 1, fewest first")
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be > 0 and --rounds >= 1")
    if args.quick:
        args.seconds, args.rounds = min(args.seconds, 3.0), 1
    if args.params is not None:
        args.classes = ps_load.classes_for_params(args.params, args.bands)
    return args


def main(argv=None) -> float:
    args = parse_args(argv)
    shapes = ps_load.thesis_shapes(args.bands, args.classes)
    print(ps_load.describe(shapes, args.bands, args.classes))
    print(f"client counts {args.counts}, {args.seconds:g} s window each, {args.rounds} round(s) of every count, "
          f"{'pull + push' if args.pull else 'push'} per update, {os.cpu_count()} CPUs")
    rates: dict[int, list[float]] = {n: [] for n in args.counts}
    for r in range(args.rounds):
        for n in args.counts:
            result = measure_ps(shapes, n, args.seconds, args.pull)
            rates[n].append(result["per_s"])
            print(f"round {r + 1}, {n:>3} client(s): {ps_load.window_line(result, 'updates')}, "
                  f"steps per client {min(result['per_client'])}-{max(result['per_client'])}; "
                  f"server applied {result['applied']}, "
                  f"server CPU {1000 * result['server_cpu_s'] / max(1, result['applied']):.1f} ms per update")
            if result["applied"] != result["steps"] + n:  # one warm-up push per client, then the window
                print(f"warning: expected {result['steps'] + n} applied updates (window + warm-up)")
    median = {n: statistics.median(v) for n, v in rates.items()}
    for n in args.counts:
        print(f"{n:>3} client(s): median {median[n]:.2f} updates/s over {args.rounds} round(s)")
    for a, b in zip(args.counts, args.counts[1:]):
        print(f"{b} vs {a} clients: {median[b] / median[a]:.4f}")
    first, last = args.counts[0], args.counts[-1]
    ratio = median[last] / median[first]
    print("goal: none set; the ratio is reported (1.0: the same rate however many clients push at once)")
    print(f"RATIO ps_updates_per_s_{last}_vs_{first}_clients = {ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
