"""Checkpoints at a URI: named lists of arrays plus a JSON state, one HDF5 file, written atomically.

A checkpoint is whole or absent: it is built in memory and handed to rdd_io.storage.write_bytes,
which writes a temporary name and renames it, so a process killed mid-write leaves the previous
checkpoint in place. The format is HDF5 datasets and a JSON attribute (never pickle), so a
checkpoint can be opened with h5py in a notebook:

    /<group>/<i>    the i-th array of a named list (e.g. weights/0, optimizer/3)
    attrs: format, state (JSON: version counter, epoch, progress, ...)
"""
from __future__ import annotations

import io
import json

import numpy as np

from rdd_io import storage

FORMAT = "scidl-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, named by its URI."""


def to_bytes(arrays: dict[str, list], state: dict) -> bytes:
    import h5py
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        h5.attrs["format"] = FORMAT
        h5.attrs["state"] = json.dumps(state, sort_keys=True)
        for group, values in arrays.items():
            g = h5.create_group(group)
            g.attrs["count"] = len(values)
            for i, value in enumerate(values):
                g.create_dataset(str(i), data=np.asarray(value))
    return buf.getvalue()


def from_bytes(data: bytes, name: str) -> tuple[dict[str, list[np.ndarray]], dict]:
    import h5py
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            if h5.attrs.get("format") != FORMAT:
                raise CheckpointError(f"{name}: not a checkpoint (format {h5.attrs.get('format')!r})")
            state = json.loads(h5.attrs["state"])
            arrays = {group: [h5[group][str(i)][()] for i in range(int(h5[group].attrs["count"]))]
                      for group in h5}
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as exc:  # h5py raises these for damaged files
        raise CheckpointError(f"{name}: unreadable checkpoint: {exc}") from None
    return arrays, state


def save(uri: str, arrays: dict[str, list], state: dict) -> None:
    """Write atomically: readers see the old checkpoint or the new one, never a part."""
    storage.write_bytes(uri, to_bytes(arrays, state))


def load(uri: str) -> tuple[dict[str, list[np.ndarray]], dict]:
    try:
        data = storage.read_bytes(uri)
    except (OSError, FileNotFoundError) as exc:
        raise CheckpointError(f"{uri}: no checkpoint to resume from ({exc})") from None
    return from_bytes(data, uri)


def load_if_present(uri: str):
    """(arrays, state), or None when there is no checkpoint at `uri`."""
    return load(uri) if storage.exists(uri) else None


def optimizer_arrays(optimizer) -> list[np.ndarray]:
    """A built Keras optimizer's state (iteration count, moments) as arrays, in its variable order."""
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in optimizer.variables]


def assign_variables(variables, arrays: list[np.ndarray], name: str, what: str = "variables") -> None:
    """Assign saved arrays to (Keras or TF) variables in order, after checking count and shapes."""
    if len(variables) != len(arrays):
        raise CheckpointError(f"{name}: {what}: {len(arrays)} arrays in the checkpoint, {len(variables)} in the "
                              f"model: was the checkpoint written by another model config?")
    for var, value in zip(variables, arrays):
        if tuple(var.shape) != value.shape:
            label = getattr(var, "path", None) or var.name
            raise CheckpointError(f"{name}: {what}: {label}: shape {value.shape} in the checkpoint, "
                                  f"{tuple(var.shape)} in the model")
    for var, value in zip(variables, arrays):
        var.assign(value)


def restore_optimizer(optimizer, trainable_variables, arrays: list[np.ndarray], name: str) -> None:
    """Put state saved by optimizer_arrays back into an optimizer for the same variables."""
    if not optimizer.built:
        optimizer.build(trainable_variables)
    assign_variables(optimizer.variables, arrays, name, "optimizer state")
