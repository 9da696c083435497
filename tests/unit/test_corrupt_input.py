"""Corrupt input, generated: every input format the jobs read, damaged in many ways by hypothesis.

Each case starts from a valid tiny file (redshift HDF5 shard, .npy pair and share part; land-cover RGB
tile, hyperspectral image, ground truth and patch shard; Dom-ST netCDF, RDB, distance raster,
watersheds.json and per-watershed bundle), damages it (truncation, flipped bytes,
overwritten ranges, an empty file, or a
structural change: a dataset/variable/column dropped, wrong shape, wrong dtype, NaN/inf, values out of
range, garbage text) and hands it to the function an executor calls on those bytes. The outcome must be
either a successful read whose result still satisfies the format's declared schema, or a SchemaError
whose message names the file (and the record, dataset or pixel where the damage names one).

Each read runs in a forked child with a time limit and an address-space limit, so a hang, a crash in
a C library (segfault) or a runaway allocation is reported as such instead of stopping the test run.
"""
from __future__ import annotations

import io
import json
import os
import resource
import select
import signal
import time
from datetime import timedelta
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rdd_io import domst_read as dr
from rdd_io import domst_sim as dsim
from rdd_io import landcover_read as lr
from rdd_io import landcover_scene as lscene
from rdd_io import redshift_bundle as rb
from rdd_io import redshift_sim as rsim
from rdd_io import storage
from rdd_io.landcover_patches import LANDCOVER_PATCHES
from rdd_io.schema import REDSHIFT, SchemaError

pytestmark = [pytest.mark.unit, pytest.mark.timeout(180)]

CASE_TIMEOUT_S = 20  # one read of a file of a few KB; far longer means a hang
# Derandomized (the same cases on every run, CI included), nothing written into the repository.
CASES = settings(max_examples=40, deadline=timedelta(seconds=CASE_TIMEOUT_S + 10), derandomize=True,
                 database=None, print_blob=False,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BANDS, N_CLASSES = 16, 8           # redshift
HSI_BANDS = 6                      # land cover
GT_CLASSES = lscene.N_CLASSES      # 20, plus 0 = unclassified


# ------------------------------------------------------------------------------ isolated reads
def run_isolated(check, timeout_s: float = CASE_TIMEOUT_S) -> tuple[str, str]:
    """Run check() in a forked child: ('ok', problem or ''), ('error', 'Class: message'), ('hang', ''),
    or ('crash', signal name). The child may use 2 GiB beyond what the parent has mapped."""
    r, w = os.pipe()
    limit = psutil.Process().memory_info().vms + (2 << 30)
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(r)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            try:
                outcome = ("ok", check() or "")
            except BaseException as exc:  # reported to the parent, which judges it
                outcome = ("error", f"{type(exc).__name__}: {exc}")
            data = json.dumps(outcome).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "hang", f"no result within {timeout_s} s"
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "crash", signal.Signals(os.WTERMSIG(status)).name
    return tuple(json.loads(b"".join(chunks))) if chunks else ("crash", f"exit status {status}")


def judge(outcome: tuple[str, str], name: str, mentions: tuple[str, ...], case: str) -> None:
    kind, text = outcome
    if kind == "ok":
        assert not text, f"{case}: read succeeded but the result breaks the schema: {text}"
        return
    assert kind == "error", f"{case}: {kind} ({text})"
    assert text.startswith("SchemaError: "), f"{case}: not a SchemaError: {text[:400]}"
    message = text[len("SchemaError: "):]
    assert name in message.split(":", 1)[0] or message.startswith(name), \
        f"{case}: the error does not start with the file name {name!r}: {message[:400]}"
    for word in mentions:
        assert word in message, f"{case}: the error does not name {word!r}: {message[:400]}"


def check_case(reader, validate, name: str, case: tuple[str, bytes, tuple[str, ...]]) -> None:
    description, data, mentions = case
    outcome = run_isolated(lambda: validate(reader(data)))
    event(f"outcome: {outcome[0]}")  # --hypothesis-show-statistics: how many cases read, how many failed
    judge(outcome, name, mentions, description)


# ------------------------------------------------------------------------------ byte damage
def byte_damage(valid: bytes):
    """Damage that knows nothing of the format: (description, bytes, names the error must hold)."""
    size = len(valid)
    truncated = st.integers(0, size - 1).map(lambda n: (f"truncated to {n} of {size} bytes", valid[:n], ()))

    def flip(flips):
        out = bytearray(valid)
        for pos, mask in flips:
            out[pos] ^= mask
        return f"bytes flipped at {[p for p, _ in flips]}", bytes(out), ()

    flipped = st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1, max_size=8).map(flip)

    def overwrite(args):
        pos, junk = args
        out = bytearray(valid)
        out[pos:pos + len(junk)] = junk
        return f"{len(junk)} bytes overwritten at {pos}", bytes(out[:size]), ()

    overwritten = st.tuples(st.integers(0, size - 1), st.binary(min_size=1, max_size=64)).map(overwrite)
    empty = st.just(("empty file", b"", ()))
    return st.one_of(truncated, flipped, overwritten, empty)


def indexed(items: list):
    """sampled_from by position: hypothesis prints the index, not kilobytes of arrays."""
    return st.integers(0, len(items) - 1).map(items.__getitem__)


def damage(valid: bytes, structural):
    """Half the cases byte damage, half damage that knows the format."""
    return st.one_of(byte_damage(valid), structural)


# ------------------------------------------------------------------------------ HDF5 (schemas)
def h5_bytes(schema, arrays, attrs=None) -> bytes:
    buf = io.BytesIO()
    schema.write_h5(buf, arrays, attrs)
    return buf.getvalue()


def h5_edit(valid: bytes, fn) -> bytes:
    buf = io.BytesIO(valid)
    with h5py.File(buf, "r+") as h5:
        fn(h5)
    return buf.getvalue()


def _replace(h5, name, data):
    del h5[name]
    h5.create_dataset(name, data=data)


def h5_structural(valid: bytes, arrays: dict, float_fields: tuple[str, ...], bad_values: dict | None = None):
    """Structural damage to a schema's HDF5 file: datasets dropped, reshaped, retyped, NaN/inf, a group,
    and values outside a field's declared bounds (`bad_values`: field -> values to plant)."""
    fields = sorted(arrays)
    n = len(next(iter(arrays.values())))
    field = st.sampled_from(fields)

    def drop(f):
        return f"dataset {f!r} dropped", h5_edit(valid, lambda h5: h5.__delitem__(f)), (f"'{f}'",)

    def extra_axis(f):
        return f"dataset {f!r} with an extra axis", \
            h5_edit(valid, lambda h5: _replace(h5, f, arrays[f][..., None])), (f"'{f}'",)

    def fewer(f):
        return f"dataset {f!r} one record short", \
            h5_edit(valid, lambda h5: _replace(h5, f, arrays[f][:-1])), (f"'{f}'",)

    def retype(args):
        f, dtype = args
        data = arrays[f].astype(dtype) if dtype != "S8" else np.array([str(v) for v in arrays[f].ravel()], "S8")
        # a lossless widening (int16 -> float32) may pass; anything else must name the dataset
        return f"dataset {f!r} as {dtype}", h5_edit(valid, lambda h5: _replace(h5, f, data)), (f"'{f}'",)

    def group(f):
        def fn(h5):
            del h5[f]
            h5.create_group(f)
        return f"dataset {f!r} replaced by a group", h5_edit(valid, fn), (f"'{f}'",)

    def nonfinite(args):
        f, record, value = args
        data = arrays[f].copy()
        data.reshape(n, -1)[record, 0] = value
        return (f"{value} in record {record} of {f!r}", h5_edit(valid, lambda h5: _replace(h5, f, data)),
                (f"record {record}", f"'{f}'"))

    def schema_attr(text):
        return f"schema attribute {text!r}", h5_edit(valid, lambda h5: h5.attrs.__setitem__("schema", text)), ()

    def out_of_bounds(args):
        f, record, value = args
        data = arrays[f].copy()
        data.reshape(n, -1)[record, -1] = value
        return (f"{value} in record {record} of {f!r}", h5_edit(valid, lambda h5: _replace(h5, f, data)),
                (f"record {record}", f"'{f}'"))

    dtypes = st.sampled_from(["float64", "int64", "int16", "complex64", "bool", "uint8", "float16", "S8"])
    bounded = [st.tuples(st.just(f), st.integers(0, n - 1), st.sampled_from(values)).map(out_of_bounds)
               for f, values in (bad_values or {}).items()]
    return st.one_of(*bounded,
        field.map(drop), field.map(extra_axis), field.map(fewer), st.tuples(field, dtypes).map(retype),
        field.map(group),
        st.tuples(st.sampled_from(float_fields), st.integers(0, n - 1), st.sampled_from([np.nan, np.inf, -np.inf]))
        .map(nonfinite),
        st.text(max_size=12).filter(lambda t: "\x00" not in t).map(schema_attr))


def finite(where: str, array: np.ndarray) -> str:
    return "" if np.isfinite(array).all() else f"{where} holds NaN or inf"


def all_of(*problems: str) -> str:
    return "; ".join(p for p in problems if p)


# ------------------------------------------------------------------------------ redshift
SHARD_ARRAYS = rsim.simulate(6, 3, bands=BANDS, n_classes=N_CLASSES)
SHARD = h5_bytes(REDSHIFT, SHARD_ARRAYS, {"shard": 3})
SHARD_PATH = "file:/data/redshift/shard-00003.h5"


def valid_redshift(out) -> str:
    spectra, labels = out
    return all_of(
        "" if spectra.dtype == np.float32 and spectra.ndim == 2 and spectra.shape[1] == BANDS
        else f"spectra {spectra.dtype} {spectra.shape}",
        "" if labels.dtype == np.int32 and labels.shape == spectra.shape[:1]
        else f"labels {labels.dtype} {labels.shape}",
        finite("spectra", spectra),
        "" if labels.size == 0 or (labels.min() >= 0 and labels.max() < N_CLASSES) else "label out of range")


def shard_structural():
    def label(args):
        record, value = args
        data = SHARD_ARRAYS["label"].copy()
        data[record] = value
        return (f"label {value} in record {record}", h5_edit(SHARD, lambda h5: _replace(h5, "label", data)),
                (f"record {record}",))

    def bands(extra):
        data = rsim.simulate(6, 4, bands=BANDS + extra, n_classes=N_CLASSES)["spectra"]
        return f"{BANDS + extra} bands", h5_edit(SHARD, lambda h5: _replace(h5, "spectra", data)), ("'spectra'",)

    outside = st.one_of(st.integers(-2**31, -1), st.integers(N_CLASSES, 2**31 - 1))
    return st.one_of(h5_structural(SHARD, SHARD_ARRAYS, ("spectra", "z")),
                     st.tuples(st.integers(0, 5), outside).map(label),
                     st.sampled_from([-BANDS + 1, -1, 1, 7]).map(bands))


@CASES
@given(case=damage(SHARD, shard_structural()))
def test_redshift_shard(case):
    check_case(lambda data: rb._shard_arrays(SHARD_PATH, data, N_CLASSES, BANDS), valid_redshift,
               "shard-00003.h5", case)


def npy_bytes(array, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


NPY_SPECTRA = npy_bytes(SHARD_ARRAYS["spectra"])
NPY_LABELS = npy_bytes(SHARD_ARRAYS["label"].astype(np.int64))
NPY_ONEHOT = npy_bytes(np.eye(N_CLASSES, dtype=np.float32)[SHARD_ARRAYS["label"]])


def npy_structural(which: str):
    base = SHARD_ARRAYS["spectra"] if which == "spectra" else SHARD_ARRAYS["label"].astype(np.int64)
    variants = [
        ("rank 3", base[..., None]), ("rank 0", np.array(base.ravel()[0])), ("one record short", base[:-1]),
        ("strings", base.astype("U8")), ("big-endian", base.astype(base.dtype.newbyteorder(">"))),
        ("Fortran order", np.asfortranarray(base.reshape(len(base), -1))), ("complex", base.astype(np.complex64)),
        ("float16", base.astype(np.float16)), ("empty", base[:0]),
    ]
    plain = indexed(variants).map(lambda v: (f"{which}.npy {v[0]}", npy_bytes(v[1]), ()))
    pickled = st.just((f"{which}.npy object array (pickle)",
                       npy_bytes(np.array([{"x": 1}] * 6, dtype=object), allow_pickle=True), ()))

    def value(args):
        record, v = args
        data = base.astype(np.float64).copy()
        data.reshape(len(data), -1)[record, 0] = v
        return f"{v} in record {record} of {which}.npy", npy_bytes(data), ()

    values = st.tuples(st.integers(0, 5), st.sampled_from([np.nan, np.inf, -1.0, 2.5, float(N_CLASSES), 1e40]))
    return st.one_of(plain, pickled, values.map(value))


@CASES
@given(which=st.sampled_from(["spectra", "labels", "onehot"]), data=st.data())
def test_redshift_npy_pair(which, data):
    valid = {"spectra": NPY_SPECTRA, "labels": NPY_LABELS, "onehot": NPY_ONEHOT}[which]
    structural = npy_structural("spectra" if which == "spectra" else "labels")
    description, damaged, mentions = data.draw(damage(valid, structural))
    spectra = damaged if which == "spectra" else NPY_SPECTRA
    labels = NPY_ONEHOT if which == "onehot" else NPY_LABELS
    labels = damaged if which != "spectra" else labels
    name = "spectra.npy" if which == "spectra" else "labels.npy"

    def read(_):
        return rb._npy_arrays(("file:/data/spectra.npy", spectra), ("file:/data/labels.npy", labels),
                              N_CLASSES, BANDS)

    outcome = run_isolated(lambda: valid_redshift(read(None)))
    event(f"outcome: {outcome[0]}")
    if outcome[0] == "error" and outcome[1].startswith("SchemaError: "):  # may name the other file first
        assert name in outcome[1], f"{description}: the error does not name {name}: {outcome[1][:400]}"
        return
    judge(outcome, name, mentions, f"{which}: {description}")


SHARE_ARRAYS = {"spectra": SHARD_ARRAYS["spectra"], "label": SHARD_ARRAYS["label"],
                "index": np.arange(10, 16, dtype=np.int64)}
SHARE_PART = h5_bytes(rb.BUNDLE, SHARE_ARRAYS)


def valid_share(out) -> str:
    """What rdd_io.redshift_bundle.BUNDLE declares (the worker checks labels against n_classes itself)."""
    spectra, label, index = out["spectra"], out["label"], out["index"]
    return all_of("" if spectra.dtype == np.float32 and spectra.ndim == 2
                  else f"spectra {spectra.dtype} {spectra.shape}",
                  "" if label.dtype == np.int32 and label.shape == spectra.shape[:1] else "label",
                  "" if index.dtype == np.int64 and index.shape == label.shape else "index",
                  finite("spectra", spectra), "" if (label >= 0).all() and (index >= 0).all() else "negative values")


@CASES
@given(case=damage(SHARE_PART, h5_structural(SHARE_PART, SHARE_ARRAYS, ("spectra",),
                                             {"label": [-1, -2**31], "index": [-1]})))
def test_redshift_share_part_read_by_a_worker(case, tmp_path_factory):
    folder = tmp_path_factory.mktemp("share")
    good = {k: v + 100 if k == "index" else v for k, v in SHARE_ARRAYS.items()}
    (folder / "part-00000.h5").write_bytes(h5_bytes(rb.BUNDLE, good))
    (folder / "part-00001.h5").write_bytes(case[1])  # the second part is damaged
    check_case(lambda _: rb.load_share(storage.to_uri(folder)), valid_share, "part-00001.h5", case)


# ------------------------------------------------------------------------------ land cover
_rng = np.random.default_rng(0)
RGB_TILE = _rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
HSI = _rng.random((6, 5, HSI_BANDS), dtype=np.float32)
GT = _rng.integers(0, GT_CLASSES + 1, (12, 10), dtype=np.uint8)


def tiff(array) -> bytes:
    """A GeoTIFF as the scene writer makes it, for any shape and dtype (2-D: no planar configuration)."""
    import tifffile
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        return lscene.tiff_bytes(array, 0.5)
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, photometric="minisblack",
                     planarconfig="contig" if array.ndim == 3 and array.shape[2] > 1 else None,
                     extratags=[(33550, "d", 3, (0.5, 0.5, 0.0), True),
                                (33922, "d", 6, (0.0, 0.0, 0.0) + lscene.ORIGIN_UTM + (0.0,), True)])
    return buf.getvalue()


def tiff_structural(base: np.ndarray, variants: list, pixel_values: list):
    """Re-encoded rasters: other shapes and dtypes, and single pixels set to bad values."""
    plain = indexed(variants).map(lambda v: (v[0], tiff(v[1]), v[2]))

    def pixel(args):
        r, c, value = args
        data = base.astype(np.result_type(base.dtype, type(value))).copy()
        data[r, c] = value
        return f"{value} at pixel ({r}, {c})", tiff(data), (f"row {r}, col {c}",)

    return st.one_of(plain, st.tuples(st.integers(0, base.shape[0] - 1), st.integers(0, base.shape[1] - 1),
                                      st.sampled_from(pixel_values)).map(pixel))


def shape_variants(base):
    return [("2-D", base.reshape(base.shape[0], -1)[:, :base.shape[1]], ()),
            ("4 channels", np.concatenate([base, base[..., :1]], axis=-1) if base.ndim == 3 else base[..., None], ()),
            ("one row", base[:1], ()), ("as float64", base.astype(np.float64), ()),
            ("as int16", base.astype(np.int16), ()), ("as uint16", base.astype(np.uint16), ()),
            ("as bool", base.astype(bool), ())]


def valid_rgb(out) -> str:
    return "" if out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 else f"rgb {out.dtype} {out.shape}"


def valid_hsi(out) -> str:
    return all_of("" if out.dtype == np.float32 and out.ndim == 3 and out.shape[2] == HSI_BANDS
                  else f"hsi {out.dtype} {out.shape}", finite("hsi", out))


def valid_gt(out) -> str:
    ok = out.dtype == np.uint8 and out.ndim == 2 and (out.size == 0 or out.max() <= GT_CLASSES)
    return "" if ok else f"gt {out.dtype} {out.shape} max {out.max() if out.size else None}"


RGB_BYTES, HSI_BYTES, GT_BYTES = tiff(RGB_TILE), tiff(HSI), tiff(GT)


@CASES
@given(case=damage(RGB_BYTES, indexed(shape_variants(RGB_TILE)).map(lambda v: (v[0], tiff(v[1]), v[2]))))
def test_landcover_rgb_tile(case):
    check_case(lambda data: lr.read_rgb_tile(data, "file:/scene/rgb/tile_r1_c2.tif"), valid_rgb,
               "tile_r1_c2.tif", case)


@CASES
@given(case=damage(HSI_BYTES, tiff_structural(HSI, shape_variants(HSI) + [
    ("7 bands", np.concatenate([HSI, HSI[..., :1]], axis=-1), ("bands",))], [np.nan, np.inf, -np.inf])))
def test_landcover_hyperspectral_image(case):
    check_case(lambda data: lr.read_hsi(data, "file:/scene/hsi.tif", expected_bands=HSI_BANDS), valid_hsi,
               "hsi.tif", case)


@CASES
@given(case=damage(GT_BYTES, tiff_structural(GT, shape_variants(GT) + [
    ("fractions", GT + np.float32(0.5), ())], [GT_CLASSES + 1, 255, np.nan, 2.5, -1.0])))
def test_landcover_ground_truth(case):
    check_case(lambda data: lr.read_gt(data, "file:/scene/gt.tif"), valid_gt, "gt.tif", case)


PATCH_ARRAYS = {"rgb": _rng.integers(0, 256, (3, 25, 25, 3)).astype(np.float32),
                "hsi": _rng.random((3, 25, 25, 4), dtype=np.float32),
                "label": np.array([0, 7, 19], np.int32), "centre": np.array([[12, 12], [30, 40], [50, 12]], np.int32)}
PATCH_SHARD = h5_bytes(LANDCOVER_PATCHES, PATCH_ARRAYS, {"shard": 0})


def valid_patches(out) -> str:
    n = len(out["label"])
    return all_of("" if out["rgb"].shape == (n, 25, 25, 3) and out["rgb"].dtype == np.float32 else "rgb",
                  "" if out["hsi"].shape[:4] == (n, 25, 25, 4) and out["hsi"].dtype == np.float32 else "hsi",
                  "" if out["label"].dtype == np.int32 else "label dtype",
                  "" if n == 0 or (out["label"].min() >= 0 and out["label"].max() < GT_CLASSES)
                  else "label outside 0..19", finite("rgb", out["rgb"]), finite("hsi", out["hsi"]))


@CASES
@given(case=damage(PATCH_SHARD, h5_structural(PATCH_SHARD, PATCH_ARRAYS, ("rgb", "hsi"),
                                              {"label": [-1, GT_CLASSES, 2**31 - 1], "centre": [-3]})))
def test_landcover_patch_shard_read_by_the_chief(case, tmp_path_factory):
    from jobs.landcover_roles import load_patches
    folder = tmp_path_factory.mktemp("patches")
    (folder / "shard-00000.h5").write_bytes(PATCH_SHARD)
    (folder / "shard-00001.h5").write_bytes(case[1])
    check_case(lambda _: load_patches(storage.to_uri(folder)), valid_patches, "shard-00001.h5", case)


# ------------------------------------------------------------------------------ Dom-ST
DATES = np.arange(np.datetime64("2001-01-01"), np.datetime64("2001-01-11"))
LAT, LON = np.array([40.0, 40.5, 41.0]), np.array([-96.0, -95.5, -95.0, -94.5])
PRE = _rng.random((10, 3, 4)).astype(np.float32) * 5
PRECIP_NAME = "cru_ts_layout_pre_daily.nc"


def netcdf(dims=("time", "lat", "lon"), units="mm/day", time_units="days since 1900-1-1",
           calendar="gregorian", drop=(), pre=PRE, lat=LAT, times=None) -> bytes:
    import tempfile

    import netCDF4
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pre.nc")
        with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
            for dim, size in (("lon", len(LON)), ("lat", len(lat)), ("time", None)):
                ds.createDimension(dim, size)
            for name, values in (("lon", LON), ("lat", lat)):
                if name not in drop:
                    ds.createVariable(name, "f4", (name,))[:] = values
            if "time" not in drop:
                t = ds.createVariable("time", "f4", ("time",))
                t.units, t.calendar = time_units, calendar
                t[:] = (DATES - np.datetime64("1900-01-01")).astype(float) if times is None else times
            if "pre" not in drop:
                v = ds.createVariable("pre", "f4", dims, zlib=True, fill_value=dsim.CRU_FILL)
                v.units = units
                order = [("time", "lat", "lon").index(d) for d in dims]
                v[:] = np.transpose(pre, order)
        return Path(path).read_bytes()


NETCDF = netcdf()


def netcdf_structural():
    pre = st.tuples(st.integers(0, 9), st.integers(0, 2), st.integers(0, 3))

    def value(args):
        (t, i, j), v = args
        data = PRE.copy()
        data[t, i, j] = v
        mentions = (str(DATES[t]),) if v < 0 else ()
        return f"pre[{t}, {i}, {j}] = {v}", netcdf(pre=data), mentions

    variants = [("variable pre dropped", netcdf(drop=("pre",)), ("'pre'",)),
                ("variable time dropped", netcdf(drop=("time",)), ("'time'",)),
                ("variable lat dropped", netcdf(drop=("lat",)), ("'lat'",)),
                ("pre in mm/month", netcdf(units="mm/month"), ("monthly",)),
                ("pre in kelvin", netcdf(units="K"), ("units",)),
                ("time in hours", netcdf(time_units="hours since 1900-1-1"), ("time units",)),
                ("noleap calendar", netcdf(calendar="noleap"), ("calendar",)),
                ("pre as (lat, time, lon)", netcdf(dims=("lat", "time", "lon")), ()),
                ("pre as (time, lat)", netcdf(dims=("time", "lat"), pre=PRE[:, :, 0]), ("'pre'",)),
                ("latitude not monotonic", netcdf(lat=np.array([40.0, 41.0, 40.5])), ("lat",)),
                ("half days", netcdf(times=(DATES - np.datetime64("1900-01-01")).astype(float) + 0.5), ("whole days",))]
    return st.one_of(indexed(variants),
                     st.tuples(pre, st.sampled_from([np.nan, np.inf, -0.5, -1e20, 1e31])).map(value))


def valid_precip(out) -> str:
    dates, lat, lon, pre = out
    return all_of(
        "" if pre.dtype == np.float32 and pre.shape == (len(dates), len(lat), len(lon)) else f"pre {pre.shape}",
        "" if dates.dtype == np.dtype("datetime64[D]") else f"dates {dates.dtype}",
        "" if (np.diff(lat) > 0).all() and (np.diff(lon) > 0).all() else "axes not ascending",
        "" if not (pre < 0).any() and not np.isinf(pre).any() else "negative or infinite precipitation")


@CASES
@given(case=damage(NETCDF, netcdf_structural()))
def test_domst_cru_netcdf(case):
    check_case(lambda data: dr.read_cru_precip(data, PRECIP_NAME), valid_precip, PRECIP_NAME, case)


SITE = "06800000"
RDB_TEXT = dsim.usgs_rdb_text(SITE, DATES, np.linspace(1.0, 5.0, 10))
RDB = RDB_TEXT.encode()
RDB_NAME = f"{SITE}.rdb"


def rdb_structural():
    lines = RDB_TEXT.splitlines()
    header = next(k for k, line in enumerate(lines) if line.startswith("agency_cd"))
    junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                          blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                   max_size=40)

    def insert(args):
        at, text = args
        out = lines[:at] + [text] + lines[at:]
        mentions = (f"line {at + 1}",) if at > header + 1 and text.strip() and not text.startswith("#") else ()
        return f"line {at + 1} inserted: {text!r}", ("\n".join(out) + "\n").encode(), mentions

    def field(args):
        row, col, text = args
        out = list(lines)
        cells = out[row].split("\t")
        cells[col % len(cells)] = text
        out[row] = "\t".join(cells)
        return f"line {row + 1} field {col} = {text!r}", ("\n".join(out) + "\n").encode(), ()

    def drop_column(col):
        out = lines[:header] + ["\t".join(c for k, c in enumerate(line.split("\t")) if k != col)
                                for line in lines[header:]]
        return f"column {col} dropped", ("\n".join(out) + "\n").encode(), ()

    def drop_line(at):
        return f"line {at + 1} dropped", ("\n".join(lines[:at] + lines[at + 1:]) + "\n").encode(), ()

    latin = st.just(("latin-1 text", RDB_TEXT.replace("Provisional", "Provisi\xf3nal").encode("latin-1"), ()))
    rows = st.integers(header + 2, len(lines) - 1)
    values = st.one_of(junk, st.sampled_from(["-3.5", "nan", "inf", "1e400", "Ice", "", "2001-02-30", "06800001"]))
    return st.one_of(st.tuples(st.integers(0, len(lines)), junk).map(insert),
                     st.tuples(rows, st.integers(0, 4), values).map(field),
                     st.integers(0, 4).map(drop_column), st.integers(0, len(lines) - 1).map(drop_line), latin)


def valid_discharge(out) -> str:
    site, dates, q = out
    return all_of("" if site == SITE or site.strip() else f"site {site!r}",
                  "" if dates.dtype == np.dtype("datetime64[D]") and q.shape == dates.shape else "shapes",
                  "" if (np.diff(dates).astype(int) == 1).all() else "dates not gap-free",
                  "" if q.dtype == np.float64 and not (q < 0).any() and not np.isinf(q).any() else "discharge values")


@CASES
@given(case=damage(RDB, rdb_structural()))
def test_domst_usgs_rdb(case):
    check_case(lambda data: dr.read_usgs_rdb(data, RDB_NAME), valid_discharge, RDB_NAME, case)


DISTANCE = _rng.random((3, 4)) * 10
DISTANCE_NAME = "distance_to_water.tif"
DISTANCE_TIF = dsim.geotiff_bytes(LAT, LON, DISTANCE)


def distance_structural():
    def untagged(_):
        return "no georeferencing tags", tiff(DISTANCE.astype(np.float32)), ("georeferencing",)

    def value(args):
        i, j, v = args
        data = DISTANCE.copy()
        data[i, j] = v
        return f"distance {v} at ({i}, {j})", dsim.geotiff_bytes(LAT, LON, data), ()

    def stacked(_):
        return "3-D raster", tiff(np.stack([DISTANCE] * 2, axis=-1).astype(np.float32)), ()

    return st.one_of(st.just(0).map(untagged), st.just(0).map(stacked),
                     st.tuples(st.integers(0, 2), st.integers(0, 3),
                               st.sampled_from([-1.0, -np.inf, np.inf, np.nan, 3e38])).map(value))


def valid_distance(out) -> str:
    lat, lon, raster = out
    return all_of("" if raster.shape == (len(lat), len(lon)) and raster.dtype == np.float64 else "shape",
                  "" if (np.diff(lat) > 0).all() else "lat not ascending",
                  "" if not (raster < 0).any() and not np.isinf(raster).any() else "distance values")


@CASES
@given(case=damage(DISTANCE_TIF, distance_structural()))
def test_domst_distance_raster(case):
    check_case(lambda data: dr.read_distance(data, DISTANCE_NAME), valid_distance, DISTANCE_NAME, case)


WATERSHEDS_NAME = "watersheds.json"
WATERSHEDS = {"format": "domst-watersheds/1", "precip_file": "precip/x.nc", "distance_file": DISTANCE_NAME,
              "grid": {"n_lat": 3, "n_lon": 4},
              "watersheds": [{"id": "W01", "site_no": SITE, "discharge_file": "discharge/a.rdb", "pixels": [0, 1, 4]},
                             {"id": "W02", "site_no": "06800001", "discharge_file": "discharge/b.rdb",
                              "pixels": [2, 3, 7, 11]}]}
WATERSHEDS_JSON = json.dumps(WATERSHEDS).encode()


def watersheds_structural():
    def edit(fn, description):
        meta = json.loads(WATERSHEDS_JSON)
        fn(meta)
        return description, json.dumps(meta).encode(), ()

    def shed_key(args):
        w, key = args
        return edit(lambda m: m["watersheds"][w].pop(key), f"watershed {w} without {key!r}")

    def pixel(args):
        w, value = args
        return edit(lambda m: m["watersheds"][w]["pixels"].append(value), f"pixel {value!r} added to watershed {w}")

    junk_values = st.one_of(st.integers(-5, 20), st.sampled_from(["x", None, 1.5, [1], {"a": 1}]))
    return st.one_of(
        st.sampled_from(["grid", "watersheds"]).map(lambda k: edit(lambda m: m.pop(k), f"{k!r} dropped")),
        st.tuples(st.integers(0, 1), st.sampled_from(["id", "site_no", "pixels"])).map(shed_key),
        st.tuples(st.integers(0, 1), junk_values).map(pixel),
        junk_values.map(lambda v: edit(lambda m: m["grid"].__setitem__("n_lat", v), f"n_lat = {v!r}")),
        junk_values.map(lambda v: edit(lambda m: m["watersheds"][0].__setitem__("site_no", v), f"site_no = {v!r}")),
        junk_values.map(lambda v: edit(lambda m: m.__setitem__("watersheds", v), f"watersheds = {v!r}")))


def valid_watersheds(meta) -> str:
    n_pix = int(meta["grid"]["n_lat"]) * int(meta["grid"]["n_lon"])
    seen: list[int] = []
    for shed in meta["watersheds"]:
        p = shed["pixels"]
        if p.dtype != np.int64 or (p.size and (p.min() < 0 or p.max() >= n_pix)):
            return f"pixels of {shed.get('id')}: {p}"
        if not str(shed["site_no"]).isdigit():
            return f"site_no {shed['site_no']!r}"
        seen += p.tolist()
    return "" if len(seen) == len(set(seen)) else "a pixel in two watersheds"


@CASES
@given(case=damage(WATERSHEDS_JSON, watersheds_structural()))
def test_domst_watersheds_json(case):
    check_case(lambda data: dr.read_watersheds(data, WATERSHEDS_NAME), valid_watersheds, WATERSHEDS_NAME, case)


def _bundle():
    from rdd_io.domst_bundle import bundle_bytes
    from rdd_io.schema import DOMST_DAYS as WATERSHED
    days = np.arange(np.datetime64("2001-01-01"), np.datetime64("2001-01-21"))
    q = np.linspace(1.0, 3.0, 20)
    q[5] = np.nan
    aligned = dr.align(days, _rng.random((20, 3, 4)).astype(np.float32), [0, 1, 5], days, q, watershed="W01")
    arrays = WATERSHED.read_h5(bundle_bytes(aligned, np.array([1.0, 2.0, 3.0]), [0, 1, 5], SITE), "W01.h5")
    return arrays, bundle_bytes(aligned, np.array([1.0, 2.0, 3.0]), [0, 1, 5], SITE)


BUNDLE_ARRAYS, BUNDLE = _bundle()


def bundle_attribute_damage():
    def drop(key):
        return f"attribute {key!r} dropped", h5_edit(BUNDLE, lambda h5: h5.attrs.__delitem__(key)), (key,)

    def retype(args):
        key, value = args
        return f"attribute {key!r} = {value!r}", h5_edit(BUNDLE, lambda h5: h5.attrs.__setitem__(key, value)), ()

    keys = st.sampled_from(["watershed", "site_no", "n_missing"])
    values = st.sampled_from(["x", 1.5, -1, np.zeros((2, 2)), np.array([1.0, np.nan, 2.0]), np.arange(5)])
    return st.one_of(keys.map(drop), st.tuples(keys, values).map(retype))


def bundle_pixel_damage():
    """Damage to the per-pixel records (group pixels/): the group gone, a field gone, too few or too many
    pixels, a NaN or negative distance, a negative pixel index."""
    def edit(description, fn, mentions=()):
        return description, h5_edit(BUNDLE, fn), mentions

    def replace(field, data):
        return lambda h5: _replace(h5["pixels"], field, np.asarray(data))
    return st.sampled_from([
        edit("group pixels/ dropped", lambda h5: h5.__delitem__("pixels"), ("'pixels'",)),
        edit("pixels/distance_km dropped", lambda h5: h5["pixels"].__delitem__("distance_km"), ("'distance_km'",)),
        edit("two pixel records for three columns", lambda h5: (replace("distance_km", [1.0, 2.0])(h5),
                                                                  replace("pixel", [0, 1])(h5)), ("pixel",)),
        edit("four pixel records for three columns", lambda h5: (replace("distance_km", [1.0, 2.0, 3.0, 4.0])(h5),
                                                                   replace("pixel", [0, 1, 5, 6])(h5)), ("pixel",)),
        edit("a NaN distance", replace("distance_km", [1.0, np.nan, 3.0]), ("'distance_km'",)),
        edit("a negative distance", replace("distance_km", [1.0, -2.0, 3.0]), ("'distance_km'",)),
        edit("a negative pixel index", replace("pixel", [0, -1, 5]), ("'pixel'",)),
    ])


def valid_bundle(out) -> str:
    t, p = out["precip"].shape if out["precip"].ndim == 2 else (-1, -1)
    return all_of("" if out["precip"].dtype == np.float32 and t >= 0 else "precip", finite("precip", out["precip"]),
                  "" if out["discharge"].shape == (t,) and out["valid"].shape == (t,) else "record counts",
                  "" if (np.isnan(out["discharge"]) == ~out["valid"]).all() else "discharge NaN off the mask",
                  "" if out["distance_km"].shape == (p,) else f"{out['distance_km'].shape} distances for {p} pixels",
                  "" if out["pixel"].dtype == np.int64 and isinstance(out["n_missing"], int) else "facts")


@CASES
@given(case=st.one_of(byte_damage(BUNDLE), bundle_attribute_damage(), bundle_pixel_damage(),
                      h5_structural(BUNDLE, BUNDLE_ARRAYS, ("precip",))))
def test_domst_watershed_bundle_read_by_a_worker(case):
    from rdd_io.domst_bundle import read_bundle
    check_case(lambda data: read_bundle(data, "W01.h5"), valid_bundle, "W01.h5", case)


# ------------------------------------------------------------------------------ the harness itself
def test_isolated_read_reports_hangs_crashes_and_wrong_errors():
    """The checks above can fail: a hang, a segfault, a raw error and a bad result are each caught."""
    assert run_isolated(lambda: "")[0] == "ok"
    assert run_isolated(lambda: os.kill(os.getpid(), signal.SIGSEGV)) == ("crash", "SIGSEGV")
    assert run_isolated(lambda: time.sleep(60), timeout_s=0.5)[0] == "hang"
    with pytest.raises(AssertionError, match="not a SchemaError"):
        judge(run_isolated(lambda: int("x")), "f.h5", (), "raw")
    with pytest.raises(AssertionError, match="does not start with the file name"):
        judge(("error", "SchemaError: other.h5: bad"), "f.h5", (), "other file")
    with pytest.raises(AssertionError, match="breaks the schema"):
        judge(run_isolated(lambda: valid_hsi(np.full((2, 2, HSI_BANDS), np.nan, np.float32))), "hsi.tif", (), "nan")


# ------------------------------------------------------------------------------ no half-written output
class PartitionsInOrder:
    """The two calls write_share makes on an RDD, over local partitions (iterables), in partition order:
    the driver's toLocalIterator also pulls one partition at a time, so a failing one stops the loop there."""

    def __init__(self, partitions, fn=None):
        self.partitions, self.fn = partitions, fn

    def mapPartitionsWithIndex(self, fn):
        return PartitionsInOrder(self.partitions, fn)

    def toLocalIterator(self):
        for i, partition in enumerate(self.partitions):  # lazily, as Spark runs one task per partition
            yield from self.fn(i, iter(partition))


def _rows_of(name: str, data: bytes, start: int):
    """(index, (spectrum, label)) rows of one shard, read the way the executors read it."""
    spectra, labels = rb._shard_arrays(name, data, N_CLASSES, BANDS)
    for k, (s, y) in enumerate(zip(spectra, labels)):
        yield start + k, (s, int(y))


def test_share_writer_stopped_by_a_bad_shard_leaves_only_whole_parts(tmp_path):
    uri = storage.to_uri(tmp_path / "share")
    storage.write_bytes(storage.join(uri, "part-00007.h5"), b"a part of an earlier run")
    bad = SHARD[: len(SHARD) // 2]
    partitions = [lambda: _rows_of("file:/in/shard-00000.h5", SHARD, 0),
                  lambda: _rows_of("file:/in/shard-00001.h5", SHARD, 6),
                  lambda: _rows_of("file:/in/shard-00002.h5", bad, 12),
                  lambda: _rows_of("file:/in/shard-00003.h5", SHARD, 18)]
    with pytest.raises(SchemaError, match=r"^shard-00002\.h5: "):
        rb.write_share(PartitionsInOrder([(row for row in p()) for p in partitions]), uri)
    folder = tmp_path / "share"
    assert sorted(os.listdir(folder)) == ["part-00000.h5", "part-00001.h5"]  # no temporaries, no stale part
    for k, name in enumerate(["part-00000.h5", "part-00001.h5"]):
        part = rb.BUNDLE.read_h5(str(folder / name))
        assert part["index"].tolist() == list(range(6 * k, 6 * k + 6))
        np.testing.assert_array_equal(part["spectra"], SHARD_ARRAYS["spectra"])


def test_patch_writer_refuses_a_bad_set_before_writing_anything(tmp_path):
    from rdd_io.landcover_patches import write_patch_shards
    arrays = {k: np.concatenate([v] * 3) for k, v in PATCH_ARRAYS.items()}
    arrays["hsi"][7, 3, 3, 1] = np.nan  # in the third shard of three
    with pytest.raises(SchemaError, match=r"record 7 of 'hsi' has NaN"):
        write_patch_shards(str(tmp_path / "patches"), arrays, shard_size=3)
    assert not (tmp_path / "patches").exists() or os.listdir(tmp_path / "patches") == []


def test_failed_write_keeps_the_earlier_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out" / "shard-00000.h5"
    storage.write_bytes(str(target), SHARD)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        storage.write_bytes(str(target), PATCH_SHARD)
    monkeypatch.undo()
    assert os.listdir(target.parent) == ["shard-00000.h5"]
    assert target.read_bytes() == SHARD
