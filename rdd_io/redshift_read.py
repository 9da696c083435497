"""Readers for redshift training data, from a path or from the bytes Spark's binaryFiles delivers.

Two layouts:
- our HDF5 shards (rdd_io.schema.REDSHIFT: spectra, z, label), written by redshift_sim;
- the .npy pair of the public Euclid redshift CNN data sets: spectra [N, B] and labels, either
  integer [N] or one-hot [N, C].
Bad input raises SchemaError naming the file and, where one record is at fault, the record.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np

from rdd_io.schema import REDSHIFT, SchemaError, first_nonfinite, source_name


def _check_label_range(where: str, labels: np.ndarray, n_classes: int | None) -> None:
    if n_classes is None or labels.size == 0:
        return
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise SchemaError(f"{where}: record {i} has label {int(labels[i])}, outside "
                          f"[0, {n_classes - 1}]")


def read_shard(name: str, data: Any, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One REDSHIFT shard -> (spectra float32 [N, B], labels int32 [N]).

    `name` is used in error messages (the path Spark reports); `data` is the file's bytes or a path.
    With `n_classes`, labels outside [0, n_classes) are an error too.
    """
    where = source_name(name, str(name))
    arrays = REDSHIFT.read_h5(data, where)
    _check_label_range(where, arrays["label"], n_classes)
    return arrays["spectra"], arrays["label"]


def _load_npy(source: Any, where: str) -> np.ndarray:
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        # allow_pickle=False: an object array in the file is refused, never unpickled.
        array = np.load(source, allow_pickle=False)
    except FileNotFoundError:
        raise SchemaError(f"{where}: file not found") from None
    except Exception as exc:  # bad magic, truncated data, pickled objects
        raise SchemaError(f"{where}: not a readable .npy array ({type(exc).__name__}: "
                          f"{exc})") from None
    if not isinstance(array, np.ndarray):  # np.load returns an NpzFile for .npz archives
        raise SchemaError(f"{where}: expected a single .npy array, got {type(array).__name__}")
    if array.dtype.kind not in "biuf":
        raise SchemaError(f"{where}: dtype {array.dtype} is not numeric")
    return array


def _labels_to_int(where: str, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Integer [N] or one-hot [N, C] -> int32 [N]."""
    if labels.ndim == 1:
        bad = first_nonfinite(labels)
        if bad is not None:
            raise SchemaError(f"{where}: record {bad[0]} has label {bad[1]}")
        as_int = labels.astype(np.int64)
        off = np.flatnonzero(as_int != labels)
        if off.size:
            i = int(off[0])
            raise SchemaError(f"{where}: record {i} has non-integer label {labels[i]!r}")
        _check_label_range(where, as_int, n_classes)
        return as_int.astype(np.int32)
    if labels.ndim == 2:
        if labels.shape[1] != n_classes:
            raise SchemaError(f"{where}: one-hot labels have {labels.shape[1]} columns, "
                              f"expected n_classes={n_classes}")
        bad = first_nonfinite(labels)
        if bad is not None:
            raise SchemaError(f"{where}: record {bad[0]} has {bad[1]} in its one-hot label")
        ok = ((labels == 0) | (labels == 1)).all(axis=1) & (labels.sum(axis=1) == 1)
        if not ok.all():
            i = int(np.argmin(ok))
            raise SchemaError(f"{where}: record {i} is not a one-hot row (needs exactly one 1, "
                              f"the rest 0)")
        return np.argmax(labels, axis=1).astype(np.int32)
    raise SchemaError(f"{where}: labels have rank {labels.ndim} (shape {labels.shape}), "
                      f"expected [N] integers or [N, C] one-hot")


def read_npy_pair(spectra_source: Any, labels_source: Any, n_classes: int,
                  spectra_name: str | None = None,
                  labels_name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spectra .npy [N, B] and labels .npy ([N] int or [N, C] one-hot) -> (float32, int32).

    Sources are paths or bytes; the names (default: the file names) appear in error messages.
    The band count B is taken from the file.
    """
    s_where = spectra_name or source_name(spectra_source, "<spectra bytes>")
    l_where = labels_name or source_name(labels_source, "<labels bytes>")
    spectra = _load_npy(spectra_source, s_where)
    if spectra.ndim != 2:
        raise SchemaError(f"{s_where}: spectra have rank {spectra.ndim} (shape {spectra.shape}), "
                          f"expected [N, bands]")
    spectra = spectra.astype(np.float32, copy=False)  # checked after the cast: it may overflow
    bad = first_nonfinite(spectra)
    if bad is not None:
        raise SchemaError(f"{s_where}: record {bad[0]} of 'spectra' has {bad[1]}")
    labels = _labels_to_int(l_where, _load_npy(labels_source, l_where), n_classes)
    if labels.shape[0] != spectra.shape[0]:
        raise SchemaError(f"{l_where}: {labels.shape[0]} labels but {s_where} has "
                          f"{spectra.shape[0]} spectra")
    return spectra, labels
