"""Does the land-cover CNN learn what the nearest-signature rule cannot? Both on the same held-out patches.

The simulated scene (rdd_io.landcover_scene) gives confusable classes correlated spectra, mixed pixels at
parcel edges, illumination and shadow, and sensor noise, so that a rule with no learning does poorly. This
script draws the job's patch sets from one scene (rdd_io.landcover_patches.draw_sets: training patches west
of the held-out region, test patches inside it, none overlapping), then on the same test patches:

  - the nearest-signature baseline: each test patch's centre spectrum (the 11 kept bands) gets the class of
    the nearest mean spectrum of the training set (models.landcover.nearest_signature);
  - the CNN: the job's model and training loop in this process (jobs.landcover_roles.train_cell, the
    single-machine arm), trained on the training set for --epochs, then evaluated once.

The last line is the CNN's held-out accuracy over the baseline's (measured on both sides, same patches).
Goal (issue 17): the baseline at most 0.5 and the CNN clearly above it (ratio >= 1.5 is called MET here).
Chance is 1/20 = 0.05.

    PYTHONPATH=. .venv/bin/python bench/landcover_learning.py --quick            # tiny preset, 2 epochs, ~15 s
    PYTHONPATH=. .venv/bin/python bench/landcover_learning.py --preset paper     # the job's paper data, ~10 min
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GOAL = 1.5
CHANCE = 1 / 20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper", help="preset of conf/landcover.yaml: scene, sets, model, training")
    parser.add_argument("--scene-size", type=int, help="ground-truth pixels per side (default: the preset's)")
    parser.add_argument("--per-class", type=int, help="training patches per class, one set (default: the preset's "
                        "sets, drawn as the job draws them; the largest is trained on)")
    parser.add_argument("--test-per-class", type=int, help="held-out patches per class (default: the preset's)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    parser.add_argument("--quick", action="store_true", help="tiny preset, 2 epochs at batch 50 (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.epochs, args.batch_size = "tiny", 2, 50
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from conf import CONF_DIR, load
    from jobs.landcover import LandcoverConfig, model_args
    from jobs.landcover_roles import train_cell
    from distributed.tf_process import quiet_tensorflow
    from models.landcover import nearest_signature
    from rdd_io import landcover_patches as lp
    from rdd_io.landcover_scene import make_scene

    given = {"data.scene_size": args.scene_size, "data.test_per_class": args.test_per_class,
             "train.epochs": args.epochs, "train.batch_size": args.batch_size,
             "data.sizes": None if args.per_class is None else f"[{20 * args.per_class}]"}
    cfg = load(LandcoverConfig, CONF_DIR / "landcover.yaml", args.preset,
               [f"{k}={v}" for k, v in given.items() if v is not None] + args.set)
    d = cfg.data
    n = max(d.sizes)  # the set the job's single-machine arm trains on
    scene = make_scene(d.scene_seed, (d.scene_size, d.scene_size), d.hsi_bands_in, test_fraction=d.test_fraction)
    rgb, hsi = lp.on_gt_grid(scene["rgb"], scene["hsi"], scene["gt"].shape, d.bands, d.hsi_bands_in)
    sets, reports = lp.draw_sets(scene["gt"], d.sizes, d.test_fraction, d.test_per_class, d.seed, d.patch)
    data = {key: lp.patch_arrays(rgb, hsi, sets[key], lp.labels_at(scene["gt"], sets[key]), d.patch)
            for key in (n, "test")}
    train, test = data[n], data["test"]
    print(f"scene {d.scene_size}x{d.scene_size} (seed {d.scene_seed}); {len(train['label'])} training patches, "
          f"{len(test['label'])} held-out patches ({len(np.unique(test['label']))} classes; absent from the "
          f"held-out region: {', '.join(reports['test']['absent']) or 'none'})")
    if reports[str(n)].get("with_replacement"):
        print("sampled with replacement: " + ", ".join(r["name"] for r in reports[str(n)]["with_replacement"]))

    c = d.patch // 2
    baseline = float(np.mean(nearest_signature(train["hsi"][:, c, c, :], train["label"],
                                               test["hsi"][:, c, c, :]) == test["label"]))
    print(f"nearest-signature baseline, held-out accuracy: {baseline:.3f} (chance {CHANCE:.2f})")

    tf = quiet_tensorflow(cfg.train.tf_threads)
    cell = {"id": "learning", "plan": "single machine", "batch_size": cfg.train.batch_size,
            "epochs": cfg.train.epochs, "test_uri": data["test"]}
    t0 = time.time()
    out = train_cell(tf, model_args(cfg), cell, train, cfg.train.seed,
                     report=lambda rec, end: end and print(
                         f"  epoch {rec['epoch']}/{rec['epochs']}: loss {rec['loss']:.3f}, training accuracy "
                         f"{rec['accuracy']:.3f} ({rec['epoch_time_s']:.1f} s)", flush=True))
    cnn = out["test_accuracy"]
    print(f"CNN ({args.preset} model, {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, "
          f"{time.time() - t0:.0f} s): training accuracy {out['accuracy'][-1]:.3f}, "
          f"held-out accuracy {cnn:.3f}, held-out loss {out['test_loss']:.3f}")
    ratio = cnn / baseline if baseline else float("inf")
    met = baseline <= 0.5 and ratio >= GOAL
    print(f"goal: baseline <= 0.5 and CNN >= {GOAL} x baseline: {'MET' if met else 'NOT MET'}")
    print(f"RATIO landcover_cnn_over_nearest_signature_held_out_accuracy = {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
