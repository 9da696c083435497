"""Can Pix-Con's weights be read as the planted runoff coefficients? Side by side, in one process.

On a simulated region (rdd_io.domst_sim plants a runoff coefficient per pixel), trains Dom-ST on each
watershed under three designs and correlates the learned pixel weights with the planted coefficients
(Spearman, per watershed; the median over watersheds is the figure):

- pixels:        the paper's multichannel heads (each pixel of a group one input channel); partition by
                 distance quantiles. A head's convolution has one kernel slice per pixel, so scaling w_p
                 by c and that slice by 1/c changes nothing: only the target-day path sees w_p.
- weighted_sum:  each head takes its group's Pix-Con-weighted mean as one channel, so no layer after
                 Pix-Con can undo a single pixel's weight; partition by distance quantiles.
- dynamic:       weighted_sum heads, groups re-cut every epoch from the learned weights.
- weighted_sum_k1: weighted_sum with one head: nothing after Pix-Con has a per-group weight.
- distance_fn:   weighted_sum heads, Pix-Con a function of distance alone (pixel_weights: distance: one
                 offset and one slope instead of an offset per pixel).
- distance_fn_k1: distance_fn with one head: two free parameters, no per-group scale to absorb them.

Every layer after a head has weights of its own for that head's output (and ReLU is positively
homogeneous), so a common scale of one group's weights is absorbed there: with K heads only the ratios
inside a group are identifiable. Besides the Spearman over the whole watershed, the bench reports it
inside each distance group (mean over groups of 3 or more pixels), the part the design can identify.

The same training code as the job (jobs.domst_roles.train_one), no Spark. It also reports the learned
weights' correlation with distance to water, since the planted coefficients fall with it.

    PYTHONPATH=. .venv/bin/python bench/domst_pixcon.py [--quick] [--watersheds 8] [--years 4] [--epochs 15]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

DESIGNS = {"pixels": {}, "weighted_sum": {"head_input": "weighted_sum"},
           "dynamic": {"head_input": "weighted_sum", "partition": "dynamic"},
           "weighted_sum_k1": {"head_input": "weighted_sum", "k_groups": 1},
           "distance_fn": {"head_input": "weighted_sum", "pixel_weights": "distance"},
           "distance_fn_k1": {"head_input": "weighted_sum", "pixel_weights": "distance", "k_groups": 1}}
GOAL = 0.6


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=3, help="region seed (the job's default: 3)")
    parser.add_argument("--years", type=int, default=4)
    parser.add_argument("--watersheds", type=int, default=8, help="watersheds trained (the largest of 23)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--designs", default=",".join(DESIGNS), help=f"comma-separated, of {list(DESIGNS)}")
    parser.add_argument("--quick", action="store_true", help="2 years, 3 watersheds, 4 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.years, args.watersheds, args.epochs = 2, 3, 4
    args.designs = args.designs.split(",")
    unknown = set(args.designs) - set(DESIGNS)
    if unknown:
        parser.error(f"--designs: unknown {sorted(unknown)}")
    return args


def watersheds(region: dict, n: int) -> list[tuple[int, np.ndarray]]:
    """(index, flat pixels) of the n largest watersheds."""
    sizes = [(int((region["label"] == w).sum()), w) for w in range(len(region["site_no"]))]
    return [(w, np.flatnonzero(region["label"].ravel() == w)) for _, w in sorted(sizes, reverse=True)[:n]]


def main(argv=None) -> dict:
    args = parse_args(argv)
    from jobs.domst_roles import prepare_samples, train_one
    from rdd_io.domst_bundle import bundle_bytes, read_bundle
    from models.domst import partition
    from models.domst_metrics import correlation, within_groups
    from rdd_io.domst_read import align
    from rdd_io.domst_sim import simulate_region
    region = simulate_region(seed=args.seed, years=args.years)
    coef, dist = region["truth"]["runoff_coef"].reshape(-1), region["distance_km"].reshape(-1)
    model = dict(filters=[16], kernel_size=3, lstm_units=[32], dense_units=[16], k_groups=4, dropout=0.1,
                 learning_rate=2e-3, target_units=8, head_input="pixels", partition="distance",
                 pixel_weights="per_pixel")
    from dataclasses import replace

    from conf import CONF_DIR, load
    from jobs.domst_config import DomstConfig
    train = replace(load(DomstConfig, CONF_DIR / "domst.yaml", "paper").train, epochs=args.epochs, patience=4,
                    batch_size=64, checkpoint_every=0)
    found = {d: {"spearman": [], "within": [], "distance": [], "nse": []} for d in args.designs}
    started = time.monotonic()
    for w, pixels in watersheds(region, args.watersheds):
        aligned = align(region["dates"], region["precip"], pixels, region["dates"], region["discharge_m3s"][w],
                        watershed=f"W{w + 1:02d}")
        bundle = read_bundle(bundle_bytes(aligned, dist[pixels], pixels, region["site_no"][w]), "bench")
        samples = prepare_samples(bundle, 30, 0.6, 0.2)
        for design in args.designs:
            k = min(DESIGNS[design].get("k_groups", 4), len(pixels))
            cfg = {**model, **DESIGNS[design], "lookback": 30, "pixels": len(pixels), "k_groups": k,
                   "distance": dist[pixels].tolist()}
            score = train_one("domst", cfg, samples, train, seed=w)
            learned = np.asarray(score["pixcon"])
            r = correlation(coef[pixels], learned)["spearman"]
            r_d = correlation(dist[pixels], learned)["spearman"]
            r_in = within_groups(coef[pixels], learned, partition(dist[pixels], k))
            r_in = float("nan") if r_in is None else r_in
            for key, v in (("spearman", r), ("within", r_in), ("distance", r_d), ("nse", score["nse"])):
                found[design][key].append(v)
            print(f"W{w + 1:02d} ({len(pixels):3d} px) {design:>15}: Spearman vs planted {r:+.2f} (inside distance "
                  f"groups {r_in:+.2f}), vs distance {r_d:+.2f}, NSE {score['nse']:.3f}, {score['epochs']} epochs",
                  flush=True)
    planted_vs_distance = statistics.median(correlation(coef[p], dist[p])["spearman"]
                                            for _, p in watersheds(region, args.watersheds))
    print(f"planted coefficients vs distance to water: median Spearman {planted_vs_distance:+.2f}")
    out = {}
    for design, v in found.items():
        out[design] = {k: statistics.median(x) for k, x in v.items()}
        print(f"{design:>15}: median Spearman vs planted {out[design]['spearman']:+.2f} (goal >= {GOAL}; inside "
              f"distance groups {out[design]['within']:+.2f}), vs distance {out[design]['distance']:+.2f}, median "
              f"NSE {out[design]['nse']:.3f}")
    print(f"{time.monotonic() - started:.0f} s")
    for design in out:
        print(f"RATIO domst_pixcon_spearman_{design} = {out[design]['spearman']:.4f}")
    return out


if __name__ == "__main__":
    main()
