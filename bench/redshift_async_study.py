"""Why does different data learn slowly? The parameter server's rule, emulated in one process.

M workers, each with its own Keras model and optimizer, train on their shares (same: all N samples;
different: index = w mod M) and exchange with a parameter server that applies the job's own rule
(distributed.staleness.aggregate: W <- W - (1/s) * sum lambda(tau_j) dW_j). The schedule is the one of
M equally fast workers: a worker pushes when its unit of work (an epoch, or a batch) ends, waits until
its update is applied (s updates buffered), then pulls. Times are logical, so the result does not depend
on this machine's load; the real job adds timing jitter on top. Variants (--variants):

    epoch-s1     per-epoch updates, s = 1, lambda = 1/tau   (the job's default; the thesis's text)
    batch-s1     per-batch updates, s = 1, lambda = 1/tau   (Zhang et al.: lr / staleness per gradient step)
    epoch-sM     per-epoch updates, s = M (synchronous averaging of the M epoch deltas)
    epoch-const  per-epoch updates, s = 1, lambda = 1       (no staleness scaling)
    batch-const  per-batch updates, s = 1, lambda = 1

Prints each worker's training accuracy after epochs 1..E (an epoch = one pass over the worker's own
share, as in the job and the thesis), the samples each worker had trained on by then, and the
sequential CNN's curve on all N. Last line: accuracy at --at-epoch, different data, batch-s1 / epoch-s1.

    PYTHONPATH=. .venv/bin/python bench/redshift_async_study.py [--quick] [--n 15000] [--workers 3]
                                        [--epochs 8] [--modes same,different] [--set data.bands=450 ...]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

VARIANTS = {"epoch-s1": ("epoch", 1, "inverse"), "batch-s1": ("batch", 1, "inverse"),
            "epoch-sM": ("epoch", None, "inverse"), "epoch-const": ("epoch", 1, "constant"),
            "batch-const": ("batch", 1, "constant")}


def emulate(make_model, x, y, shares, unit: str, s: int, schedule: str, epochs: int, batch_size: int,
            seed: int) -> dict:
    """Accuracy per worker per epoch and staleness per update under the equal-speed schedule."""
    from distributed.staleness import aggregate
    from distributed.async_training import train_epoch
    from distributed.epochs import epoch_rng
    m = len(shares)
    ps_model = make_model(seed)
    weights, version = ps_model.get_weights(), 0
    models = [make_model(seed + 1 + w) for w in range(m)]
    clock = [w * 1e-3 for w in range(m)]  # equal speeds; ties broken by worker index
    read = [0] * m
    for mdl in models:
        mdl.set_weights(weights)
    buffer, taus, history = [], [], [{"accuracy": [], "samples": []} for _ in range(m)]
    def units(w):
        """A worker's training, yielding after each unit that ends in a push (an epoch or a batch)."""
        xs, ys = x[shares[w]], y[shares[w]]
        seen = 0
        for epoch in range(epochs):
            rng = epoch_rng(seed + 1 + w, epoch)
            if unit == "epoch":
                acc, _ = train_epoch(models[w], xs, ys, batch_size, rng)
                seen += len(ys)
                history[w]["accuracy"].append(acc)
                history[w]["samples"].append(seen)
                yield
            else:
                order = rng.permutation(len(ys))
                correct = 0.0
                for start in range(0, len(ys), batch_size):
                    idx = np.sort(order[start:start + batch_size])
                    out = models[w].train_on_batch(xs[idx], ys[idx], return_dict=True)
                    correct += float(out["accuracy"]) * len(idx)
                    seen += len(idx)
                    yield
                history[w]["accuracy"].append(correct / len(ys))
                history[w]["samples"].append(seen)
    work = [units(w) for w in range(m)]
    waiting, done = set(), set()
    while len(done) < m:
        w = min((v for v in range(m) if v not in waiting and v not in done), key=lambda v: clock[v])
        start_weights = [a.copy() for a in models[w].get_weights()]
        try:
            next(work[w])
        except StopIteration:
            done.add(w)
            s_eff = min(s, m - len(done))
            if buffer and len(buffer) >= max(1, s_eff):
                weights, version = _apply(aggregate, weights, version, buffer, s_eff, schedule, taus)
                for v in [b[0] for b in buffer]:
                    models[v].set_weights(weights)
                    read[v] = version
                    waiting.discard(v)
                buffer = []
            continue
        clock[w] += 1.0
        delta = [a - b for a, b in zip(start_weights, models[w].get_weights())]
        buffer.append((w, delta, version - read[w]))
        waiting.add(w)
        s_eff = min(s, m - len(done))
        if len(buffer) >= s_eff:
            released = [b[0] for b in buffer]
            weights, version = _apply(aggregate, weights, version, buffer, s_eff, schedule, taus)
            buffer = []
            t = max(clock[v] for v in released)
            for v in released:
                models[v].set_weights(weights)
                read[v], clock[v] = version, t
                waiting.discard(v)
    return {"workers": history, "taus": taus}


def _apply(aggregate, weights, version, buffer, s_eff, schedule, taus):
    taus.extend(b[2] for b in buffer)
    return aggregate(weights, [b[1] for b in buffer], [b[2] for b in buffer], len(buffer), schedule), version + 1


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; --quick picks the tiny model and, unless --n is given, 1500 samples."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="samples (default 15000; 1500 with --quick)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--at-epoch", type=int, default=4)
    parser.add_argument("--modes", default="same,different")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", metavar="PATH", help="also write every curve here")
    parser.add_argument("--no-sequential", action="store_true", help="leave out the sequential reference")
    parser.add_argument("--quick", action="store_true",
                        help="the tiny model (450 bands, 40 classes, lr 0.001) on 1500 samples unless --n is given")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 1500 if args.quick else 15000
    if args.quick:
        args.set = ["data.bands=450", "data.n_classes=40", "data.snr=20.0", "model.learning_rate=0.001"] + args.set
    return args


def main(argv=None) -> float:
    args = parse_args(argv)
    from conf import CONF_DIR, load
    from jobs.redshift_config import RedshiftConfig, model_args
    from distributed.tf_process import quiet_tensorflow
    from distributed.async_training import fit_sequential
    from jobs.redshift_roles import new_model
    from bench.redshift_target import simulate_like_job
    cfg = load(RedshiftConfig, CONF_DIR / "redshift.yaml", args.preset, args.set)
    quiet_tensorflow(cfg.train.tf_threads)
    x, y = simulate_like_job(cfg.data, args.n)
    margs = model_args(cfg)
    make = lambda seed: new_model(margs, seed)  # noqa: E731
    bs, seed, m = cfg.train.batch_size, cfg.train.seed, args.workers
    print(f"n={args.n} bands={cfg.data.bands} classes={cfg.data.n_classes} M={m} epochs={args.epochs} "
          f"batch={bs} lr={cfg.model.learning_rate} optimizer={cfg.model.optimizer}", flush=True)
    started = time.monotonic()
    base = [] if args.no_sequential else fit_sequential(make(seed), x, y, args.epochs, bs, seed + 1)["accuracy"]
    print(f"sequential (all {args.n}): " + " ".join(f"{a:.3f}" for a in base)
          + f"   [{time.monotonic() - started:.0f}s]", flush=True)
    results = {"config": {"n": args.n, "workers": m, "epochs": args.epochs, "bands": cfg.data.bands,
                          "classes": cfg.data.n_classes, "lr": cfg.model.learning_rate},
               "sequential": base, "runs": {}}
    for mode in args.modes.split(","):
        shares = [np.arange(args.n) if mode == "same" else np.arange(w, args.n, m) for w in range(m)]
        for name in args.variants.split(","):
            unit, s, schedule = VARIANTS[name]
            started = time.monotonic()
            out = emulate(make, x, y, shares, unit, s or m, schedule, args.epochs, bs, seed)
            results["runs"][f"{mode}/{name}"] = out
            taus = out["taus"]
            print(f"{mode:9s} {name:11s} tau mean {np.mean(taus):.2f} max {max(taus)} "
                  f"[{time.monotonic() - started:.0f}s]", flush=True)
            for w, h in enumerate(out["workers"]):
                print(f"    worker {w}: " + " ".join(f"{a:.3f}" for a in h["accuracy"])
                      + f"   samples by epoch {args.at_epoch}: {h['samples'][args.at_epoch - 1]}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh)
    runs = results["runs"]
    k = args.at_epoch - 1
    if "different/batch-s1" in runs and "different/epoch-s1" in runs:
        mean_at = lambda r: float(np.mean([h["accuracy"][k] for h in runs[r]["workers"]]))  # noqa: E731
        ratio = mean_at("different/batch-s1") / mean_at("different/epoch-s1")
        print(f"RATIO different_data_accuracy_epoch{args.at_epoch}_batch_s1_over_epoch_s1 = {ratio:.4f}")
        return ratio
    return float("nan")


if __name__ == "__main__":
    main()
