"""Dom-ST (domain-aware spatiotemporal network) and its two baselines, one model per watershed.

Inputs: X [batch, lookback, P] daily precipitation of the watershed's P pixels over the lookback
window, P_target [batch, P] the target day's. Output [batch, 1]: the target day's discharge.
Loss MSE (NSE is computed outside), optimizer Adam.

- 'domst-singlehead' (the paper's baseline, "singlehead one-dimensional multichannel 1D-CNN without
  any Pix-Con block"): Conv1D over the lookback window with the pixels as channels, stacked LSTM
  over the convolved sequence, dense layers. Input X only.
- 'domst-singlehead-p' ("feeding the target day's precipitation in the final layers"): the same,
  plus a linear projection of P_target (target_units wide) concatenated after the LSTM.
- 'domst': the Pix-Con block scales each pixel's inputs by a learned weight
  w_p = softplus(a_p + b * z_p) >= 0, where z_p is the pixel's standardised distance to water, b a
  slope shared by the watershed and a_p a per-pixel offset (a_p starts at softplus^-1(1) and b at 0,
  so every w_p starts at 1). The partitioning module sorts the pixels by distance and cuts them into
  K groups of near-equal size, so each group holds pixels of similar travel time to the river. One
  Conv1D head per group runs under place('head:k'); the temporal block (the heads' sequences
  concatenated, stacked LSTM, the Pix-Con-weighted mean of each group's target-day precipitation,
  dense layers, output) runs under place('temporal'). With head_input 'pixels' (the paper's
  multichannel heads) a head's first convolution has one kernel slice per pixel, so it can absorb any
  w_p exactly (w_p * c with the slice / c computes the same): only the target-day path constrains the
  ratios within a group. With head_input 'weighted_sum' each head takes its group's Pix-Con-weighted
  mean as one channel, so no later layer can undo one pixel's weight, and w_p is identifiable up to
  one scale per group. partition 'dynamic' (weighted_sum only) re-cuts the K groups from the current
  weights during training (repartition: largest contributions in group 0), instead of fixing them by
  distance quantiles before training. pixel_weights 'distance' drops the per-pixel offsets (one shared
  offset): w_p is then a function of the pixel's distance alone, two free parameters the data can fix where
  correlated precipitation cannot fix one weight per pixel.
The paper gives no layer sizes, no K, and not how distance enters Pix-Con: those choices are ours.

Config keys (dict, dataclass or namespace; any other key but `name` is an error): from the config, lookback,
k_groups, filters (one Conv1D per entry, 'valid' padding), kernel_size, lstm_units, dense_units, target_units,
dropout, learning_rate, head_input 'pixels' | 'weighted_sum', partition 'distance' | 'dynamic' and
pixel_weights 'per_pixel' | 'distance' (Dom-ST); per run, pixels (or taken from len(distance)), distance (P
floats >= 0; Dom-ST, and group_means), pixcon true (false: Dom-ST with every pixel weight fixed at 1),
target_input (how the target day enters the +P models: 'projection', Singlehead(+P)'s default, a dense layer
over all pixels; 'group_means', Dom-ST's default, the mean of each distance group, Pix-Con-weighted in
Dom-ST).
TF is imported lazily.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, Callable

import numpy as np

from models.registry import config_params, register

MODELS = ("domst-singlehead", "domst-singlehead-p", "domst")
# Every layer size, K and rate is a choice of ours, kept in one place: the model section of conf/domst.yaml
# (lookback from its data section). What is left here is per watershed or per approach.
FROM_CONFIG = ("lookback", "k_groups", "filters", "kernel_size", "lstm_units", "dense_units", "target_units",
               "dropout", "learning_rate", "head_input", "partition", "pixel_weights")
PER_RUN = dict(pixels=None, distance=None, pixcon=True, target_input=None)
HEAD_INPUTS = ("pixels", "weighted_sum")
PARTITIONS = ("distance", "dynamic")
PIXEL_WEIGHTS = ("per_pixel", "distance")
TARGET_INPUTS = ("projection", "group_means")
OWN_TARGET_INPUT = {"domst-singlehead": None, "domst-singlehead-p": "projection", "domst": "group_means"}
PIXCON_OFFSET0 = math.log(math.e - 1.0)  # softplus(offset0) == 1


def _given(cfg: Any) -> dict:
    if isinstance(cfg, dict):
        return dict(cfg)
    if dataclasses.is_dataclass(cfg):
        return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return dict(vars(cfg))


def _positive_ints(p: dict, key: str, allow_empty: bool = False) -> None:
    value = p[key]
    p[key] = values = [value] if isinstance(value, int) else list(value)
    if (not values and not allow_empty) or \
            any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"domst model: {key} must be a {'' if allow_empty else 'non-empty '}"
                         f"list of positive ints, got {value!r}")


def resolve(cfg: Any, model: str = "domst") -> dict:
    """Config -> checked plain parameters. No TF needed."""
    if model not in MODELS:
        raise ValueError(f"domst model: unknown model {model!r}; valid: {list(MODELS)}")
    p = config_params("domst", cfg, FROM_CONFIG, PER_RUN, "the model section of conf/domst.yaml, with data.lookback")
    p["model"] = model
    if p["distance"] is not None:
        d = np.asarray(p["distance"], dtype=float).ravel()
        if p["pixels"] is None:
            p["pixels"] = len(d)
        if len(d) != p["pixels"] or not np.all(np.isfinite(d)) or np.any(d < 0):
            raise ValueError(f"domst model: distance must hold {p['pixels']} finite values >= 0 "
                             f"(one per pixel), got {len(d)} values, min {np.min(d, initial=0)}")
        p["distance"] = [float(v) for v in d]
    elif model == "domst":
        raise ValueError("domst model: 'domst' needs distance (each pixel's distance to the "
                         "nearest water source)")
    for key in ("pixels", "lookback", "k_groups", "kernel_size", "target_units"):
        if not isinstance(p[key], int) or isinstance(p[key], bool) or p[key] < 1:
            raise ValueError(f"domst model: {key} must be a positive int, got {p[key]!r}")
    p["target_input"] = p["target_input"] or OWN_TARGET_INPUT[model]
    if model != "domst-singlehead" and p["target_input"] not in TARGET_INPUTS:
        raise ValueError(f"domst model: target_input must be one of {TARGET_INPUTS}, got {p['target_input']!r}")
    if p["target_input"] == "group_means" and p["distance"] is None:
        raise ValueError("domst model: target_input 'group_means' needs distance (the groups are cut by it)")
    if p["head_input"] not in HEAD_INPUTS or p["partition"] not in PARTITIONS:
        raise ValueError(f"domst model: head_input must be one of {HEAD_INPUTS} and partition one of {PARTITIONS}, "
                         f"got {p['head_input']!r}, {p['partition']!r}")
    if p["partition"] == "dynamic" and p["head_input"] != "weighted_sum":
        raise ValueError("domst model: partition 'dynamic' needs head_input 'weighted_sum' (a head's channels "
                         "are its pixels otherwise, and cannot change members)")
    if p["pixel_weights"] not in PIXEL_WEIGHTS:
        raise ValueError(f"domst model: pixel_weights must be one of {PIXEL_WEIGHTS}, got {p['pixel_weights']!r}")
    if not isinstance(p["pixcon"], bool):
        raise ValueError(f"domst model: pixcon must be true or false, got {p['pixcon']!r}")
    for key in ("filters", "lstm_units"):
        _positive_ints(p, key)
    _positive_ints(p, "dense_units", allow_empty=True)
    if p["k_groups"] > p["pixels"]:
        raise ValueError(f"domst model: k_groups {p['k_groups']} > pixels {p['pixels']}")
    if conv_output_length(p) < 1:
        raise ValueError(f"domst model: lookback {p['lookback']} is too short for "
                         f"{len(p['filters'])} convolution(s) of kernel {p['kernel_size']}")
    if not 0.0 <= float(p["dropout"]) < 1.0:
        raise ValueError(f"domst model: dropout must be in [0, 1), got {p['dropout']!r}")
    if float(p["learning_rate"]) <= 0:
        raise ValueError(f"domst model: learning_rate must be > 0, got {p['learning_rate']!r}")
    return p


def conv_output_length(p: dict) -> int:
    """Days left after the valid-padded convolutions: the LSTM's sequence length."""
    return p["lookback"] - len(p["filters"]) * (p["kernel_size"] - 1)


def partition(distance, k: int) -> list[np.ndarray]:
    """Partitioning module: pixel indices sorted by distance to water (ties keep pixel order),
    cut into k contiguous groups whose sizes differ by at most one. Every pixel lands in exactly
    one group and no group is empty (needs 1 <= k <= P)."""
    d = np.asarray(distance, dtype=float).ravel()
    if not 1 <= k <= len(d):
        raise ValueError(f"domst partition: need 1 <= k <= {len(d)} pixels, got k={k}")
    return [g.astype(np.int32) for g in np.array_split(np.argsort(d, kind="stable"), k)]


def group_mean_matrix(distance, k: int) -> np.ndarray:
    """[P, k] matrix whose product with a day's pixel values gives each distance group's mean."""
    groups = partition(distance, k)
    m = np.zeros((sum(len(g) for g in groups), k), np.float32)
    for j, g in enumerate(groups):
        m[g, j] = 1.0 / len(g)
    return m


def widened_filters(cfg: Any, target_params: int, name: str = "domst-singlehead-p") -> list[int]:
    """Conv filters of `name` scaled by one common factor so that its parameter count comes closest to
    target_params (for the ablation that gives a baseline Dom-ST's parameter count)."""
    p = resolve(cfg, name)
    best = None
    for first in range(1, 64 * max(p["filters"]) + 1):
        filters = [max(1, round(f * first / p["filters"][0])) for f in p["filters"]]
        n = count_params(name, {**_given(cfg), "filters": filters})
        if best is None or abs(n - target_params) < best[0]:
            best = (abs(n - target_params), filters)
        if n > target_params:
            break
    return best[1]


def standardised(distance) -> np.ndarray:
    d = np.asarray(distance, dtype=float)
    sd = d.std()
    return ((d - d.mean()) / sd if sd > 0 else np.zeros_like(d)).astype(np.float32)


def count_params(name: str, cfg: Any) -> int:
    """Trainable parameters of `build` under `name`, computed without TF."""
    p = resolve(cfg, name)
    k_s = p["kernel_size"]

    def convs(channels):
        sizes = [channels] + p["filters"]
        return sum(k_s * a * b + b for a, b in zip(sizes, sizes[1:]))

    if name == "domst":
        groups = partition(p["distance"], p["k_groups"])
        channels = [1 if p["head_input"] == "weighted_sum" else len(g) for g in groups]
        offsets = p["pixels"] if p["pixel_weights"] == "per_pixel" else 1
        total = sum(convs(c) for c in channels) + (offsets + 1 if p["pixcon"] else 0)
        width = p["k_groups"] * p["filters"][-1]
    else:
        total, width = convs(p["pixels"]), p["filters"][-1]
    extra = 0
    if name != "domst-singlehead":
        extra = p["target_units"] if p["target_input"] == "projection" else p["k_groups"]
        total += p["pixels"] * extra + extra if p["target_input"] == "projection" else 0
    for u in p["lstm_units"]:
        total, width = total + 4 * (u * (width + u) + u), u
    width += extra
    for u in p["dense_units"] + [1]:
        total, width = total + width * u + u, u
    return total


def device_map(cfg: Any, n_gpus: int, n_cpus: int = 1) -> dict[str, str]:
    """{'head:k': device, 'temporal': device}: the K heads then the temporal block, round-robin
    over the GPUs when there are any, else over CPU logical devices '/device:CPU:i'. For more than
    one CPU device the caller must split the CPU (split_cpu) before TensorFlow initialises."""
    given = _given(cfg)
    k = given.get("k_groups")
    if not isinstance(k, int) or k < 1 or n_gpus < 0 or (n_gpus == 0 and n_cpus < 1):
        raise ValueError(f"domst device_map: need k_groups >= 1 and a device, got k_groups={k!r},"
                         f" n_gpus={n_gpus}, n_cpus={n_cpus}")
    kind, n = ("GPU", n_gpus) if n_gpus > 0 else ("CPU", n_cpus)
    units = [f"head:{i}" for i in range(k)] + ["temporal"]
    return {u: f"/device:{kind}:{i % n}" for i, u in enumerate(units)}


def split_cpu(n: int) -> list[str]:
    """Split the CPU into n logical devices and return their names. Only possible before the TF
    runtime starts (before any op runs or any device is listed as logical)."""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as exc:
        raise RuntimeError(f"domst split_cpu: the CPU must be split before TensorFlow initialises "
                           f"(split it first thing in the process): {exc}") from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_place(devices: dict[str, str]) -> Callable[[str], Any]:
    """device_map(...) -> place(unit) giving the unit's tf.device scope."""
    import tensorflow as tf
    return lambda unit: tf.device(devices[unit])


@functools.lru_cache(maxsize=None)
def _classes():
    """The Keras classes, made on first use so importing this module never loads TF."""
    import keras
    from keras import ops

    class PixCon(keras.layers.Layer):
        """Pixel-contribution weights w_p = softplus(offset_p + slope * distance_z_p) >= 0; with per_pixel
        False one offset for all pixels (w_p a function of distance alone: two free parameters)."""

        def __init__(self, distance_z, membership=None, per_pixel=True, **kwargs):
            super().__init__(**kwargs)
            p = len(distance_z)
            # The partitioning module, when heads take weighted sums: [P, K], 1/|group| where a pixel is in
            # a group. Not trainable; a dynamic partition re-cuts it from the weights (repartition).
            self.membership = None if membership is None else self.add_weight(
                shape=membership.shape, name="membership", trainable=False,
                initializer=keras.initializers.Constant(membership))
            self.offset = self.add_weight(shape=(p,) if per_pixel else (), name="offset",
                                          initializer=keras.initializers.Constant(PIXCON_OFFSET0))
            self.slope = self.add_weight(shape=(), name="distance_slope", initializer="zeros")
            # Non-trainable, so saved weights carry the watershed's distances with them.
            self.distance_z = self.add_weight(shape=(p,), name="distance_z", trainable=False,
                                              initializer=keras.initializers.Constant(distance_z))
            self.built = True

        def pixel_weights(self, idx=None):
            a, z = self.offset, self.distance_z
            if idx is not None:
                a, z = (ops.take(a, idx) if len(a.shape) else a), ops.take(z, idx)
            return ops.softplus(a + self.slope * z)

        def repartition(self):
            """Re-cut the K groups by the current weights, largest first (the dynamic partition)."""
            w = np.asarray(self.pixel_weights(), float)
            self.membership.assign(group_mean_matrix(-w, self.membership.shape[1]))

    class DomST(keras.Model):
        def __init__(self, p, place=None, **kwargs):
            super().__init__(**kwargs)
            L = keras.layers
            self._place = place or (lambda unit: contextlib.nullcontext())
            self._groups = partition(p["distance"], p["k_groups"])
            self._weighted = p["head_input"] == "weighted_sum"
            self.pixcon = PixCon(standardised(p["distance"]), name="pixcon", membership=(
                group_mean_matrix(p["distance"], p["k_groups"]) if self._weighted else None),
                per_pixel=p["pixel_weights"] == "per_pixel")
            self.pixcon.trainable = p["pixcon"]  # off: every pixel keeps weight 1 (the ablation)
            self.target_projection = (L.Dense(p["target_units"], name="target_projection")
                                      if p["target_input"] == "projection" else None)
            self.heads = [[L.Conv1D(f, p["kernel_size"], activation="relu",
                                    name=f"head{k}_conv{i}")
                           for i, f in enumerate(p["filters"], start=1)]
                          for k in range(p["k_groups"])]
            self.concat = L.Concatenate(name="heads_concat")
            self.dropout = L.Dropout(p["dropout"], name="temporal_dropout")
            self.lstms = _lstms(L, p)
            self.fcs = _dense(L, p)
            self.out = L.Dense(1, name="output")
            self._p = p

        def build(self, input_shape=None):
            # Build each unit's layers inside its own scope: Keras's default build traces the
            # call symbolically, and variables made there ignore the device scopes.
            p = self._p
            for k, (idx, convs) in enumerate(zip(self._groups, self.heads)):
                with self._place(f"head:{k}"):
                    _build_chain(convs, (None, p["lookback"], 1 if self._weighted else len(idx)))
            with self._place("temporal"):
                shape = (None, conv_output_length(p), p["k_groups"] * p["filters"][-1])
                shape = _build_chain(self.lstms, shape)
                extra = p["k_groups"]
                if self.target_projection is not None:
                    extra = _build_chain([self.target_projection], (None, p["pixels"]))[-1]
                shape = _build_chain(self.fcs, (None, shape[-1] + extra))
                _build_chain([self.out], shape)
            self.built = True

        def call(self, inputs, training=None):
            x, p_target = inputs
            seqs = []
            for k, (idx, convs) in enumerate(zip(self._groups, self.heads)):
                with self._place(f"head:{k}"):
                    if self._weighted:  # one channel: the group's Pix-Con-weighted mean, nothing to absorb w_p
                        member = self.pixcon.membership[:, k:k + 1]
                        h = ops.matmul(x * self.pixcon.pixel_weights(), member)
                    else:
                        h = ops.take(x, idx, axis=2) * self.pixcon.pixel_weights(idx)
                    for conv in convs:
                        h = conv(h)
                    seqs.append(h)
            with self._place("temporal"):
                h = self.dropout(self.concat(seqs) if len(seqs) > 1 else seqs[0],
                                 training=training)
                for lstm in self.lstms:
                    h = lstm(h, training=training)
                weighted = p_target * self.pixcon.pixel_weights()
                if self.target_projection is not None:
                    target = [self.target_projection(weighted)]
                elif self._weighted:
                    target = [ops.matmul(weighted, self.pixcon.membership)]
                else:
                    target = [ops.mean(ops.take(weighted, idx, axis=1), axis=1, keepdims=True)
                              for idx in self._groups]
                h = ops.concatenate([h, *target], axis=-1)
                for layer in self.fcs:
                    h = layer(h, training=training)
                return self.out(h)

    return PixCon, DomST


def _build_chain(layers, shape):
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


def _lstms(L, p):
    n = len(p["lstm_units"])
    return [L.LSTM(u, return_sequences=i < n, name=f"lstm{i}")
            for i, u in enumerate(p["lstm_units"], start=1)]


def _dense(L, p):
    layers = []
    for i, u in enumerate(p["dense_units"], start=1):
        layers += [L.Dense(u, activation="relu", name=f"fc{i}"),
                   L.Dropout(p["dropout"], name=f"fc{i}_dropout")]
    return layers


def _compile(model, p):
    import keras
    model.compile(optimizer=keras.optimizers.Adam(float(p["learning_rate"])), loss="mse")
    return model


def _build_singlehead(p: dict, with_target: bool):
    import keras
    L = keras.layers
    h = x_in = keras.Input((p["lookback"], p["pixels"]), name="precipitation")
    for i, f in enumerate(p["filters"], start=1):
        h = L.Conv1D(f, p["kernel_size"], activation="relu", name=f"head0_conv{i}")(h)
    h = L.Dropout(p["dropout"], name="temporal_dropout")(h)
    for lstm in _lstms(L, p):
        h = lstm(h)
    if with_target:
        t_in = keras.Input((p["pixels"],), name="target_day_precipitation")
        if p["target_input"] == "projection":
            t = L.Dense(p["target_units"], name="target_projection")(t_in)
        else:  # Dom-ST's way without Pix-Con: the mean of each distance group (fixed, not trained)
            means = group_mean_matrix(p["distance"], p["k_groups"])
            t = L.Dense(p["k_groups"], use_bias=False, trainable=False, name="target_group_means",
                        kernel_initializer=keras.initializers.Constant(means))(t_in)
        h = L.Concatenate(name="target_concat")([h, t])
    for layer in _dense(L, p):
        h = layer(h)
    out = L.Dense(1, name="output")(h)
    return _compile(keras.Model([x_in, t_in] if with_target else x_in, out, name=p["model"]), p)


@register("domst-singlehead")
def build_singlehead(cfg: Any):
    """Compiled Keras model: X [batch, lookback, P] -> [batch, 1]."""
    return _build_singlehead(resolve(cfg, "domst-singlehead"), with_target=False)


@register("domst-singlehead-p")
def build_singlehead_p(cfg: Any):
    """Compiled Keras model: [X, P_target] -> [batch, 1]."""
    return _build_singlehead(resolve(cfg, "domst-singlehead-p"), with_target=True)


@register("domst")
def build_domst(cfg: Any, place: Callable[[str], Any] | None = None):
    """Compiled Dom-ST: [X, P_target] -> [batch, 1]. `place(unit)` gives a device scope for
    'head:k' and 'temporal' (make_place(device_map(...))); default: no placement."""
    p = resolve(cfg, "domst")
    _, DomST = _classes()
    model = DomST(p, place=place, name="domst")
    model((np.zeros((1, p["lookback"], p["pixels"]), np.float32),
           np.zeros((1, p["pixels"]), np.float32)))  # first call makes the variables in place
    return _compile(model, p)


def model_inputs(name: str, x, p_target):
    """What `name`'s model takes: X alone for Singlehead, [X, P_target] for the others."""
    if name not in MODELS:
        raise ValueError(f"domst model: unknown model {name!r}; valid: {list(MODELS)}")
    return x if name == "domst-singlehead" else [x, p_target]


def pixcon_weights(model) -> np.ndarray:
    """The learned per-pixel Pix-Con weights w_p [P] of a Dom-ST model."""
    pixcon = getattr(model, "pixcon", None)
    if pixcon is None:
        raise ValueError(f"model {getattr(model, 'name', model)!r} has no Pix-Con block "
                         f"(only 'domst' has one)")
    return np.asarray(pixcon.pixel_weights(), dtype=np.float32)
