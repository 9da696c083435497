"""Multimodal land-cover CNN (thesis ch. 6) as named units, so a placement plan can put any unit on
any worker process while the model and its weights stay the same.

Two branches of 3D conv + max-pool + batch-norm blocks (RGB patch 25x25x3 and hyperspectral patch
25x25xB, each fed as a one-channel volume (25, 25, bands, 1)), dropout and flatten per branch, early
fusion by concatenation, two fully connected ReLU layers and a softmax over n_classes.
The thesis gives the structure (its layer figure, 6.3, is not in our copy) but no sizes; the block
counts (RGB 2, HSI 4: scheme 2 moves two HSI blocks and scheme 3 one block of each branch, so both
branches need at least two and the HSI branch four) and the defaults below are our choices.

Config attributes (an object or a dict; missing ones take the default):
  patch 25, rgb_bands 3, hsi_bands 11, n_classes 20,
  rgb_filters [16, 32] (one per RGB block), hsi_filters [16, 32, 64, 64] (one per HSI block),
  kernel_size 3 (cubic, 'same' padding), pool_size [2, 2, 2] ('same' padding: sizes round up,
  so 25x25x11 stays positive through four blocks: 13x13x6, 7x7x3, 4x4x2, 2x2x1),
  dropout 0.25, dense_units [256, 128] (fc1, fc2), optimizer 'adam', learning_rate 1e-3,
  seed 0 (dropout seed: two unit sets built with one seed draw the same dropout masks).
Any other key (but `name`, the registry's) is an error, so a misspelt size cannot fall back to a
default unnoticed.
TensorFlow and Keras are imported inside the functions that need them.
"""
from __future__ import annotations

import contextlib
import fnmatch
import math
import re
from typing import Any, Callable


from models.registry import config_params, register
from rdd_io.storage import name_problem

RGB_BLOCKS, HSI_BLOCKS = 2, 4
PARTS = ("conv", "pool", "bn")
RGB_UNITS = [f"rgb_b{k}_{p}" for k in range(1, RGB_BLOCKS + 1) for p in PARTS] + \
    ["rgb_dropout", "rgb_flatten"]
HSI_UNITS = [f"hsi_b{k}_{p}" for k in range(1, HSI_BLOCKS + 1) for p in PARTS] + \
    ["hsi_dropout", "hsi_flatten"]
HEAD_UNITS = ["fusion_concat", "fc1", "fc2", "softmax"]
UNITS: list[str] = RGB_UNITS + HSI_UNITS + HEAD_UNITS

# The thesis's fixed choices (6.2.2), not in the config. Everything else comes from the config's model
# section (conf/landcover.yaml via jobs.landcover.model_args): no second copy of its values here.
ARCHITECTURE = dict(patch=25, rgb_bands=3, kernel_size=3, pool_size=[2, 2, 2], optimizer="adam")
FROM_CONFIG = ("rgb_filters", "hsi_filters", "dropout", "dense_units", "learning_rate", "hsi_bands", "n_classes",
               "seed")
ROLE_RE = re.compile(r"^(worker|ps|chief):\d+$")
FLOAT_BYTES = 4
SEED_STATE_BYTES = 16  # a dropout layer's seed generator state: two int64
DATA_UNITS = {"rgb": "rgb_b1_conv", "hsi": "hsi_b1_conv", "label": "softmax"}  # who reads each modality


def _no_place(name: str):
    return contextlib.nullcontext()


def resolve(cfg: Any) -> dict:
    """Config (dict, dataclass or namespace) -> checked plain parameters, the fixed architecture filled in."""
    p = config_params("landcover", cfg, FROM_CONFIG, ARCHITECTURE, "the model section of conf/landcover.yaml, "
                      "with hsi_bands, n_classes and seed: jobs.landcover.model_args")
    for key in ("patch", "rgb_bands", "hsi_bands", "n_classes", "kernel_size"):
        if not isinstance(p[key], int) or p[key] < 1:
            raise ValueError(f"landcover model: {key} must be a positive int, got {p[key]!r}")
    for key, n in (("rgb_filters", RGB_BLOCKS), ("hsi_filters", HSI_BLOCKS), ("dense_units", 2),
                   ("pool_size", 3)):
        p[key] = list(p[key])
        if len(p[key]) != n or any(not isinstance(v, int) or v < 1 for v in p[key]):
            raise ValueError(f"landcover model: {key} needs {n} positive ints, got {p[key]}")
    if not 0.0 <= float(p["dropout"]) < 1.0:
        raise ValueError(f"landcover model: dropout must be in [0, 1), got {p['dropout']!r}")
    if str(p["optimizer"]).lower() not in ("adam", "sgd") or float(p["learning_rate"]) <= 0:
        raise ValueError(f"landcover model: optimizer must be adam or sgd with learning_rate > 0, "
                         f"got {p['optimizer']!r}, {p['learning_rate']!r}")
    p["optimizer"] = str(p["optimizer"]).lower()
    return p


def unit_shapes(cfg: Any) -> dict[str, tuple]:
    """Output shape (without the batch axis) of every unit, computed without TF."""
    p, shapes = resolve(cfg), {}
    for branch, bands, filters in (("rgb", p["rgb_bands"], p["rgb_filters"]),
                                   ("hsi", p["hsi_bands"], p["hsi_filters"])):
        dims = [p["patch"], p["patch"], bands]
        for k, f in enumerate(filters, start=1):
            shapes[f"{branch}_b{k}_conv"] = (*dims, f)
            dims = [math.ceil(d / s) for d, s in zip(dims, p["pool_size"])]
            shapes[f"{branch}_b{k}_pool"] = shapes[f"{branch}_b{k}_bn"] = (*dims, f)
        shapes[f"{branch}_dropout"] = shapes[f"{branch}_b{len(filters)}_bn"]
        shapes[f"{branch}_flatten"] = (math.prod(shapes[f"{branch}_dropout"]),)
    shapes["fusion_concat"] = (shapes["rgb_flatten"][0] + shapes["hsi_flatten"][0],)
    shapes["fc1"], shapes["fc2"] = (p["dense_units"][0],), (p["dense_units"][1],)
    shapes["softmax"] = (p["n_classes"],)
    return shapes


def unit_params(cfg: Any) -> dict[str, tuple[int, int]]:
    """(trainable, non-trainable) parameter counts per unit, computed without TF."""
    p, shapes, counts = resolve(cfg), unit_shapes(cfg), {}
    for i, name in enumerate(UNITS):
        fan_in = 1 if name.endswith("_b1_conv") else shapes[UNITS[i - 1]][-1]
        out = shapes[name][-1]
        if name.endswith("_conv"):
            counts[name] = (p["kernel_size"] ** 3 * fan_in * out + out, 0)
        elif name.endswith("_bn"):
            counts[name] = (2 * out, 2 * out)  # gamma, beta | moving mean, moving variance
        elif name in ("fc1", "fc2", "softmax"):
            counts[name] = (fan_in * out + out, 0)
        else:
            counts[name] = (0, 0)
    return counts


@register("landcover-units")
def build_units(cfg: Any, place: Callable[[str], Any] | None = None) -> dict:
    """Unit name -> Keras layer, every layer built, its variables made inside place('variables')
    (where the plan keeps them: the ps for model parallelism) or the caller's device scope."""
    with (place or _no_place)("variables"):
        return _build_units(resolve(cfg))


def _build_units(p: dict) -> dict:
    import keras

    L, units = keras.layers, {}
    for branch, filters in (("rgb", p["rgb_filters"]), ("hsi", p["hsi_filters"])):
        for k, f in enumerate(filters, start=1):
            units[f"{branch}_b{k}_conv"] = L.Conv3D(f, p["kernel_size"], padding="same",
                                                    activation="relu", name=f"{branch}_b{k}_conv")
            units[f"{branch}_b{k}_pool"] = L.MaxPooling3D(p["pool_size"], padding="same",
                                                          name=f"{branch}_b{k}_pool")
            units[f"{branch}_b{k}_bn"] = L.BatchNormalization(name=f"{branch}_b{k}_bn")
        units[f"{branch}_dropout"] = L.Dropout(p["dropout"], seed=p["seed"],
                                               name=f"{branch}_dropout")
        units[f"{branch}_flatten"] = L.Flatten(name=f"{branch}_flatten")
    units["fusion_concat"] = L.Concatenate(name="fusion_concat")
    units["fc1"] = L.Dense(p["dense_units"][0], activation="relu", name="fc1")
    units["fc2"] = L.Dense(p["dense_units"][1], activation="relu", name="fc2")
    units["softmax"] = L.Dense(p["n_classes"], activation="softmax", name="softmax")
    rgb, hsi = _inputs(p)
    forward(units, rgb, hsi, training=False)  # symbolic pass: builds every layer now
    return units


def _inputs(p: dict):
    import keras
    return (keras.Input((p["patch"], p["patch"], p["rgb_bands"], 1), name="rgb"),
            keras.Input((p["patch"], p["patch"], p["hsi_bands"], 1), name="hsi"))


def forward(units: dict, rgb, hsi, training, place: Callable[[str], Any] | None = None):
    """Class probabilities for a batch; each unit runs inside `place(unit_name)` (a device scope),
    so the one function serves a single device and every placement plan."""
    place = place or _no_place

    def run(names, x):
        for name in names:
            with place(name):
                x = units[name](x, training=training)
        return x

    r, h = run(RGB_UNITS, rgb), run(HSI_UNITS, hsi)
    with place("fusion_concat"):
        z = units["fusion_concat"]([r, h])
    return run(HEAD_UNITS[1:], z)


def make_optimizer(cfg: Any):
    p = resolve(cfg)
    import keras
    lr = float(p["learning_rate"])
    return keras.optimizers.Adam(lr) if p["optimizer"] == "adam" else keras.optimizers.SGD(lr)


@register("landcover")
def build(cfg: Any):
    """Compiled single-machine Keras model over the same units; inputs [rgb, hsi] 5-D volumes,
    output [batch, n_classes] softmax."""
    p = resolve(cfg)
    import keras

    units = _build_units(p)
    rgb, hsi = _inputs(p)
    model = keras.Model([rgb, hsi], forward(units, rgb, hsi, training=None), name="landcover")
    model.compile(optimizer=make_optimizer(p), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def indexed_step_fn(units: dict, optimizer, data: dict, place: Callable[[str], Any] | None = None):
    """tf.function step(idx) -> (loss, correct predictions): the batch is gathered by the sample indices
    `idx` from `data` {"rgb", "hsi", "label"} (variables, each made under place(DATA_UNITS[key]) so it
    lives with the unit that reads it: the process that drives the step sends indices, never patches).
    Otherwise as train_step_fn."""
    import tensorflow as tf
    core = train_step_fn(units, optimizer, place, count_correct=True, compiled=False)

    @tf.function(reduce_retracing=True)
    def step(idx):
        return core(*_gather(data, idx, place))

    return step


def indexed_eval_fn(units: dict, data: dict, place: Callable[[str], Any] | None = None):
    """tf.function evaluate(idx) -> (summed loss, correct predictions) of the samples `idx` of `data`
    (as indexed_step_fn), inference mode: no dropout, BN with its moving statistics, no update."""
    import keras
    import tensorflow as tf
    place_ = place or _no_place

    @tf.function(reduce_retracing=True)
    def evaluate(idx):
        rgb, hsi, labels = _gather(data, idx, place)
        probs = forward(units, rgb, hsi, training=False, place=place)
        with place_("softmax"):
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, probs))
            predicted = tf.argmax(probs, axis=-1, output_type=labels.dtype)
            return loss, tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.int32))

    return evaluate


def recalibrate_bn(units: dict, data: dict, batch_size: int, place: Callable[[str], Any] | None = None) -> int:
    """Give every BN layer the population statistics of `data` (the training set) under the final weights:
    the mean over its batches of each layer's batch mean and variance, in training mode (precise BN).
    Training keeps Keras's moving averages (momentum 0.99), which after a few hundred steps still carry
    the statistics of earlier weights, and an inference-mode evaluation with them falls to chance level
    even on the training patches. Training itself is unchanged; this runs once, before evaluating.
    Returns the number of batches read."""
    import numpy as np
    import tensorflow as tf
    bns = [units[name] for name in UNITS if name.endswith("_bn")]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:  # read when the function below is traced: each call leaves one batch's statistics
        bn.momentum = 0.0

    @tf.function(reduce_retracing=True)
    def batch_statistics(idx):
        rgb, hsi, _ = _gather(data, idx, place)
        forward(units, rgb, hsi, training=True, place=place)

    n = int(data["label"].shape[0])
    sums = [[0.0, 0.0] for _ in bns]
    try:
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(start + batch_size, n), dtype=np.int32)
            batch_statistics(tf.constant(idx))
            for total, bn in zip(sums, bns):
                total[0] = total[0] + len(idx) * bn.moving_mean.numpy()
                total[1] = total[1] + len(idx) * bn.moving_variance.numpy()
        for (mean, variance), bn in zip(sums, bns):
            bn.moving_mean.assign(mean / n)
            bn.moving_variance.assign(variance / n)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
    return -(-n // batch_size)


def _gather(data: dict, idx, place: Callable[[str], Any] | None):
    """The batch (rgb, hsi, labels) of sample indices idx, each gathered where its data lives."""
    import tensorflow as tf
    place_, batch = place or _no_place, []
    for key in ("rgb", "hsi", "label"):
        with place_(DATA_UNITS[key]):
            batch.append(tf.gather(data[key], idx))
    return batch


def nearest_signature(train_spectra, train_labels, test_spectra):
    """The no-learning baseline: each test spectrum gets the class whose mean training spectrum is
    nearest (Euclidean). Spectra [N, bands] (a patch's centre pixel); labels 0..n_classes-1."""
    import numpy as np
    train_spectra, train_labels = np.asarray(train_spectra, np.float64), np.asarray(train_labels)
    classes = np.unique(train_labels)
    means = np.stack([train_spectra[train_labels == k].mean(axis=0) for k in classes])
    d2 = ((np.asarray(test_spectra, np.float64)[:, None, :] - means[None]) ** 2).sum(axis=2)
    return classes[d2.argmin(axis=1)]


def train_step_fn(units: dict, optimizer, place: Callable[[str], Any] | None = None,
                  count_correct: bool = False, compiled: bool = True):
    """tf.function step(rgb, hsi, labels) -> loss before the update (with count_correct: the pair
    (loss, correct predictions in the batch)). The loss runs where the softmax runs, the
    optimizer's update under place('variables') (make_place: the plan's ps). Call this under
    the variables' device scope: the optimizer's slots are made here.

    Gradients come from tf.gradients, not a GradientTape: TF2's tf.gradients colocates every
    gradient op with its forward op, so each unit's backward pass runs on the unit's worker. A
    tape inside a tf.function leaves the gradient ops without a device, so the whole backward
    pass would run on the calling process and every saved activation would travel there."""
    import keras
    import tensorflow as tf

    variables = [v for name in UNITS for v in units[name].trainable_variables]
    optimizer.build(variables)
    place_ = place or _no_place

    def step(rgb, hsi, labels):
        probs = forward(units, rgb, hsi, training=True, place=place)
        with place_("softmax"):
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probs))
        grads = tf.gradients(loss, [v.value for v in variables])
        with place_("variables"):
            optimizer.apply_gradients(zip(grads, variables))
        if not count_correct:
            return loss
        with place_("softmax"):
            predicted = tf.argmax(probs, axis=-1, output_type=labels.dtype)
            hits = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.int32))
        return loss, hits

    return tf.function(step) if compiled else step


def get_weights(units: dict) -> list:
    """Every unit's weights (BN moving statistics included), in UNITS order."""
    return [w for name in UNITS for w in units[name].get_weights()]


def unit_variables(units: dict) -> list:
    """Every variable of every unit, in UNITS order: weights, BN moving statistics and the dropout
    layers' seed-generator states (Layer.variables; get_weights leaves the seeds out). With the
    optimizer's variables, all the state a train step reads, so a checkpoint of both resumes exactly."""
    return [v for name in UNITS for v in units[name].variables]


def set_weights(units: dict, weights: list) -> None:
    weights = list(weights)
    for name in UNITS:
        n = len(units[name].get_weights())
        units[name].set_weights(weights[:n])
        weights = weights[n:]
    if weights:
        raise ValueError(f"landcover set_weights: {len(weights)} arrays left over")


# ---- placement plans (the config's placement section, conf/landcover_plans.yaml): plan -> {role: [unit
# globs]}, variables: ps:N

def check_plans(plans: dict, where: str) -> dict:
    """`plans` (plan name -> raw plan) if every name is safe and every plan places each unit once."""
    if not isinstance(plans, dict) or not plans:
        raise ValueError(f"{where}: expected a mapping of plan name -> {{role: [unit patterns]}}")
    for name, plan in plans.items():
        if name_problem(name):  # a plan's name becomes part of its cells' checkpoint paths
            raise ValueError(f"{where}: plan name {name_problem(name)}")
        resolve_plan(plan, f"{where}: plan {name!r}")
    return plans


def resolve_plan(plan: dict, name: str = "plan") -> dict[str, str]:
    """Raw plan -> {unit: role}; ValueError naming the plan and any unit placed zero or 2+ times."""
    if not isinstance(plan, dict):
        raise ValueError(f"{name}: expected a mapping of role -> unit patterns, got {plan!r}")
    variables = plan.get("variables", "ps:0")
    if not isinstance(variables, str) or not ROLE_RE.match(variables):
        raise ValueError(f"{name}: variables must be a role like 'ps:0', got {variables!r}")
    roles: dict[str, set] = {unit: set() for unit in UNITS}
    for role, patterns in plan.items():
        if role == "variables":
            continue
        if not ROLE_RE.match(str(role)) or not isinstance(patterns, list):
            raise ValueError(f"{name}: {role!r} must be a role like 'worker:0' with a list of "
                             f"unit patterns, got {patterns!r}")
        for pattern in patterns:
            hits = fnmatch.filter(UNITS, str(pattern))
            if not hits:
                raise ValueError(f"{name}: pattern {pattern!r} of {role} matches no unit")
            for unit in hits:
                roles[unit].add(role)
    unplaced = [u for u, r in roles.items() if not r]
    doubled = {u: sorted(r) for u, r in roles.items() if len(r) > 1}
    if unplaced or doubled:
        raise ValueError(f"{name}: every unit must be placed exactly once; unplaced: {unplaced}, "
                         f"placed more than once: {doubled}")
    return {unit: r.pop() for unit, r in roles.items()}


def _assignment(plan: dict) -> dict[str, str]:
    return plan if set(plan) == set(UNITS) else resolve_plan(plan)


def role_device(role: str) -> str:
    """'worker:1' -> '/job:worker/task:1'."""
    job, task = role.split(":")
    return f"/job:{job}/task:{task}"


def make_place(plan: dict, device_of_role: Callable[[str], str] = role_device):
    """place(unit) -> tf.device scope of the unit's role under `plan` (raw or resolved);
    place('variables') -> the scope of the plan's variables role (ps:0 unless it says)."""
    import tensorflow as tf
    roles = {**_assignment(plan), "variables": plan.get("variables", "ps:0")}
    return lambda unit: tf.device(device_of_role(roles[unit]))


def _edges() -> list[tuple[str, str]]:
    """(producer, consumer) unit pairs of the forward data flow."""
    edges = []
    for chain in (RGB_UNITS, HSI_UNITS, HEAD_UNITS):
        edges += list(zip(chain, chain[1:]))
    return edges + [("rgb_flatten", "fusion_concat"), ("hsi_flatten", "fusion_concat")]


def boundary_tensors(plan: dict, batch_size: int, cfg: Any) -> list[tuple]:
    """Activations that cross a role boundary in the forward pass, as (from_role, to_role, unit,
    shape, dtype); each one's gradient crosses back with the same size in the backward pass."""
    assignment, shapes = _assignment(plan), unit_shapes(cfg)
    return [(assignment[a], assignment[b], a, (batch_size, *shapes[a]), "float32")
            for a, b in _edges() if assignment[a] != assignment[b]]


def variable_bytes(cfg: Any, plan: dict | None = None) -> dict[str, int]:
    """Bytes of float32 variables per unit, or per role of the units when a plan is given. Each
    step a role reads these from the ps and sends back gradients of the trainable part."""
    per_unit = {u: FLOAT_BYTES * sum(c) for u, c in unit_params(cfg).items()}
    if plan is None:
        return per_unit
    out: dict[str, int] = {}
    for unit, role in _assignment(plan).items():
        out[role] = out.get(role, 0) + per_unit[unit]
    return out


def step_transfers(plan: dict, batch_size: int, cfg: Any, driver: str = "chief:0") -> list[tuple]:
    """Every tensor that crosses between processes in one training step with the data local to the
    workers (indexed_step_fn), as (term, from_role, to_role, what, bytes):

      variable reads    each unit's variables (weights, BN moving statistics, the dropout seed
                        state), read from the variables' role by the role that runs the unit
      gradients         the trainable ones' gradients, sent back to be applied there
      BN statistics     the new moving mean and variance, and the dropout seed state, written back
      activations       each activation crossing a role boundary (boundary_tensors)
      act. gradients    its gradient, the same size, crossing back in the backward pass
      batch indices     int32 per sample, from the driver to each role that reads a modality
      results           the loss and the count of correct predictions, back to the driver
    """
    assignment, p = _assignment(plan), resolve(cfg)
    ps = plan.get("variables", "ps:0")
    params = unit_params(cfg)
    out = []
    for unit in UNITS:
        role = assignment[unit]
        trainable, fixed = params[unit]
        seed = SEED_STATE_BYTES if unit.endswith("_dropout") else 0
        if role == ps or not (trainable or fixed or seed):
            continue
        out.append(("variable reads", ps, role, unit, FLOAT_BYTES * (trainable + fixed) + seed))
        if trainable:
            out.append(("gradients", role, ps, unit, FLOAT_BYTES * trainable))
        if fixed or seed:
            out.append(("BN statistics", role, ps, unit, FLOAT_BYTES * fixed + seed))
    for src, dst, unit, shape, _ in boundary_tensors(assignment, batch_size, p):
        out.append(("activations", src, dst, unit, FLOAT_BYTES * math.prod(shape)))
        out.append(("act. gradients", dst, src, unit, FLOAT_BYTES * math.prod(shape)))
    for role in sorted({assignment[u] for u in DATA_UNITS.values()} - {driver}):
        out.append(("batch indices", driver, role, "indices", 4 * batch_size))
    head = assignment["softmax"]
    if head != driver:
        out += [("results", head, driver, "loss", FLOAT_BYTES), ("results", head, driver, "correct", 4)]
    return out


def step_bytes(plan: dict, batch_size: int, cfg: Any) -> dict:
    """Analytic bytes per step: {"total", "terms": {term: bytes}, "out": {role: bytes sent},
    "in": {role: bytes received}} from step_transfers."""
    totals: dict = {"total": 0, "terms": {}, "out": {}, "in": {}}
    for term, src, dst, _, nbytes in step_transfers(plan, batch_size, cfg):
        totals["total"] += nbytes
        totals["terms"][term] = totals["terms"].get(term, 0) + nbytes
        totals["out"][src] = totals["out"].get(src, 0) + nbytes
        totals["in"][dst] = totals["in"].get(dst, 0) + nbytes
    return totals
