"""A residual network of 3D convolutions for volume segmentation, split in space and in depth.

    h_0     = relu(conv_k(x; W_open) + b_open)                  (1 input channel -> C)
    h_{i+1} = h_i + dt relu(conv_k(h_i; W_i) + b_i),  i < L      (the layers as time steps, dt = T / L)
    logit   = h_L . w_close + b_close                            (pointwise, C -> 1)
    loss    = mean over voxels of the sigmoid cross-entropy against the 0/1 mask

One `Process` is one process of a P_s x P_t grid: it holds the sub-volume `s` of the layers of group `t`
(rank = t P_s + s). Every convolution pads its block by halo exchange with the space neighbours
(distributed/halo.py); the layers are propagated forward and the adjoint backward by MGRIT across the
time groups (distributed/mgrit.py; serial when P_t = 1); parameter gradients are summed over the
space group. With P_s = P_t = 1 it is the plain serial network. `reference_loss_and_grads` is the same
network in plain TensorFlow ('same' padding, autodiff), what the decomposed one must equal.

TensorFlow is imported inside the functions (they run on executors).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from distributed import halo
from distributed.mgrit import Solver, check_levels


@dataclass(frozen=True)
class NetSpec:
    channels: int
    kernel: int
    layers: int           # L, residual layers in total
    t_final: float = 1.0  # dt = t_final / layers

    @property
    def r(self) -> int:
        return (self.kernel - 1) // 2

    @property
    def dt(self) -> float:
        return self.t_final / self.layers


@dataclass(frozen=True)
class MgritSpec:
    coarsening: int = 2
    levels: int = 2
    iterations: int = 2
    fcf: bool = True


@dataclass(frozen=True)
class Layout:
    """One process's place: spatial volume `shape` on `grid` blocks (P_s of them), P_t layer groups."""
    shape: tuple
    grid: tuple
    p_t: int
    rank: int

    @property
    def p_s(self) -> int:
        return int(np.prod(self.grid))

    @property
    def s(self) -> int:
        return self.rank % self.p_s

    @property
    def t(self) -> int:
        return self.rank // self.p_s

    def comm_rank(self, s: int, t: int) -> int:
        return t * self.p_s + s

    @property
    def space_group(self) -> list[int]:
        return [self.comm_rank(s, self.t) for s in range(self.p_s)]

    @property
    def nbrs(self):
        return tuple(tuple(None if n is None else self.comm_rank(n, self.t) for n in pair)
                     for pair in halo.neighbours(self.s, self.grid))

    @property
    def prev(self) -> int | None:
        return self.comm_rank(self.s, self.t - 1) if self.t > 0 else None

    @property
    def next(self) -> int | None:
        return self.comm_rank(self.s, self.t + 1) if self.t < self.p_t - 1 else None


def init_params(spec: NetSpec, seed: int) -> dict[str, np.ndarray]:
    """Every parameter of the network (each process draws all and trains its own)."""
    rng = np.random.default_rng(seed)
    k, C, L = spec.kernel, spec.channels, spec.layers
    fan = lambda cin: np.sqrt(2.0 / (k ** 3 * cin))  # noqa: E731
    return {"open_w": (rng.normal(size=(k, k, k, 1, C)) * fan(1)).astype(np.float32),
            "open_b": np.full(C, 0.01, np.float32),
            "res_w": (rng.normal(size=(L, k, k, k, C, C)) * fan(C)).astype(np.float32),
            "res_b": np.zeros((L, C), np.float32),
            "close_w": (rng.normal(size=C) / np.sqrt(C)).astype(np.float32),
            "close_b": np.zeros((), np.float32)}


@functools.lru_cache(maxsize=1)
def _ops():
    """The TensorFlow pieces, compiled once per process."""
    import tensorflow as tf

    def conv(xp, w, b):
        return tf.nn.conv3d(xp, w, strides=[1] * 5, padding="VALID") + b

    @tf.function(reduce_retracing=True)
    def layer(xp, w, b):
        return tf.nn.relu(conv(xp, w, b))

    @tf.function(reduce_retracing=True)
    def layer_vjp_input(xp, w, b, gy):
        with tf.GradientTape() as tape:
            tape.watch(xp)
            y = tf.nn.relu(conv(xp, w, b))
        return tape.gradient(y, xp, output_gradients=gy)

    @tf.function(reduce_retracing=True)
    def layer_vjp_params(xp, w, b, gy):
        with tf.GradientTape() as tape:
            tape.watch([w, b])
            y = tf.nn.relu(conv(xp, w, b))
        return tape.gradient(y, [w, b], output_gradients=gy)

    return layer, layer_vjp_input, layer_vjp_params


def _np(t) -> np.ndarray:
    return np.asarray(t.numpy() if hasattr(t, "numpy") else t, np.float32)


def bce_with_logits(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-voxel sigmoid cross-entropy, stable for large |logits|."""
    return np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))


def allreduce(comm, group: list[int], me: int, arrays: list[np.ndarray], tag: str = "reduce") -> list[np.ndarray]:
    """Sum of `arrays` over the ranks of `group`, the same bits on every member (summed in rank order)."""
    if len(group) == 1:
        return arrays
    flat = np.concatenate([np.ravel(a).astype(np.float64) for a in arrays]) if arrays else np.zeros(0)
    for peer in group:
        if peer != me:
            comm.send(peer, tag, flat)
    total = np.zeros_like(flat)
    for peer in group:
        total += flat if peer == me else comm.recv(peer, tag)
    out, offset = [], 0
    for a in arrays:
        size = int(np.size(a))
        out.append(total[offset:offset + size].reshape(np.shape(a)).astype(np.float32))
        offset += size
    return out


@dataclass
class StepStats:
    loss_sum: float = 0.0
    residuals_forward: list = field(default_factory=list)   # local squared C-point residual per iteration
    residuals_adjoint: list = field(default_factory=list)
    steps_forward: int = 0
    steps_adjoint: int = 0


class Process:
    """One process's share of the network: its layers, its sub-volume, its messages."""

    def __init__(self, spec: NetSpec, mgrit: MgritSpec, layout: Layout, comm, params: dict[str, np.ndarray]):
        self.spec, self.mgrit, self.layout, self.comm = spec, mgrit, layout, comm
        self.params = params
        if spec.layers % layout.p_t:
            raise ValueError(f"{spec.layers} layers do not split into {layout.p_t} equal groups")
        self.n = spec.layers // layout.p_t
        self.levels = mgrit.levels if layout.p_t > 1 else 1
        check_levels(self.n, mgrit.coarsening, self.levels)
        halo.check_halo(layout.shape, layout.grid, spec.r)
        self.first = layout.t * self.n            # global index of this process's first layer
        self._warm_forward: list | None = None    # last step's states: the next step's initial guess
        self._warm_adjoint: list | None = None
        self.halo_exchanges: dict[int, int] = {}  # channels -> exchanges (and adjoint exchanges) so far

    # -------------------------------------------------------------------- ownership
    def owned(self) -> list[str]:
        names = ["res_w", "res_b"]
        if self.layout.t == 0:
            names += ["open_w", "open_b"]
        if self.layout.t == self.layout.p_t - 1:
            names += ["close_w", "close_b"]
        return names

    def _own_slice(self, name: str, value: np.ndarray) -> np.ndarray:
        return value[self.first:self.first + self.n] if name.startswith("res_") else value

    # -------------------------------------------------------------------- pieces
    def _count(self, channels: int) -> None:
        self.halo_exchanges[channels] = self.halo_exchanges.get(channels, 0) + 1

    def _exchange(self, x):
        self._count(x.shape[-1])
        return halo.exchange(x, self.spec.r, self.layout.nbrs, self.comm)

    def _exchange_adjoint(self, g):
        self._count(g.shape[-1])
        return halo.exchange_adjoint(g, self.spec.r, self.layout.nbrs, self.comm)

    def _forward_step(self, level: int, j: int, x):
        layer, _, _ = _ops()
        c = self.mgrit.coarsening ** level
        i = self.first + j * c
        return x + (self.spec.dt * c) * _np(layer(self._exchange(x), self.params["res_w"][i], self.params["res_b"][i]))

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, iterations: int | None = None,
                       warm: bool = True) -> tuple[dict[str, np.ndarray], StepStats, np.ndarray | None]:
        """Forward and backward over the whole network for this process's block of a batch (x: N, d, h, w,
        1; y: the 0/1 mask of the same block). Returns this process's parameter gradients (summed over its
        space group; `res_*` for its own layers), statistics, and its logits block (last group only)."""
        layer, vjp_input, vjp_params = _ops()
        spec, lay, comm, n = self.spec, self.layout, self.comm, self.n
        iterations = self.mgrit.iterations if iterations is None else iterations
        c, stats = self.mgrit.coarsening, StepStats()
        total_voxels = x.shape[0] * int(np.prod(lay.shape))
        state_shape = x.shape[:-1] + (spec.channels,)

        # forward: the opening layer on the first group, then MGRIT over the residual layers
        xp = None
        u = list(self._warm_forward) if (warm and self._warm_forward) else [np.zeros(state_shape, np.float32)] * (n + 1)
        if lay.t == 0:
            xp = self._exchange(x)
            u[0] = _np(layer(xp, self.params["open_w"], self.params["open_b"]))
        solver = Solver(self._forward_step, comm, lay.prev, lay.next, c, self.levels, self.mgrit.fcf, "mgrit-f")
        stats.residuals_forward = solver.solve(u, iterations)
        stats.steps_forward = solver.steps_evaluated
        self._warm_forward = list(u)

        # loss and the adjoint's start on the last group
        grads: dict[str, np.ndarray] = {}
        logits = None
        lam = [np.zeros(state_shape, np.float32)] * (n + 1)
        if lay.t == lay.p_t - 1:
            h_out = u[n]
            logits = h_out @ self.params["close_w"] + self.params["close_b"]
            target = y[..., 0].astype(np.float32)
            stats.loss_sum = float(np.sum(bce_with_logits(logits, target), dtype=np.float64))
            dlogit = ((1.0 / (1.0 + np.exp(-logits))) - target) / total_voxels
            grads["close_w"] = np.sum(h_out * dlogit[..., None], axis=(0, 1, 2, 3), dtype=np.float64).astype(np.float32)
            grads["close_b"] = np.asarray(np.sum(dlogit), np.float32)
            lam[n] = (dlogit[..., None] * self.params["close_w"]).astype(np.float32)

        # backward: the adjoint recurrence lam_i = lam_{i+1} + dt J_i^T lam_{i+1}, by MGRIT in reverse
        padded = [self._exchange(u[j]) for j in range(n)]  # the linearisation points, halos included

        def adjoint_step(level: int, j: int, w):
            scale = c ** level
            jf = (n // scale - 1 - j) * scale  # the forward step this reversed step linearises
            i = self.first + jf
            g = _np(vjp_input(padded[jf], self.params["res_w"][i], self.params["res_b"][i], w))
            return w + (spec.dt * scale) * self._exchange_adjoint(g)

        rev = list(self._warm_adjoint) if (warm and self._warm_adjoint) else list(reversed(lam))
        if lay.t == lay.p_t - 1:
            rev[0] = lam[n]
        adjoint = Solver(adjoint_step, comm, lay.next, lay.prev, c, self.levels, self.mgrit.fcf, "mgrit-a")
        stats.residuals_adjoint = adjoint.solve(rev, iterations)
        stats.steps_adjoint = adjoint.steps_evaluated
        self._warm_adjoint = list(rev)
        lam = list(reversed(rev))

        gw = np.zeros((n,) + self.params["res_w"].shape[1:], np.float32)
        gb = np.zeros((n, spec.channels), np.float32)
        for j in range(n):
            i = self.first + j
            w_grad, b_grad = vjp_params(padded[j], self.params["res_w"][i], self.params["res_b"][i], lam[j + 1])
            gw[j], gb[j] = spec.dt * _np(w_grad), spec.dt * _np(b_grad)
        grads["res_w"], grads["res_b"] = gw, gb
        if lay.t == 0:
            w_grad, b_grad = vjp_params(xp, self.params["open_w"], self.params["open_b"], lam[0])
            grads["open_w"], grads["open_b"] = _np(w_grad), _np(b_grad)

        names = sorted(grads)
        summed = allreduce(comm, lay.space_group, lay.rank, [grads[k] for k in names] + [np.array(stats.loss_sum)])
        stats.loss_sum = float(summed[-1])
        return dict(zip(names, summed[:-1])), stats, logits

    def apply(self, grads: dict[str, np.ndarray], opt: "Adam") -> None:
        """One optimizer step on this process's own parameters (identical on its whole space group)."""
        for name, g in grads.items():
            if name.startswith("res_"):
                self.params[name][self.first:self.first + self.n] = opt.update(
                    name, self.params[name][self.first:self.first + self.n], g)
            else:
                self.params[name] = opt.update(name, self.params[name], g)


class Adam:
    """Adam (Kingma and Ba) on numpy arrays, one state per parameter name."""

    def __init__(self, lr: float = 1e-2, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self.t: dict[str, int] = {}

    def update(self, name: str, value: np.ndarray, grad: np.ndarray) -> np.ndarray:
        m = self.m[name] = self.b1 * self.m.get(name, 0.0) + (1 - self.b1) * grad
        v = self.v[name] = self.b2 * self.v.get(name, 0.0) + (1 - self.b2) * grad * grad
        t = self.t[name] = self.t.get(name, 0) + 1
        step = self.lr * (m / (1 - self.b1 ** t)) / (np.sqrt(v / (1 - self.b2 ** t)) + self.eps)
        return (value - step).astype(np.float32)


def reference_loss_and_grads(spec: NetSpec, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    """The undecomposed network in plain TensorFlow ('same' convolutions, autodiff): (mean loss, grads,
    logits), what a decomposed run must equal."""
    import tensorflow as tf
    tp = {k: tf.constant(v) for k, v in params.items()}
    with tf.GradientTape() as tape:
        tape.watch(list(tp.values()))
        conv = lambda h, w, b: tf.nn.conv3d(h, w, [1] * 5, "SAME") + b  # noqa: E731
        h = tf.nn.relu(conv(tf.constant(x), tp["open_w"], tp["open_b"]))
        for i in range(spec.layers):
            h = h + spec.dt * tf.nn.relu(conv(h, tp["res_w"][i], tp["res_b"][i]))
        logits = tf.tensordot(h, tp["close_w"], 1) + tp["close_b"]
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.constant(y[..., 0], tf.float32), logits))
    names = list(tp)
    grads = tape.gradient(loss, [tp[k] for k in names])
    return float(loss), {k: g.numpy() for k, g in zip(names, grads)}, logits.numpy()
