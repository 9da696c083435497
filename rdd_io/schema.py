"""Record schemas, declared once and used both to write and to read HDF5 files.

A schema is a list of fields; each field is one HDF5 dataset whose first axis is the record axis
(shape entry None, spelled `N` below). Other axes are fixed ints or named sizes such as 'bands',
resolved from the data and required to agree across fields. Every failure is a SchemaError whose
message starts with the file's name and, where one record is at fault, names the record and field,
so a bad shard among thousands can be found from one log line.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

N = None  # the record axis in a Field shape


class SchemaError(ValueError):
    """Input that does not match its schema; the message names the file (and record)."""


@dataclass(frozen=True)
class Field:
    name: str
    dtype: Any
    shape: tuple  # first entry None (records); then ints or named sizes (str)
    # Inclusive (low, high) bounds on every value, either end None for open; checked on write and read,
    # so a class index damaged in a file is refused where it is read, not as a NaN loss in training.
    values: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(self.shape))
        if self.values is not None and len(self.values) != 2:
            raise ValueError(f"field {self.name!r}: values must be (low, high), got {self.values!r}")
        if not self.shape or self.shape[0] is not None:
            raise ValueError(f"field {self.name!r}: the first axis must be the record axis (None)")
        for dim in self.shape[1:]:
            if dim is None or not isinstance(dim, (int, str)) or isinstance(dim, bool):
                raise ValueError(f"field {self.name!r}: axis sizes after the first must be "
                                 f"ints or names, got {dim!r}")


def first_nonfinite(array: np.ndarray) -> tuple[int, str] | None:
    """(record index, 'NaN' or 'inf') of the first record holding a non-finite value, else None."""
    if array.dtype.kind not in "fc" or array.size == 0:
        return None
    flat = array.reshape(array.shape[0], -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if not bad.any():
        return None
    index = int(np.argmax(bad))
    return index, "NaN" if np.isnan(flat[index]).any() else "inf"


def source_name(source: Any, default: str = "<bytes>") -> str:
    """A short name for error messages: the file name of a path, else `default`."""
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source)) or os.fspath(source)
    return default


class Schema:
    def __init__(self, name: str, fields: Sequence[Field]):
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"schema {name!r}: duplicate field names in {names}")
        self.name = name
        self.fields = tuple(fields)

    def __repr__(self):
        return f"Schema({self.name!r}, {[f.name for f in self.fields]})"

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    # -- checking -----------------------------------------------------------------------------
    def _cast(self, where: str, field: Field, array: np.ndarray) -> np.ndarray:
        if array.dtype == field.dtype:
            return array
        if not np.can_cast(array.dtype, field.dtype, casting="safe"):
            raise SchemaError(f"{where}: '{field.name}' has dtype {array.dtype}, expected "
                              f"{field.dtype} (no lossless cast)")
        return array.astype(field.dtype)

    def _check_shapes(self, where: str, shapes: Mapping[str, tuple]) -> dict[str, int]:
        """Rank, fixed sizes, named sizes and record counts; returns the resolved named sizes."""
        sizes: dict[str, tuple[int, str]] = {}
        n_records: tuple[int, str] | None = None
        for field in self.fields:
            shape = shapes[field.name]
            if len(shape) != len(field.shape):
                raise SchemaError(f"{where}: '{field.name}' has rank {len(shape)} (shape "
                                  f"{tuple(shape)}), expected rank {len(field.shape)}")
            if n_records is None:
                n_records = (shape[0], field.name)
            elif shape[0] != n_records[0]:
                raise SchemaError(f"{where}: '{field.name}' has {shape[0]} records but "
                                  f"'{n_records[1]}' has {n_records[0]}")
            for axis, (dim, want) in enumerate(zip(shape[1:], field.shape[1:]), start=1):
                if isinstance(want, int) and dim != want:
                    raise SchemaError(f"{where}: '{field.name}' axis {axis} has size {dim}, "
                                      f"expected {want}")
                if isinstance(want, str):
                    seen = sizes.setdefault(want, (dim, field.name))
                    if seen[0] != dim:
                        raise SchemaError(f"{where}: '{field.name}' axis {axis} ({want}) has size "
                                          f"{dim} but '{seen[1]}' has {want}={seen[0]}")
        return {name: size for name, (size, _) in sizes.items()}

    def _check_values(self, where: str, arrays: Mapping[str, np.ndarray]) -> None:
        for field in self.fields:
            array = arrays[field.name]
            bad = first_nonfinite(array)
            if bad is not None:
                raise SchemaError(f"{where}: record {bad[0]} of '{field.name}' has {bad[1]}")
            if field.values is None or array.size == 0:
                continue
            low, high = field.values
            flat = array.reshape(array.shape[0], -1)
            outside = np.zeros(flat.shape, bool)
            if low is not None:
                outside |= flat < low
            if high is not None:
                outside |= flat > high
            if outside.any():
                record, k = (int(v) for v in np.argwhere(outside)[0])
                allowed = (f"below {low}" if high is None else f"above {high}" if low is None
                           else f"outside [{low}, {high}]")
                raise SchemaError(f"{where}: record {record} of '{field.name}' has {flat[record, k].item()!r}, "
                                  f"{allowed}")

    def validate(self, arrays: Mapping[str, Any], where: str = "<arrays>") -> dict[str, np.ndarray]:
        """Check in-memory arrays against the schema; returns them cast to the field dtypes."""
        unknown = sorted(set(arrays) - set(self.field_names))
        if unknown:
            raise SchemaError(f"{where}: unknown field(s) {unknown} for schema {self.name!r}; "
                              f"fields: {self.field_names}")
        out = {}
        for field in self.fields:
            if field.name not in arrays:
                raise SchemaError(f"{where}: missing field '{field.name}'")
            out[field.name] = self._cast(where, field, np.asarray(arrays[field.name]))
        self._check_shapes(where, {k: v.shape for k, v in out.items()})
        self._check_values(where, out)
        return out

    # -- files --------------------------------------------------------------------------------
    def write_h5(self, path_or_fileobj: Any, arrays: Mapping[str, Any],
                 attrs: Mapping[str, Any] | None = None, group: str | None = None) -> None:
        """Validate, then write one dataset per field (plus `attrs` as attributes): at the top of a new
        file, or with `group` into that group of an existing one (records of another axis beside the
        file's own, e.g. per pixel beside per day)."""
        where = source_name(path_or_fileobj, "<file object>")
        checked = self.validate(arrays, where if group is None else f"{where} ({group}/)")
        with h5py.File(path_or_fileobj, "w" if group is None else "a") as h5:
            node = h5 if group is None else h5.create_group(group)
            node.attrs["schema"] = self.name
            for key, value in (attrs or {}).items():
                node.attrs[key] = value
            for field in self.fields:
                node.create_dataset(field.name, data=checked[field.name])

    def read_h5(self, source: Any, name_for_errors: str | None = None,
                group: str | None = None) -> dict[str, np.ndarray]:
        """Read and check every field from a path, a binary file object or bytes (from `group`, if
        given, as write_h5 wrote it).

        Bytes are what Spark's binaryFiles delivers; they are wrapped in BytesIO, never unpickled.
        """
        where = name_for_errors or source_name(source)
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(bytes(source))
        try:
            h5 = h5py.File(source, "r")
        except Exception as exc:  # h5py raises OSError, but odd inputs surface other types
            raise SchemaError(f"{where}: not a readable HDF5 file ({type(exc).__name__}: "
                              f"{exc})") from None
        try:
            with h5:
                if group is None:
                    return self._read_open(h5, where)
                node = h5.get(group)
                if not isinstance(node, h5py.Group):
                    raise SchemaError(f"{where}: missing group '{group}' (found: {sorted(h5.keys())})")
                return self._read_open(node, f"{where} ({group}/)")
        except SchemaError:
            raise
        except Exception as exc:  # truncated data surfaces when a dataset is read
            raise SchemaError(f"{where}: damaged HDF5 file ({type(exc).__name__}: {exc})") from None

    def _read_open(self, h5: h5py.Group, where: str) -> dict[str, np.ndarray]:
        stored = h5.attrs.get("schema")
        if stored is not None:
            stored = stored.decode() if isinstance(stored, bytes) else str(stored)
            if stored != self.name:
                raise SchemaError(f"{where}: written with schema {stored!r}, "
                                  f"read as {self.name!r}")
        datasets = {}
        for field in self.fields:
            node = h5.get(field.name)
            if node is None:
                raise SchemaError(f"{where}: missing dataset '{field.name}' "
                                  f"(found: {sorted(h5.keys())})")
            if not isinstance(node, h5py.Dataset):
                raise SchemaError(f"{where}: '{field.name}' is a {type(node).__name__}, "
                                  f"not a dataset")
            datasets[field.name] = node
        # Dtypes and shapes first: a wrong file is rejected before its data is read.
        for field in self.fields:
            node = datasets[field.name]
            if node.dtype.kind not in "biuf" or not np.can_cast(node.dtype, field.dtype, "safe"):
                raise SchemaError(f"{where}: '{field.name}' has dtype {node.dtype}, expected "
                                  f"{field.dtype} (no lossless cast)")
        self._check_shapes(where, {k: v.shape for k, v in datasets.items()})
        out = {f.name: self._cast(where, f, datasets[f.name][()]) for f in self.fields}
        self._check_values(where, out)
        return out


REDSHIFT = Schema("redshift", [
    Field("spectra", np.float32, (N, "bands")),
    Field("z", np.float32, (N,)),
    Field("label", np.int32, (N,)),  # in [0, n_classes): the readers check it, n_classes comes with the job
])

# A Dom-ST watershed bundle (rdd_io/domst_bundle.py): one record per day at the top of the file, and one
# record per pixel of the watershed in its group 'pixels'.
DOMST_DAYS = Schema("domst-watershed", [
    Field("precip", np.float32, (N, "pixels")),   # mm/day, the watershed's pixels
    Field("discharge", np.float64, (N,)),          # m3/s; 0 where `valid` is false (schemas reject NaN)
    Field("valid", np.bool_, (N,)),                # discharge observed that day
    Field("day", np.int32, (N,)),                  # days since 1970-01-01, gap-free
])
DOMST_PIXELS = Schema("domst-watershed-pixels", [
    Field("distance_km", np.float64, (N,), values=(0, None)),  # to the nearest water source
    Field("pixel", np.int64, (N,), values=(0, None)),          # index in the region's flattened grid
])
