"""1D CNN that classifies a spectrum into one of n_classes redshift bins.

Two published variants:
- 'thesis' (thesis ch. 5.2.1): two Conv1D layers (kernel 8, ReLU), dropout, flatten, and one fully
  connected softmax layer. No pooling: pooling blurs the exact band positions of the lines, which
  are what tells neighbouring redshift classes apart.
- 'paper' (the TFoS redshift paper, sec. III): three Conv1D layers (kernel 8, ReLU) and "two fully
  connected layers, the last of which produces the final classification output". So there is one
  hidden fully connected layer (ReLU, `dense_units`, one entry) followed by the softmax output.

Neither source gives filter counts, dropout rate, hidden width or optimizer: those are our choices,
kept in one place, the model section of conf/redshift.yaml; this module holds only the layer counts
the sources fix. Valid padding, so each convolution shortens the spectrum by kernel_size - 1 bands.
"""
from __future__ import annotations

from typing import Any

from models.registry import config_params, register

VARIANTS = {"thesis": dict(conv_layers=2, hidden_layers=0), "paper": dict(conv_layers=3, hidden_layers=1)}
FROM_CONFIG = ("variant", "filters", "kernel_size", "dropout", "dense_units", "optimizer", "learning_rate",
               "bands", "n_classes")
OPTIMIZERS = ("adam", "sgd")


def resolve(cfg: Any) -> dict:
    """Config object (or mapping) -> checked plain parameters. No TF needed."""
    p = config_params("redshift", cfg, FROM_CONFIG, {}, "the model section of conf/redshift.yaml, with bands "
                      "and n_classes from its data section: jobs.redshift_config.model_args")
    variant = p["variant"]
    if variant not in VARIANTS:
        raise ValueError(f"redshift model: unknown variant {variant!r}; valid: {sorted(VARIANTS)}")
    spec = VARIANTS[variant]
    for key in ("bands", "n_classes"):
        if not isinstance(p.get(key), int) or p[key] < 1:
            raise ValueError(f"redshift model: {key} must be a positive int, got {p.get(key)!r}")
    p["filters"], p["dense_units"] = list(p["filters"]), list(p["dense_units"])
    if len(p["filters"]) != spec["conv_layers"]:
        raise ValueError(f"redshift model: variant {variant!r} has {spec['conv_layers']} conv "
                         f"layers, so filters needs {spec['conv_layers']} entries, got {p['filters']}")
    if len(p["dense_units"]) != spec["hidden_layers"]:
        raise ValueError(f"redshift model: variant {variant!r} has {spec['hidden_layers']} hidden "
                         f"fully connected layer(s) before the softmax, so dense_units needs "
                         f"{spec['hidden_layers']} entries, got {p['dense_units']}")
    if any(not isinstance(v, int) or v < 1 for v in p["filters"] + p["dense_units"]):
        raise ValueError(f"redshift model: filters and dense_units must be positive ints, got "
                         f"{p['filters']} and {p['dense_units']}")
    if not 0.0 <= float(p["dropout"]) < 1.0:
        raise ValueError(f"redshift model: dropout must be in [0, 1), got {p['dropout']!r}")
    if str(p["optimizer"]).lower() not in OPTIMIZERS:
        raise ValueError(f"redshift model: optimizer must be one of {OPTIMIZERS}, "
                         f"got {p['optimizer']!r}")
    p["optimizer"] = str(p["optimizer"]).lower()
    if float(p["learning_rate"]) <= 0:
        raise ValueError(f"redshift model: learning_rate must be > 0, got {p['learning_rate']!r}")
    if conv_output_length(p) < 1:
        raise ValueError(f"redshift model: {p['bands']} bands are too few for "
                         f"{len(p['filters'])} convolutions of kernel {p['kernel_size']}")
    return p


def conv_output_length(p: dict) -> int:
    """Bands left after the valid-padded convolutions."""
    return p["bands"] - len(p["filters"]) * (p["kernel_size"] - 1)


def count_params(cfg: Any) -> int:
    """Trainable parameters of the model `build(cfg)` makes, computed without TensorFlow."""
    p = resolve(cfg)
    total, channels = 0, 1
    for f in p["filters"]:
        total += p["kernel_size"] * channels * f + f
        channels = f
    width = conv_output_length(p) * channels
    for units in p["dense_units"] + [p["n_classes"]]:
        total += width * units + units
        width = units
    return total


@register("redshift")
def build(cfg: Any):
    """Compiled Keras model: input [batch, bands] floats, output [batch, n_classes] softmax."""
    p = resolve(cfg)
    import keras  # executor side only: the driver never needs TensorFlow

    inputs = keras.Input(shape=(p["bands"],), name="spectrum")
    x = keras.layers.Reshape((p["bands"], 1), name="channels")(inputs)
    for i, f in enumerate(p["filters"], start=1):
        x = keras.layers.Conv1D(f, p["kernel_size"], activation="relu", name=f"conv{i}")(x)
    x = keras.layers.Dropout(p["dropout"], name="dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(p["dense_units"], start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{i}")(x)
        x = keras.layers.Dropout(p["dropout"], name=f"fc{i}_dropout")(x)
    outputs = keras.layers.Dense(p["n_classes"], activation="softmax", name="output")(x)
    model = keras.Model(inputs, outputs, name=f"redshift_{p['variant']}")

    lr = float(p["learning_rate"])
    optimizer = (keras.optimizers.Adam(learning_rate=lr) if p["optimizer"] == "adam"
                 else keras.optimizers.SGD(learning_rate=lr))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model
