"""Build the Dom-ST region file (watersheds.json) from real inputs, so nobody writes it by hand.

    python -m rdd_io.domst_region INPUT [--precip precip/x.nc] [--distance distance_to_water.tif]
                                        [--outlines outlines.geojson | outlines.tif] [--discharge discharge]

INPUT is the folder the job reads with `--set data.source=files --set data.input=INPUT` (a path or a
file:// / hdfs:// URI); the other paths are relative to it, defaults in brackets:

    INPUT/precip/<one file>.nc        daily precipitation, CRU TS layout (time/lat/lon, `pre`, mm/day)
    INPUT/distance_to_water.tif       distance of each cell to the nearest water source (km), same grid
    INPUT/discharge/<anything>.rdb    USGS NWIS daily values, one site per file (a file with several
                                      sites is an error that says so); the site number is read from it
    INPUT/outlines.geojson            one Polygon or MultiPolygon feature per watershed, lon/lat (WGS84),
                                      with properties.site_no (the outlet's USGS site) and optionally
                                      properties.id (the watershed id; default W01, W02, ... by site number)
    or INPUT/outlines.tif             a mask GeoTIFF on the precipitation grid whose cells hold the USGS
                                      site number of their watershed as an integer (0 or nodata: none)

A grid cell belongs to a watershed when its centre lies inside the outline (or its mask cell holds the
site). Cells without a distance or with missing precipitation on any day are left out and counted. The
result, INPUT/watersheds.json, lists per watershed its id, site_no (a zero-padded string), the RDB file
and the flat pixel indices (i_lat * n_lon + i_lon, latitude ascending), as the job expects.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from rdd_io import storage
from rdd_io.domst_read import read_cru_precip, read_distance, read_usgs_rdb
from rdd_io.schema import SchemaError

REGION_FORMAT = "domst-watersheds/1"
OUTPUT_NAME = "watersheds.json"
SITE_DIGITS = 8  # USGS site numbers have at least 8 digits; a mask raster loses leading zeros


def site_text(value) -> str:
    """A USGS site number as the RDB files write it: digits, zero-padded to at least 8."""
    text = str(value).strip()
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and float(value).is_integer()):
        text = str(int(value))
    if not text.isdigit():
        raise ValueError(f"site number {value!r} is not a USGS number (digits only)")
    return text.zfill(SITE_DIGITS)


def ring_contains(ring, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points (lon, lat) lie inside the closed ring [[lon, lat], ...]."""
    pts = np.asarray(ring, float)
    if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] < 2:
        raise ValueError(f"a ring needs at least 3 [lon, lat] positions, got shape {pts.shape}")
    inside = np.zeros(lon.shape, bool)
    for (x1, y1), (x2, y2) in zip(pts[:, :2], np.roll(pts[:, :2], -1, axis=0)):
        crosses = (y1 > lat) != (y2 > lat)
        if y1 != y2:
            x_cross = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            inside ^= crosses & (lon < x_cross)
    return inside


def geometry_mask(geometry: dict, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Points inside a GeoJSON Polygon or MultiPolygon (holes excluded)."""
    kind = geometry.get("type")
    polygons = {"Polygon": [geometry.get("coordinates")], "MultiPolygon": geometry.get("coordinates")}.get(kind)
    if polygons is None:
        raise ValueError(f"geometry type {kind!r}: Polygon or MultiPolygon expected")
    inside = np.zeros(lon.shape, bool)
    for rings in polygons:
        if not rings:
            raise ValueError("a polygon without rings")
        here = np.zeros(lon.shape, bool)
        for ring in rings:  # the first ring is the outline, the others are holes: even-odd covers both
            here ^= ring_contains(ring, lon, lat)
        inside |= here
    return inside


def outlines_from_geojson(text: str, lat: np.ndarray, lon: np.ndarray, name: str) -> list[dict]:
    """[{site_no, id or None, cells: bool [Y, X]}] from a FeatureCollection, cells by centre."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{name}: not JSON ({exc})") from None
    if doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        raise SchemaError(f"{name}: a GeoJSON FeatureCollection expected")
    glon, glat = np.meshgrid(lon, lat)
    out = []
    for k, feature in enumerate(doc["features"]):
        props = feature.get("properties") or {}
        try:
            if "site_no" not in props:
                raise ValueError("properties.site_no (the outlet's USGS site number) is missing")
            site = site_text(props["site_no"])
            cells = geometry_mask(feature.get("geometry") or {}, glon, glat)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"{name}: feature {k}: {exc}") from None
        out.append({"site_no": site, "id": props.get("id"), "cells": cells, "where": f"{name}: feature {k}"})
    return out


def outlines_from_mask(raster: np.ndarray, name: str) -> list[dict]:
    """[{site_no, id None, cells}] from a mask raster holding site numbers (0 or NaN: no watershed)."""
    values = raster[np.isfinite(raster) & (raster != 0)]
    if values.size and not np.all(values == np.round(values)):
        raise SchemaError(f"{name}: mask values must be whole USGS site numbers, "
                          f"found {values[values != np.round(values)][0]:g}")
    return [{"site_no": site_text(int(v)), "id": None, "cells": raster == v, "where": f"{name}: value {int(v)}"}
            for v in np.unique(values)]


def build_region(lat, lon, precip_ok, distance, outlines: list[dict], rdb_sites: dict[str, str],
                 precip_file: str, distance_file: str) -> tuple[dict, list[str]]:
    """The region file's dict and notes for people (cells left out, sites without an outline).
    precip_ok [Y, X]: the cell has precipitation on every day; distance [Y, X]: NaN = nodata."""
    n_lat, n_lon = len(lat), len(lon)
    usable = precip_ok & np.isfinite(distance)
    owner: dict[int, str] = {}
    sheds, notes = [], []
    by_site = {}
    for o in outlines:
        if o["site_no"] in by_site:
            raise SchemaError(f"{o['where']}: site {o['site_no']} has a second outline ({by_site[o['site_no']]})")
        by_site[o["site_no"]] = o["where"]
        if o["site_no"] not in rdb_sites:
            raise SchemaError(f"{o['where']}: no RDB file holds site {o['site_no']} (RDB sites: {sorted(rdb_sites)})")
    for k, o in enumerate(sorted(outlines, key=lambda o: o["site_no"]), 1):
        wid = str(o["id"]) if o["id"] is not None else f"W{k:02d}"
        dropped = int((o["cells"] & ~usable).sum())
        pixels = np.flatnonzero((o["cells"] & usable).ravel())
        if pixels.size == 0:
            raise SchemaError(f"{o['where']}: watershed {wid} (site {o['site_no']}) covers no usable cell centre of "
                              f"the {n_lat} x {n_lon} grid ({dropped} without distance or precipitation)")
        for p in pixels.tolist():
            if p in owner:
                i, j = divmod(p, n_lon)
                raise SchemaError(f"{o['where']}: cell (lat {lat[i]:.4f}, lon {lon[j]:.4f}) is in watersheds "
                                  f"{owner[p]} and {wid}; the watersheds must not overlap")
            owner[p] = wid
        if dropped:
            notes.append(f"watershed {wid} (site {o['site_no']}): {dropped} cell(s) left out (no distance, or "
                         f"precipitation missing on some day)")
        sheds.append({"id": wid, "site_no": o["site_no"], "discharge_file": rdb_sites[o["site_no"]],
                      "pixels": pixels.tolist()})
    unused = sorted(set(rdb_sites) - set(by_site))
    if unused:
        notes.append(f"RDB files without an outline, not used: {', '.join(rdb_sites[s] for s in unused)}")
    res = float(np.median(np.diff(lat))) if n_lat > 1 else None
    meta = {"format": REGION_FORMAT, "precip_file": precip_file, "distance_file": distance_file,
            "grid": {"n_lat": n_lat, "n_lon": n_lon, "res_deg": res, "lat_first": float(lat[0]),
                     "lon_first": float(lon[0]), "pixel_index": "i_lat * n_lon + i_lon, latitude ascending"},
            "watersheds": sheds}
    return meta, notes


def _same_grid(lat, lon, other_lat, other_lon, name: str, precip_name: str) -> None:
    if other_lat.shape != lat.shape or other_lon.shape != lon.shape or not (
            np.allclose(other_lat, lat) and np.allclose(other_lon, lon)):
        raise SchemaError(f"{name}: its grid ({len(other_lat)} x {len(other_lon)}) is not the grid of {precip_name} "
                          f"({len(lat)} x {len(lon)})")


def _only_file(base: str, folder: str, suffix: str) -> str:
    names = [n for n in storage.list_names(storage.join(base, folder)) if n.endswith(suffix)]
    if len(names) != 1:
        raise SchemaError(f"{storage.join(base, folder)}: one {suffix} file expected, found {names or 'none'} "
                          f"(name it with --precip)")
    return f"{folder}/{names[0]}"


def _default_outlines(base: str) -> str:
    found = [n for n in ("outlines.geojson", "outlines.tif") if storage.exists(storage.join(base, n))]
    if len(found) != 1:
        raise SchemaError(f"{base}: put the watershed outlines in outlines.geojson or outlines.tif (found "
                          f"{found or 'neither'}), or name them with --outlines")
    return found[0]


def build(base: str, precip: str | None = None, distance: str = "distance_to_water.tif",
          outlines: str | None = None, discharge: str = "discharge") -> tuple[str, dict, list[str]]:
    """Read the inputs under `base`, write base/watersheds.json; returns (its URI, its dict, notes)."""
    base = storage.to_uri(base)
    precip = precip or _only_file(base, "precip", ".nc")
    outlines = outlines or _default_outlines(base)
    dates, lat, lon, pre = read_cru_precip(storage.read_bytes(storage.join(base, precip)), precip)
    d_lat, d_lon, dist = read_distance(storage.read_bytes(storage.join(base, distance)), distance)
    _same_grid(lat, lon, d_lat, d_lon, distance, precip)
    rdb_sites: dict[str, str] = {}
    for fname in sorted(storage.list_names(storage.join(base, discharge))):
        if not fname.endswith(".rdb"):
            continue
        rel = f"{discharge}/{fname}"
        site = read_usgs_rdb(storage.read_bytes(storage.join(base, rel)), fname)[0]
        if site in rdb_sites:
            raise SchemaError(f"{fname}: site {site} is also in {rdb_sites[site]}; one file per site")
        rdb_sites[site] = rel
    if not rdb_sites:
        raise SchemaError(f"{storage.join(base, discharge)}: no .rdb files")
    raw = storage.read_bytes(storage.join(base, outlines))
    if outlines.endswith((".tif", ".tiff")):
        m_lat, m_lon, mask = read_distance(raw, outlines)
        _same_grid(lat, lon, m_lat, m_lon, outlines, precip)
        shapes = outlines_from_mask(mask, outlines)
    else:
        shapes = outlines_from_geojson(raw.decode("utf-8"), lat, lon, outlines)
    if not shapes:
        raise SchemaError(f"{outlines}: no watershed outlines")
    meta, notes = build_region(lat, lon, np.isfinite(pre).all(axis=0), dist, shapes, rdb_sites, precip, distance)
    target = storage.join(base, OUTPUT_NAME)
    storage.write_text(target, json.dumps(meta, indent=1))
    return target, meta, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rdd_io.domst_region", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="the input folder (path or URI)")
    parser.add_argument("--precip", help="netCDF under INPUT (default: the one .nc file in precip/)")
    parser.add_argument("--distance", default="distance_to_water.tif", help="distance raster under INPUT")
    parser.add_argument("--outlines", help="outlines.geojson or outlines.tif under INPUT (default: whichever exists)")
    parser.add_argument("--discharge", default="discharge", help="folder of RDB files under INPUT")
    args = parser.parse_args(argv)
    try:
        target, meta, notes = build(args.input, args.precip, args.distance, args.outlines, args.discharge)
    except (SchemaError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}")
    sizes = ", ".join(f"{s['id']} ({s['site_no']}, {len(s['pixels'])} px)" for s in meta["watersheds"])
    print(f"{target}: {len(meta['watersheds'])} watersheds: {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
