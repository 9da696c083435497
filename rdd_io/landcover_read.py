"""Readers for the land-cover rasters, from a path or from the bytes Spark's binaryFiles delivers.

GeoTIFF goes through tifffile (pure Python + numpy). The other formats the contest data ships in
(ENVI .hdr/.img pairs and the like) go through rasterio when it is installed; it is optional and
imported only where needed. Every error is a SchemaError (a ValueError) whose message starts with
the file's name.
"""
from __future__ import annotations

import io
import os
import re
from typing import Any, Mapping

import numpy as np

from rdd_io.landcover_scene import N_CLASSES
from rdd_io.schema import SchemaError, source_name

TIFF_EXTENSIONS = (".tif", ".tiff")
_TILE_NAME = re.compile(r"tile_r(\d+)_c(\d+)\.tiff?$", re.IGNORECASE)


def _where(name: Any, data: Any) -> str:
    """The file named in errors: `name` (Spark's path) if given, else the path in `data`."""
    return source_name(name) if name is not None else source_name(data)


def _open_tiff(data: Any, where: str):
    import tifffile
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = io.BytesIO(bytes(data))
    try:
        return tifffile.TiffFile(data)
    except FileNotFoundError:
        raise SchemaError(f"{where}: file not found") from None
    except Exception as exc:  # bad magic, a header cut short
        raise SchemaError(f"{where}: not a readable TIFF ({type(exc).__name__}: {exc})") from None


def read_tiff(data: Any, name: Any = None) -> tuple[np.ndarray, dict]:
    """First image of a TIFF -> (array [H, W] or [H, W, bands], tags).

    Band-interleaved files (one page or plane per band) are moved to bands-last. `tags` holds the
    GeoTIFF pixel scale and tie point when present.
    """
    where = _where(name, data)
    tif = _open_tiff(data, where)
    try:
        with tif:
            series = tif.series[0]
            axes, array = series.axes, series.asarray()
            page_tags = tif.pages[0].tags
            tags = {key: tuple(page_tags[code].value) for key, code in
                    (("pixel_scale", 33550), ("tiepoint", 33922)) if code in page_tags}
    except SchemaError:
        raise
    except Exception as exc:  # truncated strips surface when the data is read
        raise SchemaError(f"{where}: damaged TIFF ({type(exc).__name__}: {exc})") from None
    array = np.squeeze(array) if array.ndim > 3 else array
    if array.ndim == 3 and axes[-2:] == "YX":  # bands first (planar or one page per band)
        array = np.moveaxis(array, 0, -1)
    if array.ndim not in (2, 3):
        raise SchemaError(f"{where}: expected a 2D or 3D raster, got shape {array.shape} "
                          f"(axes {axes})")
    return np.ascontiguousarray(array), tags


def _read_rasterio(path: str, where: str) -> np.ndarray:
    try:
        import rasterio
    except ImportError:
        raise SchemaError(f"{where}: this format needs the optional package rasterio "
                          f"(pip install rasterio), which is not installed; GeoTIFF is read "
                          f"without it") from None
    try:
        with rasterio.open(path) as ds:
            array = ds.read()  # [bands, H, W]
    except Exception as exc:
        raise SchemaError(f"{where}: rasterio could not read it ({type(exc).__name__}: "
                          f"{exc})") from None
    return np.ascontiguousarray(np.moveaxis(array, 0, -1)) if array.shape[0] > 1 else array[0]


def read_raster(path: str | os.PathLike, name: Any = None) -> np.ndarray:
    """Any raster -> [H, W] or [H, W, bands]: GeoTIFF by tifffile, anything else by rasterio.

    ENVI rasters are a header and a data file side by side, so the non-TIFF route takes a local
    path (a Spark task writes the bytes it got to local disk first).
    """
    where = _where(name, path)
    if os.fspath(path).lower().endswith(TIFF_EXTENSIONS):
        return read_tiff(path, name)[0]
    if not os.path.exists(path):
        raise SchemaError(f"{where}: file not found")
    return _read_rasterio(os.fspath(path), where)


def _check_finite(where: str, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        r, c = (int(v) for v in np.argwhere(~np.isfinite(array))[0][:2])
        raise SchemaError(f"{where}: non-finite value at pixel (row {r}, col {c})")


def _read_any(data: Any, name: Any) -> np.ndarray:
    """Bytes are read as TIFF; a path by its extension (see read_raster)."""
    if isinstance(data, (str, os.PathLike)):
        return read_raster(data, name)
    return read_tiff(data, name)[0]


def read_hsi(data: Any, name: Any = None, expected_bands: int | None = None) -> np.ndarray:
    """Hyperspectral image -> float32 [H, W, bands]; a band count off the config is an error."""
    where = _where(name, data)
    array = _read_any(data, name)
    if array.ndim != 3:
        raise SchemaError(f"{where}: hyperspectral image must be [H, W, bands], got shape "
                          f"{array.shape}")
    if expected_bands is not None and array.shape[2] != expected_bands:
        raise SchemaError(f"{where}: has {array.shape[2]} bands, the config expects "
                          f"{expected_bands}")
    if array.dtype.kind not in "biuf":
        raise SchemaError(f"{where}: dtype {array.dtype} is not numeric")
    array = array.astype(np.float32, copy=False)
    _check_finite(where, array)
    return array


def check_classes(gt: np.ndarray, where: str, n_classes: int = N_CLASSES) -> np.ndarray:
    """Ground-truth values must be 0 (unclassified) .. n_classes; returns them as uint8."""
    if gt.ndim != 2:
        raise SchemaError(f"{where}: ground truth must be [H, W], got shape {gt.shape}")
    if gt.dtype.kind not in "biuf":
        raise SchemaError(f"{where}: dtype {gt.dtype} is not numeric")
    bad = ~np.isin(gt, np.arange(n_classes + 1))  # also catches NaN and fractions
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise SchemaError(f"{where}: unknown class value {gt[r, c].item()!r} at pixel "
                          f"(row {r}, col {c}); valid: 0 (unclassified) to {n_classes}")
    return gt.astype(np.uint8)


def read_gt(data: Any, name: Any = None, n_classes: int = N_CLASSES) -> np.ndarray:
    """Ground-truth raster -> uint8 [H, W] with values in 0..n_classes."""
    where = _where(name, data)
    array = _read_any(data, name)
    return check_classes(array, where, n_classes)


def read_rgb_tile(data: Any, name: Any = None) -> np.ndarray:
    """One very-high-resolution tile -> uint8 [H, W, 3]."""
    where = _where(name, data)
    array = _read_any(data, name)
    if array.ndim != 3 or array.shape[2] != 3:
        raise SchemaError(f"{where}: RGB tile must be [H, W, 3], got shape {array.shape}")
    if array.dtype != np.uint8:
        raise SchemaError(f"{where}: RGB tile has dtype {array.dtype}, expected uint8")
    return array


def tile_position(name: Any) -> tuple[int, int]:
    """(row, col) from a tile_r{row}_c{col}.tif name (any directory in front)."""
    match = _TILE_NAME.search(os.path.basename(str(name)))
    if not match:
        raise SchemaError(f"{source_name(str(name))}: not a tile name of the form "
                          f"tile_r<row>_c<col>.tif")
    return int(match.group(1)), int(match.group(2))


def grid_positions(origins: Mapping[Any, tuple[float, float]]) -> dict:
    """{key: (row, col)} from each tile's upper-left ground corner (easting, northing).

    For tiles named by coordinates rather than grid position: columns run east, rows run south.
    """
    xs = sorted({float(x) for x, _ in origins.values()})
    ys = sorted({float(y) for _, y in origins.values()}, reverse=True)
    return {key: (ys.index(float(y)), xs.index(float(x))) for key, (x, y) in origins.items()}


def merge_tiles(tiles: Mapping[tuple[int, int], np.ndarray],
                names: Mapping[tuple[int, int], str] | None = None) -> np.ndarray:
    """Tiles keyed by (row, col) -> one image, in grid order.

    The keys must fill a rectangle 0..R-1 x 0..C-1; within a grid row all tiles share a height,
    within a grid column a width, and all share trailing shape and dtype. `names` (same keys)
    names the files in errors; by default tile_r{r}_c{c}.tif.
    """
    def label(key):
        return (names or {}).get(key) or f"tile_r{key[0]}_c{key[1]}.tif"

    if not tiles:
        raise SchemaError("<tiles>: no tiles to merge")
    for key in tiles:
        if not (isinstance(key, tuple) and len(key) == 2 and min(key) >= 0):
            raise SchemaError(f"{label(key) if isinstance(key, tuple) else key}: tile key "
                              f"{key!r} is not a (row, col) pair of non-negative ints")
    n_rows = max(r for r, _ in tiles) + 1
    n_cols = max(c for _, c in tiles) + 1
    missing = [(r, c) for r in range(n_rows) for c in range(n_cols) if (r, c) not in tiles]
    if missing:
        raise SchemaError(f"{label(missing[0])}: missing from the {n_rows}x{n_cols} tile grid "
                          f"({len(missing)} missing: {[label(k) for k in missing[:5]]})")
    first = tiles[(0, 0)]
    for key in sorted(tiles):
        tile = np.asarray(tiles[key])
        r, c = key
        if tile.ndim < 2 or tile.shape[2:] != first.shape[2:] or tile.dtype != first.dtype:
            raise SchemaError(f"{label(key)}: shape {tile.shape} {tile.dtype} does not match "
                              f"{label((0, 0))} ({first.shape} {first.dtype})")
        if tile.shape[0] != np.shape(tiles[(r, 0)])[0]:
            raise SchemaError(f"{label(key)}: height {tile.shape[0]} differs from "
                              f"{label((r, 0))} in the same grid row "
                              f"({np.shape(tiles[(r, 0)])[0]})")
        if tile.shape[1] != np.shape(tiles[(0, c)])[1]:
            raise SchemaError(f"{label(key)}: width {tile.shape[1]} differs from "
                              f"{label((0, c))} in the same grid column "
                              f"({np.shape(tiles[(0, c)])[1]})")
    return np.concatenate([np.concatenate([np.asarray(tiles[(r, c)]) for c in range(n_cols)],
                                          axis=1) for r in range(n_rows)], axis=0)


def merge_named_tiles(decoded: Mapping[str, np.ndarray]) -> np.ndarray:
    """{path: decoded RGB tile} of tile_r{r}_c{c}.tif files -> the merged image, each placed by its name;
    two files at one grid position are an error naming both."""
    tiles, names = {}, {}
    for path, tile in decoded.items():
        key = tile_position(path)
        if key in tiles:
            raise SchemaError(f"{source_name(path)}: same grid position {key} as "
                              f"{names[key]}")
        tiles[key], names[key] = tile, source_name(path)
    return merge_tiles(tiles, names)


def merge_tile_files(files: Mapping[str, Any]) -> np.ndarray:
    """{path: bytes or path} of tile_r{r}_c{c}.tif files (as binaryFiles gives) -> merged RGB, read here
    (the job decodes the tiles on the executors and calls merge_named_tiles)."""
    return merge_named_tiles({path: read_rgb_tile(data, path) for path, data in files.items()})
