"""Scores for the Dom-ST case study, pure numpy (no TensorFlow): NSE, a peak-flow error, the share of
watersheds where one approach beats another, and planted-versus-learned correlations."""
from __future__ import annotations

import math

import numpy as np


def _pairs(a, b, what: str):
    """Both as float arrays with the pairs where either is NaN dropped."""
    a = np.asarray(a, float).reshape(-1)
    b = np.asarray(b, float).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"{what}: lengths differ ({a.size} vs {b.size})")
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def nse(sim, obs) -> float:
    """Nash-Sutcliffe efficiency 1 - sum((sim-obs)^2) / sum((obs-mean(obs))^2) over the pairs where
    neither is NaN. 1 is perfect, 0 is as good as the observed mean. Fewer than 2 pairs or a constant
    observed series leave it undefined: ValueError."""
    s, o = _pairs(sim, obs, "nse")
    if s.size < 2:
        raise ValueError(f"nse: {s.size} valid (sim, obs) pairs, at least 2 needed")
    denom = float(np.sum((o - o.mean()) ** 2))
    if denom == 0.0:
        raise ValueError(f"nse: the observed series is constant ({o[0]:g}) over {o.size} days; NSE is undefined")
    return 1.0 - float(np.sum((s - o) ** 2)) / denom


def peak_flow_error(sim, obs, top: float = 0.05, signed: bool = False) -> float:
    """Relative error on peak flows: on the ceil(top * n) days with the highest observed flow (n valid
    pairs), sum(|sim - obs|) / sum(obs); 0 is perfect. With signed=True, sum(sim - obs) / sum(obs), which
    is negative when the peaks are underpredicted."""
    if not 0 < top <= 1:
        raise ValueError(f"peak_flow_error: top={top} must be in (0, 1]")
    s, o = _pairs(sim, obs, "peak_flow_error")
    if s.size == 0:
        raise ValueError("peak_flow_error: no valid (sim, obs) pairs")
    k = max(1, math.ceil(top * s.size))
    idx = np.argsort(o, kind="stable")[-k:]
    total = float(np.sum(o[idx]))
    if total <= 0:
        raise ValueError("peak_flow_error: the highest observed flows sum to zero")
    diff = s[idx] - o[idx]
    return float(np.sum(diff) if signed else np.sum(np.abs(diff))) / total


def share_better(a, b) -> float:
    """Share of watersheds where score a is strictly higher than score b (ties are not wins); watersheds
    where either score is NaN are left out."""
    x, y = _pairs(a, b, "share_better")
    if x.size == 0:
        raise ValueError("share_better: no watershed has both scores")
    return float(np.mean(x > y))


def share_best(a, *others) -> float:
    """Share of watersheds where score a is strictly higher than every one of `others`."""
    if not others:
        raise ValueError("share_best: give at least one score to beat")
    stack = np.vstack([np.asarray(v, float).reshape(-1) for v in (a, *others)])
    keep = ~np.isnan(stack).any(axis=0)
    if not keep.any():
        raise ValueError("share_best: no watershed has all scores")
    stack = stack[:, keep]
    return float(np.mean((stack[0] > stack[1:]).all(axis=0)))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the mean of their ranks (as Spearman's rho needs)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1, x.size + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float(np.sum(x * y) / math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y))))


def correlation(planted, learned) -> dict:
    """Pearson and Spearman correlation of planted values (runoff coefficients) with learned ones
    (Pix-Con weights), NaN pairs dropped -> {'pearson', 'spearman', 'n'}."""
    x, y = _pairs(planted, learned, "correlation")
    if x.size < 3:
        raise ValueError(f"correlation: {x.size} valid pairs, at least 3 needed")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("correlation: one of the series is constant; correlation is undefined")
    return {"pearson": _pearson(x, y), "spearman": _pearson(_ranks(x), _ranks(y)), "n": int(x.size)}


def relative_gain(new: float | None, base: float | None) -> float | None:
    """(new - base) / |base|: the relative improvement of a score whose baseline may be negative (NSE);
    None when either is missing or the baseline is 0."""
    if new is None or base is None or not math.isfinite(new) or not math.isfinite(base) or base == 0:
        return None
    return (new - base) / abs(base)


def within_groups(planted, learned, groups) -> float | None:
    """Mean Spearman of learned vs planted inside each group (index arrays) of 3 or more pixels whose
    values are not constant: the part of a pixel weighting a per-group scale cannot hide. None if none."""
    planted, learned = np.asarray(planted, float), np.asarray(learned, float)
    found = []
    for g in groups:
        try:
            found.append(correlation(planted[g], learned[g])["spearman"])
        except ValueError:  # fewer than 3 pixels or constant: no order inside
            continue
    return float(np.mean(found)) if found else None
