"""Staleness-aware aggregation for the asynchronous parameter server (pure numpy).

The server waits for ``s`` updates and applies

    W <- W - (1/s) * sum_j lambda(tau_j) * dW_j

where tau_j is how many versions the server moved on since worker j read its
weights (Zhang et al. 2016, "Staleness-aware async-SGD", n-softsync).  A delta is
``dW = W_read - W_after_local_training``, so one delta alone with lambda = 1 and
s = 1 moves the server exactly onto the worker's local weights.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

SCHEDULES = ("inverse", "constant", "exponential")
DEFAULT_EXPONENTIAL_BASE = 0.5


def _check_tau(tau) -> int:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Integral):
        raise ValueError(f"staleness tau must be an integer, got {tau!r}")
    if tau < 0:
        raise ValueError(f"staleness tau must be >= 0, got {tau}")
    return int(tau)


def staleness_factor(tau, schedule: str = "inverse",
                     base: float = DEFAULT_EXPONENTIAL_BASE) -> float:
    """lambda(tau): the weight given to an update that is ``tau`` versions old.

    'inverse'     1/tau for tau >= 1, 1 for tau = 0 (the default, n-softsync)
    'constant'    always 1 (plain asynchronous SGD, staleness ignored)
    'exponential' base**tau with 0 < base <= 1
    """
    tau = _check_tau(tau)
    if schedule == "inverse":
        return 1.0 if tau == 0 else 1.0 / tau
    if schedule == "constant":
        return 1.0
    if schedule == "exponential":
        if not 0.0 < base <= 1.0:
            raise ValueError(f"exponential staleness base must be in (0, 1], got {base!r}")
        return float(base) ** tau
    raise ValueError(f"unknown staleness schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def aggregate(weights: Sequence[np.ndarray], deltas: Sequence[Sequence[np.ndarray]],
              taus: Sequence[int], s: int, schedule: str = "inverse",
              base: float = DEFAULT_EXPONENTIAL_BASE) -> list[np.ndarray]:
    """Return new weights W - (1/s) * sum_j lambda(tau_j) * dW_j; inputs are not modified.

    ``weights`` is a list of arrays; each element of ``deltas`` is a list with the
    same number of arrays and the same shapes.  The result keeps each weight's dtype.
    """
    if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
        raise ValueError(f"s (updates per aggregate) must be an integer >= 1, got {s!r}")
    if len(deltas) != len(taus):
        raise ValueError(f"got {len(deltas)} deltas but {len(taus)} staleness values")
    lambdas = [staleness_factor(t, schedule, base) for t in taus]
    weights = [np.asarray(w) for w in weights]
    for j, delta in enumerate(deltas):
        if len(delta) != len(weights):
            raise ValueError(f"delta {j} has {len(delta)} tensors, the weights have {len(weights)}")
        for i, (w, d) in enumerate(zip(weights, delta)):
            if np.shape(d) != w.shape:
                raise ValueError(f"delta {j}, tensor {i}: shape {tuple(np.shape(d))} "
                                 f"does not match weight shape {w.shape}")
    new_weights = []
    for i, w in enumerate(weights):
        # Accumulate in float64 so the order of the s updates changes nothing beyond the
        # final rounding to the weight's dtype; `out=` buffers keep large models from
        # paying for a fresh temporary per operation.
        total = np.zeros(w.shape, dtype=np.float64)
        scratch = np.empty(w.shape, dtype=np.float64) if len(deltas) > 1 else total
        for lam, delta in zip(lambdas, deltas):
            np.multiply(delta[i], lam, out=scratch, dtype=np.float64)
            if scratch is not total:
                total += scratch
        total /= s
        np.subtract(w, total, out=total, dtype=np.float64)
        new_weights.append(total.astype(w.dtype, copy=False))
    return new_weights


CHUNK = 1 << 18  # elements per pass of aggregate_into: each chunk stays in cache across its passes


def aggregate_into(out: Sequence[np.ndarray], weights: Sequence[np.ndarray],
                   deltas: Sequence[Sequence[np.ndarray]], taus: Sequence[int], s: int,
                   schedule: str = "inverse", base: float = DEFAULT_EXPONENTIAL_BASE) -> None:
    """aggregate()'s rule written into `out` (arrays of the weights' shapes and dtypes), computed in
    the weights' own dtype: out = sum_j (-lambda_j / s) * dW_j, then out += W, chunk by chunk.

    `out` may be deltas[0] (updated in place); no other delta may share its memory. The deltas are
    summed before W is added, so an aggregate is lost to rounding only where aggregate()'s float64
    sum, rounded to the weights' dtype, is lost too; each weight differs from aggregate()'s by at
    most a rounding or two in its dtype. Scratch: one chunk; numpy releases the GIL in each pass."""
    if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
        raise ValueError(f"s (updates per aggregate) must be an integer >= 1, got {s!r}")
    if len(deltas) != len(taus) or not deltas:
        raise ValueError(f"got {len(deltas)} deltas and {len(taus)} staleness values (at least one each)")
    coeffs = [-staleness_factor(t, schedule, base) / s for t in taus]
    scratch = None
    for i, (o, w) in enumerate(zip(out, weights)):
        if o.shape != w.shape or any(np.shape(d[i]) != w.shape for d in deltas):
            raise ValueError(f"tensor {i}: out, weights and deltas must share the shape {w.shape}")
        flat_o, flat_w = o.reshape(-1), w.reshape(-1)
        flat_d = [np.asarray(d[i]).reshape(-1) for d in deltas]
        for a in range(0, flat_o.size, CHUNK):
            b = min(a + CHUNK, flat_o.size)
            chunk = flat_o[a:b]
            np.multiply(flat_d[0][a:b], coeffs[0], out=chunk)
            for c, d in zip(coeffs[1:], flat_d[1:]):
                if scratch is None or scratch.dtype != chunk.dtype:
                    scratch = np.empty(CHUNK, chunk.dtype)
                part = scratch[:b - a]
                np.multiply(d[a:b], c, out=part)
                chunk += part
            chunk += flat_w[a:b]
