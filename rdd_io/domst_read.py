"""Readers for the Dom-ST inputs, from a path or from the bytes Spark's binaryFiles delivers, and the
steps that turn them into training windows.

- precipitation: netCDF in the CRU TS layout (dims time/lat/lon, variable `pre`), daily, mm/day. Fill
  values become NaN (CRU fills sea cells); a NaN inside a watershed is an error in `align`. Negative
  precipitation is an error naming the file, the date and the pixel. Axes are returned ascending.
- discharge: USGS NWIS daily-values RDB text, ft3/s (multiply by M3S_PER_CFS for m3/s). Returned on a
  gap-free daily axis: absent days, empty values and NWIS missing-value codes ('Eqp', 'Ice', ...) are NaN.
- distance to the nearest water source: a north-up float GeoTIFF (km) with ModelPixelScale and
  ModelTiepoint tags; GDAL_NODATA cells become NaN.
- watersheds.json: outlets, site numbers and pixel lists (flat index i_lat * n_lon + i_lon).
Every error is a SchemaError (a ValueError) whose message starts with the file's name.
"""
from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from rdd_io.schema import SchemaError, source_name
from rdd_io.storage import name_problem, relative_problem

M3S_PER_CFS = 0.028316846592  # exact: 1 ft3 in m3
MISSING_CODES = frozenset(("Eqp", "Ice", "Ssn", "Bkw", "Dis", "Fld", "Mnt", "Pr", "Rat", "Tst", "ZFl",
                           "***", "--"))
_DAILY_UNITS = {"mm/day", "mmday-1", "mmd-1", "mm/d", "kgm-2d-1", "kgm-2day-1", "kgm-2/day"}
_MONTHLY_UNITS = {"mm/month", "mmmonth-1", "mm/mon"}


def _where(name: Any, data: Any) -> str:
    return source_name(name) if name is not None else source_name(data)


def _read_raw(data: Any, where: str) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    try:
        with open(os.fspath(data), "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise SchemaError(f"{where}: file not found") from None


def _open_netcdf(data: Any, where: str):
    import netCDF4
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            return netCDF4.Dataset(where, mode="r", memory=bytes(data))
        return netCDF4.Dataset(os.fspath(data), mode="r")
    except FileNotFoundError:
        raise SchemaError(f"{where}: file not found") from None
    except Exception as exc:  # OSError mostly; damaged headers surface other types too
        raise SchemaError(f"{where}: not a readable netCDF file ({exc})") from None


def _decode_time(var, where: str) -> np.ndarray:
    units = str(getattr(var, "units", ""))
    m = re.fullmatch(r"\s*days since\s+(\d{1,4})-(\d{1,2})-(\d{1,2})(?:[ T][\d:.]+)?\s*", units)
    if not m:
        raise SchemaError(f"{where}: time units {units!r} are not 'days since YYYY-M-D'")
    calendar = str(getattr(var, "calendar", "standard")).lower()
    if calendar not in ("standard", "gregorian", "proleptic_gregorian"):
        raise SchemaError(f"{where}: calendar {calendar!r} is not supported (gregorian only)")
    origin = np.datetime64(f"{int(m[1]):04d}-{int(m[2]):02d}-{int(m[3]):02d}", "D")
    days = np.asarray(var[:], float)
    whole = np.round(days)
    if not np.allclose(days, whole, atol=1e-3):
        raise SchemaError(f"{where}: time values are not whole days")
    return origin + whole.astype(np.int64)


def read_cru_precip(data: Any, name: str | None = None):
    """netCDF (CRU TS layout, daily) -> (dates datetime64[D] [T], lat [Y], lon [X], pre float32 [T, Y, X])."""
    where = _where(name, data)
    try:
        return _read_cru_precip(data, where)
    except SchemaError:
        raise
    except Exception as exc:  # a damaged chunk surfaces as RuntimeError("NetCDF: HDF error") when read
        raise SchemaError(f"{where}: damaged netCDF file ({type(exc).__name__}: {exc})") from None


def _read_cru_precip(data: Any, where: str):
    with _open_netcdf(data, where) as ds:
        for dim in ("time", "lat", "lon"):
            if dim not in ds.dimensions:
                raise SchemaError(f"{where}: dimension {dim!r} missing (found {list(ds.dimensions)})")
        for var in ("pre", "time", "lat", "lon"):
            if var not in ds.variables:
                raise SchemaError(f"{where}: variable {var!r} missing (found {list(ds.variables)})")
        pre_var = ds["pre"]
        if sorted(pre_var.dimensions) != ["lat", "lon", "time"]:
            raise SchemaError(f"{where}: 'pre' has dimensions {pre_var.dimensions}, "
                              f"expected (time, lat, lon)")
        units = str(getattr(pre_var, "units", "")).replace(" ", "").lower()
        if units in _MONTHLY_UNITS:
            raise SchemaError(f"{where}: 'pre' is in {units} (monthly CRU TS totals); daily mm/day fields "
                              f"are required")
        if units not in _DAILY_UNITS:
            raise SchemaError(f"{where}: 'pre' units {units!r} are not a daily depth (mm/day)")
        dates = _decode_time(ds["time"], where)
        lat = np.asarray(ds["lat"][:], float)
        lon = np.asarray(ds["lon"][:], float)
        pre_var.set_auto_mask(True)
        raw = pre_var[:]
        pre = np.ma.filled(np.ma.asarray(raw).astype(np.float32), np.nan)
        order = [pre_var.dimensions.index(d) for d in ("time", "lat", "lon")]
    pre = np.transpose(pre, order)
    pre[np.abs(pre) > 1e30] = np.nan  # a fill value the file forgot to declare
    axes = {"lat": lat, "lon": lon}
    for axis, label in ((1, "lat"), (2, "lon")):
        step = np.diff(axes[label])
        if step.size and (step < 0).all():  # descending in the file: return ascending
            pre, axes[label] = np.flip(pre, axis=axis), axes[label][::-1].copy()
        elif step.size and not (step > 0).all():
            raise SchemaError(f"{where}: {label} is not strictly monotonic")
    lat, lon = axes["lat"], axes["lon"]
    neg = np.argwhere(pre < 0)
    if neg.size:
        t, i, j = (int(v) for v in neg[0])
        raise SchemaError(f"{where}: negative precipitation {pre[t, i, j]:g} mm/day on {dates[t]} at pixel "
                          f"(lat {lat[i]:.4f}, lon {lon[j]:.4f}; index {i}, {j}); "
                          f"{len(neg)} negative values in all")
    return dates, lat, lon, np.ascontiguousarray(pre)


def read_usgs_rdb(data: Any, name: str | None = None, with_codes: bool = False):
    """USGS NWIS daily-values RDB -> (site_no, dates [T] gap-free daily, q_cfs float64 [T] NaN = missing)
    (+ qualification codes [T] as str, '' where absent, when with_codes)."""
    where = _where(name, data)
    raw = _read_raw(data, where)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{where}: not UTF-8 text at byte {exc.start}") from None
    header, rows = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        if len(header) < 2:
            header.append((lineno, line.split("\t")))
            continue
        rows.append((lineno, line.split("\t")))
    if len(header) < 2:
        raise SchemaError(f"{where}: missing the RDB column-name and column-format header lines")
    names, formats = header[0][1], header[1][1]
    if len(formats) != len(names) or not all(re.fullmatch(r"\d*[sdn]", f) for f in formats):
        raise SchemaError(f"{where}: line {header[1][0]}: not an RDB format line matching the "
                          f"{len(names)} column names")
    value_cols = [k for k, c in enumerate(names) if c.endswith("_00060_00003")]
    for needed in ("site_no", "datetime"):
        if needed not in names:
            raise SchemaError(f"{where}: column {needed!r} missing (found {names})")
    if len(value_cols) != 1:
        raise SchemaError(f"{where}: expected one daily-mean discharge column (*_00060_00003), found "
                          f"{[names[k] for k in value_cols]}")
    iv, isite, idate = value_cols[0], names.index("site_no"), names.index("datetime")
    icode = names.index(names[iv] + "_cd") if names[iv] + "_cd" in names else None
    if not rows:
        raise SchemaError(f"{where}: no data rows")
    sites, dates, values, codes = set(), [], [], []
    for lineno, fields in rows:
        if len(fields) != len(names):
            raise SchemaError(f"{where}: line {lineno}: {len(fields)} tab-separated fields, expected "
                              f"{len(names)}")
        try:
            day = np.datetime64(fields[idate].strip(), "D")
        except ValueError:
            raise SchemaError(f"{where}: line {lineno}: bad date {fields[idate]!r}") from None
        if dates and day <= dates[-1]:
            raise SchemaError(f"{where}: line {lineno}: date {day} is not after {dates[-1]}")
        text_value = fields[iv].strip()
        if text_value == "" or text_value in MISSING_CODES:
            value = np.nan
        else:
            try:
                value = float(text_value)
            except ValueError:
                raise SchemaError(f"{where}: line {lineno}: discharge {text_value!r} is neither a number "
                                  f"nor an NWIS missing-value code") from None
            if not np.isfinite(value) or value < 0:
                raise SchemaError(f"{where}: line {lineno}: discharge {text_value} is not a flow")
        sites.add(fields[isite].strip())
        dates.append(day)
        values.append(value)
        codes.append(fields[icode].strip() if icode is not None else "")
    if len(sites) != 1:
        raise SchemaError(f"{where}: one site per file expected, found {sorted(sites)}")
    axis = np.arange(dates[0], dates[-1] + 1)
    pos = (np.array(dates, "datetime64[D]") - dates[0]).astype(int)
    q = np.full(axis.size, np.nan)
    q[pos] = values
    out = (sites.pop(), axis, q)
    if with_codes:
        code_arr = np.full(axis.size, "", dtype=object)
        code_arr[pos] = codes
        out += (code_arr.astype(str),)
    return out


def read_distance(data: Any, name: str | None = None):
    """Float GeoTIFF, north-up -> (lat ascending [Y], lon [X], distance float64 [Y, X], NaN = nodata)."""
    import tifffile
    where = _where(name, data)
    source = io.BytesIO(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with tifffile.TiffFile(source) as tif:
            page = tif.pages[0]
            raster = page.asarray().astype(float)
            tags = {t.code: t.value for t in page.tags.values()}
    except FileNotFoundError:
        raise SchemaError(f"{where}: file not found") from None
    except Exception as exc:  # bad magic, truncated file
        raise SchemaError(f"{where}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
    if raster.ndim != 2:
        raise SchemaError(f"{where}: expected a single-band 2-D raster, got shape {raster.shape}")
    if 33550 not in tags or 33922 not in tags:
        raise SchemaError(f"{where}: no georeferencing (ModelPixelScale/ModelTiepoint tags)")
    try:
        sx, sy = float(tags[33550][0]), float(tags[33550][1])
        tie = [float(v) for v in tags[33922]][:6]
        if len(tie) < 6:
            raise ValueError(f"{len(tie)} values, 6 needed")
    except (TypeError, ValueError, IndexError) as exc:
        raise SchemaError(f"{where}: unreadable ModelPixelScale/ModelTiepoint tags ({exc})") from None
    if tie[0] != 0 or tie[1] != 0 or not sx > 0 or not sy > 0 or not np.isfinite(tie[3:5]).all():
        raise SchemaError(f"{where}: only north-up rasters tied at their top-left corner are supported")
    if 42113 in tags:
        try:
            nodata = float(str(tags[42113]).strip("\x00 "))
        except ValueError:
            raise SchemaError(f"{where}: GDAL_NODATA tag {str(tags[42113])[:40]!r} is not a number") from None
        raster[raster == nodata] = np.nan
    lon = tie[3] + sx * (np.arange(raster.shape[1]) + 0.5)
    lat = tie[4] - sy * (np.arange(raster.shape[0]) + 0.5)
    raster, lat = raster[::-1].copy(), lat[::-1].copy()
    bad = np.argwhere(~np.isnan(raster) & ~(raster >= 0) | np.isinf(raster))
    if bad.size:
        i, j = (int(v) for v in bad[0])
        raise SchemaError(f"{where}: distance {raster[i, j]:g} at pixel (lat {lat[i]:.4f}, lon {lon[j]:.4f}) "
                          f"is not a non-negative number")
    return lat, lon, raster


def read_watersheds(data: Any, name: str | None = None) -> dict:
    """watersheds.json -> its dict, with each watershed's `pixels` as an int64 array. Empty pixel lists
    pass here (the job decides); `align` refuses them."""
    where = _where(name, data)
    raw = _read_raw(data, where)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{where}: not JSON ({exc})") from None
    try:
        n_pix = int(meta["grid"]["n_lat"]) * int(meta["grid"]["n_lon"])
        sheds = meta["watersheds"]
        owner: dict[int, str] = {}
        for key in ("precip_file", "distance_file"):
            if key in meta and relative_problem(meta[key]):
                raise SchemaError(f"{where}: {key}: {relative_problem(meta[key])}")
        for record, shed in enumerate(sheds):
            # The id names the watershed's bundle and checkpoints: it becomes a path part.
            if name_problem(str(shed["id"])):
                raise SchemaError(f"{where}: watershed record {record}: id {name_problem(str(shed['id']))}")
            shed["id"] = wid = str(shed["id"])
            if relative_problem(shed["discharge_file"]):
                raise SchemaError(f"{where}: watershed {wid} (record {record}): discharge_file "
                                  f"{relative_problem(shed['discharge_file'])}")
            pixels = np.asarray(shed["pixels"], np.int64).reshape(-1)
            if pixels.size and (pixels.min() < 0 or pixels.max() >= n_pix):
                raise SchemaError(f"{where}: watershed {wid}: pixel index outside the {n_pix}-pixel grid")
            for p in pixels.tolist():
                if p in owner:
                    raise SchemaError(f"{where}: pixel {p} is in watersheds {owner[p]} and {wid}")
                owner[p] = wid
            shed["pixels"] = pixels
            if not str(shed["site_no"]).isdigit():
                raise SchemaError(f"{where}: watershed {wid}: site_no {shed['site_no']!r} is not a USGS number")
    except SchemaError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{where}: malformed watershed description ({type(exc).__name__}: {exc})") from None
    return meta


@dataclass
class AlignedWatershed:
    """One watershed's inputs on the common daily period of precipitation and discharge."""
    watershed: str
    dates: np.ndarray      # datetime64[D] [T], gap-free
    precip: np.ndarray     # float32 [T, P] mm/day, the watershed's pixels in the order given
    discharge: np.ndarray  # float64 [T], NaN on missing days
    valid: np.ndarray      # bool [T], discharge observed
    n_missing: int         # missing discharge days in the period (reported in summary.json)


def align(precip_dates, pre, pixels, discharge_dates, discharge, *, watershed: str,
          precip_name: str = "<precipitation>", discharge_name: str = "<discharge>",
          min_days: int = 2) -> AlignedWatershed:
    """Cut precipitation [T, Y, X] at the watershed's pixels (flat indices) and both series to the period
    they share. Errors: a watershed with no pixels, a precipitation time axis with a gap or out of order,
    discharge dates out of order, fewer than `min_days` shared days, a NaN (fill) precipitation inside the
    watershed. Missing discharge days are kept, masked in `valid` and counted in `n_missing`."""
    pixels = np.asarray(pixels, np.int64).reshape(-1)
    if pixels.size == 0:
        raise SchemaError(f"watershed {watershed}: no pixels (its discharge is in {discharge_name})")
    n_grid = pre.shape[1] * pre.shape[2]
    if pixels.min() < 0 or pixels.max() >= n_grid:
        raise SchemaError(f"watershed {watershed}: pixel index outside the {n_grid}-pixel grid of {precip_name}")
    pdates = np.asarray(precip_dates, "datetime64[D]")
    qdates = np.asarray(discharge_dates, "datetime64[D]")
    step = np.diff(pdates).astype(int)
    if (step != 1).any():
        k = int(np.argmax(step != 1))
        raise SchemaError(f"{precip_name}: time axis is not consecutive days: {pdates[k + 1]} follows "
                          f"{pdates[k]} (first mismatching date {pdates[k] + 1}); cannot align with "
                          f"{discharge_name} for watershed {watershed}")
    if qdates.size and (np.diff(qdates).astype(int) <= 0).any():
        k = int(np.argmax(np.diff(qdates).astype(int) <= 0))
        raise SchemaError(f"{discharge_name}: dates out of order at {qdates[k + 1]} (watershed {watershed})")
    if pdates.size == 0 or qdates.size == 0:
        raise SchemaError(f"watershed {watershed}: {precip_name} or {discharge_name} has no dates")
    start, end = max(pdates[0], qdates[0]), min(pdates[-1], qdates[-1])
    n = int((end - start).astype(int)) + 1
    if n < min_days:
        outside = qdates[(qdates < pdates[0]) | (qdates > pdates[-1])]
        first = outside[0] if outside.size else qdates[0]
        raise SchemaError(f"dates do not line up for watershed {watershed}: {precip_name} covers "
                          f"{pdates[0]}..{pdates[-1]}, {discharge_name} covers {qdates[0]}..{qdates[-1]} "
                          f"({max(n, 0)} shared days, {min_days} needed); first mismatching date {first}")
    dates = np.arange(start, end + 1)
    i0 = int((start - pdates[0]).astype(int))
    precip = pre.reshape(pre.shape[0], -1)[i0:i0 + n, pixels].astype(np.float32)
    bad = np.argwhere(np.isnan(precip))
    if bad.size:
        t, k = (int(v) for v in bad[0])
        i, j = divmod(int(pixels[k]), pre.shape[2])
        raise SchemaError(f"{precip_name}: fill value (no data) on {dates[t]} at pixel index ({i}, {j}) inside "
                          f"watershed {watershed}")
    q = np.full(n, np.nan)
    inside = (qdates >= start) & (qdates <= end)
    q[(qdates[inside] - start).astype(int)] = np.asarray(discharge, float)[inside]
    valid = np.isfinite(q)
    return AlignedWatershed(str(watershed), dates, precip, q, valid, int(n - valid.sum()))


def windows(precip, discharge, lookback: int, valid=None):
    """Samples for each target day t >= lookback: X = precip[t - lookback:t] (the days before the target,
    [N, lookback, P], a read-only view), P_target = precip[t] [N, P], y = discharge[t] [N] (NaN kept) and
    the mask of samples whose target is observed [N]."""
    precip = np.asarray(precip)
    discharge = np.asarray(discharge, float)
    T = precip.shape[0]
    if precip.ndim != 2 or discharge.shape != (T,):
        raise ValueError(f"windows: precip must be [T, P] and discharge [T], got {precip.shape} and "
                         f"{discharge.shape}")
    if not 1 <= lookback < T:
        raise ValueError(f"windows: lookback {lookback} must be in [1, {T - 1}] for {T} days")
    X = np.lib.stride_tricks.sliding_window_view(precip, lookback, axis=0)[:T - lookback]
    X = np.swapaxes(X, 1, 2)
    y = discharge[lookback:]
    mask = np.isfinite(y)
    if valid is not None:
        mask &= np.asarray(valid, bool)[lookback:]
    return X, precip[lookback:], y, mask


def split_by_time(n_days: int, train: float = 0.6, val: float = 0.2):
    """Contiguous (train, val, test) slices in time order; test is the rest, the latest period."""
    if not (0 < train and 0 <= val and train + val < 1):
        raise ValueError(f"split_by_time: fractions train={train}, val={val} must be positive and sum below 1")
    a = int(round(n_days * train))
    b = a + int(round(n_days * val))
    if a == 0 or b == n_days or (val > 0 and b == a):
        raise ValueError(f"split_by_time: {n_days} days are too few for train={train}, val={val}")
    return slice(0, a), slice(a, b), slice(b, n_days)
