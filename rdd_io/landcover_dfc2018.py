"""The 2018 IEEE GRSS Data Fusion Contest products as downloaded, placed on the ground by their
georeferencing and cut to the ground truth's extent (pure: bytes in, arrays out); and `write_dfc2018`,
a simulated scene written in the same layout (for tests and demos).

Files are recognised by their distributed names, in any folder under the input:

    2018_IEEE_GRSS_DFC_GT_TR.tif            ground truth, 0.5 m (GeoTIFF)
    2018_IEEE_GRSS_DFC_HSI_TR + .HDR        hyperspectral image, 1 m (ENVI: raw data + header with `map info`),
      or 2018_IEEE_GRSS_DFC_HSI_TR.tif      or the same as a GeoTIFF
    UH_NAD83_<easting>_<northing>.tif       very-high-resolution RGB tiles, named by their upper-left UTM corner

`.tif` and `.tiff` both read. A GeoTIFF's place is its ModelTiepoint and ModelPixelScale tags (raster
(i, j) at ground (X, Y), pixel size (sx, sy)); an ENVI header's is its `map info` (reference pixel,
easting, northing, pixel size). Tiles are placed by their tie points (and must abut, as their names
say); the RGB mosaic and the HSI are cut to the ground truth's extent, so a product larger than it is
cropped, not stretched. A product that does not cover that extent, or whose pixel grid is off the
ground truth's by more than half a ground-truth pixel, is an error naming the file and the offset in
metres.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from rdd_io.landcover_scene import GT_GSD_M, ORIGIN_UTM, make_scene, split_tiles, tiff_bytes, write_atomic
from rdd_io.schema import SchemaError

GT_STEM, HSI_STEM = "2018_IEEE_GRSS_DFC_GT_TR", "2018_IEEE_GRSS_DFC_HSI_TR"
TILE_NAME = re.compile(r"^UH_NAD83_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.tiff?$", re.IGNORECASE)
TIFF = re.compile(r"\.tiff?$", re.IGNORECASE)
ENVI_TYPES = {1: "u1", 2: "<i2", 3: "<i4", 4: "<f4", 5: "<f8", 12: "<u2", 13: "<u4"}


@dataclass(frozen=True)
class Place:
    """Where a raster lies: upper-left corner (easting x0, northing y0) and pixel size (sx, sy), metres."""
    x0: float
    y0: float
    sx: float
    sy: float


def classify(names: list[str]) -> dict:
    """{"gt": path, "hsi": path, "hsi_header": path or None, "rgb": [paths]} from the files found; a
    product that is missing is an error listing what the folder must hold."""
    found: dict = {"gt": None, "hsi": None, "hsi_header": None, "rgb": []}
    for path in names:
        base = os.path.basename(path)
        stem, ext = os.path.splitext(base)
        if TILE_NAME.match(base):
            found["rgb"].append(path)
        elif stem == GT_STEM and TIFF.search(base):
            found["gt"] = path
        elif stem == HSI_STEM and ext.lower() == ".hdr":
            found["hsi_header"] = path
        elif base == HSI_STEM or (stem == HSI_STEM and TIFF.search(base)):
            found["hsi"] = path
    missing = [what for what, key in (("the ground truth " + GT_STEM + ".tif", "gt"),
                                      ("the hyperspectral image " + HSI_STEM + " (+ .HDR) or .tif", "hsi"))
               if not found[key]] + (["RGB tiles UH_NAD83_<easting>_<northing>.tif"] if not found["rgb"] else [])
    if missing:
        raise SchemaError(f"DFC2018 input: missing {', '.join(missing)} among {len(names)} files")
    if not TIFF.search(found["hsi"]) and not found["hsi_header"]:
        raise SchemaError(f"{found['hsi']}: ENVI data without its header {HSI_STEM}.HDR")
    return found


def tiff_place(tags: dict, where: str) -> Place:
    """Place of a GeoTIFF from its tie point and pixel scale tags (rdd_io.landcover_read.read_tiff)."""
    if "pixel_scale" not in tags or "tiepoint" not in tags:
        raise SchemaError(f"{where}: no georeferencing (ModelTiepoint and ModelPixelScale tags): the "
                          f"products are placed by it")
    sx, sy = float(tags["pixel_scale"][0]), float(tags["pixel_scale"][1])
    i, j, _, x, y, _ = (float(v) for v in tags["tiepoint"][:6])
    if sx <= 0 or sy <= 0:
        raise SchemaError(f"{where}: pixel scale ({sx}, {sy}) must be positive")
    return Place(x - i * sx, y + j * sy, sx, sy)


def read_envi(header: bytes, data: bytes, where: str) -> tuple[np.ndarray, Place]:
    """An ENVI raster ([lines, samples, bands]) and its place from the header's `map info`."""
    text = header.decode("latin-1")
    fields = {k.strip().lower(): v.strip() for k, v in re.findall(r"^\s*([^=\n]+?)\s*=\s*(\{[^}]*\}|[^\n]*)",
                                                                   text, re.MULTILINE)}
    try:
        lines, samples, bands = (int(fields[k]) for k in ("lines", "samples", "bands"))
        dtype = np.dtype(ENVI_TYPES[int(fields["data type"])])
        if fields.get("byte order", "0") == "1":
            dtype = dtype.newbyteorder(">")
        offset, interleave = int(fields.get("header offset", "0")), fields.get("interleave", "bsq").lower()
        info = [v.strip() for v in fields["map info"].strip("{}").split(",")]
        ref_x, ref_y, x, y, sx, sy = (float(v) for v in info[1:7])
    except (KeyError, ValueError, IndexError) as exc:
        raise SchemaError(f"{where}: ENVI header lacks or mangles {exc} (needs samples, lines, bands, data type, "
                          f"map info)") from None
    count = lines * samples * bands
    values = np.frombuffer(data, dtype=dtype, count=count, offset=offset) if len(data) >= offset + count * \
        dtype.itemsize else None
    if values is None:
        raise SchemaError(f"{where}: {len(data)} bytes, the header describes {offset + count * dtype.itemsize}")
    order = {"bsq": (bands, lines, samples), "bil": (lines, bands, samples), "bip": (lines, samples, bands)}
    cube = values.reshape(order[interleave])
    cube = {"bsq": lambda c: c.transpose(1, 2, 0), "bil": lambda c: c.transpose(0, 2, 1),
            "bip": lambda c: c}[interleave](cube)
    # map info's reference pixel is 1-based: (1, 1) is the upper-left corner of the first pixel
    return np.ascontiguousarray(cube), Place(x - (ref_x - 1) * sx, y + (ref_y - 1) * sy, sx, sy)


def mosaic(tiles: dict[str, tuple[np.ndarray, Place]]) -> tuple[np.ndarray, Place]:
    """Tiles {name: (array, place)} -> one image and its place: rows run south, columns east, by tie
    point; each tile must start where its neighbours end (within half a pixel)."""
    from rdd_io.landcover_read import grid_positions, merge_tiles
    places = {name: place for name, (_, place) in tiles.items()}
    grid = grid_positions({name: (p.x0, p.y0) for name, p in places.items()})
    merged = merge_tiles({grid[n]: a for n, (a, _) in tiles.items()}, {grid[n]: n for n in tiles})
    first = min(tiles, key=lambda n: grid[n])
    origin = places[first]
    heights = {grid[n][0]: a.shape[0] for n, (a, _) in tiles.items()}
    widths = {grid[n][1]: a.shape[1] for n, (a, _) in tiles.items()}
    for name, place in places.items():
        r, c = grid[name]
        x = origin.x0 + sum(widths[k] for k in range(c)) * origin.sx
        y = origin.y0 - sum(heights[k] for k in range(r)) * origin.sy
        if abs(place.x0 - x) > origin.sx / 2 or abs(place.y0 - y) > origin.sy / 2 or \
                (place.sx, place.sy) != (origin.sx, origin.sy):
            raise SchemaError(f"{name}: tile placed at ({place.x0:.3f}, {place.y0:.3f}) with pixels "
                              f"{place.sx} x {place.sy} m, its grid position needs ({x:.3f}, {y:.3f}) "
                              f"and {origin.sx} x {origin.sy} m: off by ({place.x0 - x:+.3f}, {place.y0 - y:+.3f}) m")
    return merged, origin


def cut_to(array: np.ndarray, place: Place, gt_place: Place, gt_shape: tuple, where: str) -> np.ndarray:
    """The part of a product that covers the ground truth's extent, on the product's own pixels."""
    width_m, height_m = gt_shape[1] * gt_place.sx, gt_shape[0] * gt_place.sy
    col, row = (gt_place.x0 - place.x0) / place.sx, (place.y0 - gt_place.y0) / place.sy
    cols, rows = width_m / place.sx, height_m / place.sy
    off_x = (col - round(col)) * place.sx
    off_y = (row - round(row)) * place.sy
    if max(abs(off_x), abs(off_y)) > gt_place.sx / 2 or abs(cols - round(cols)) * place.sx > gt_place.sx / 2 \
            or abs(rows - round(rows)) * place.sy > gt_place.sy / 2:
        raise SchemaError(f"{where}: misregistered with the ground truth by ({off_x:+.3f}, {off_y:+.3f}) m "
                          f"(east, south), more than half a ground-truth pixel ({gt_place.sx / 2} m): its pixel "
                          f"grid does not line up with {GT_STEM}")
    c0, r0, nc, nr = round(col), round(row), round(cols), round(rows)
    h, w = array.shape[:2]
    short = {"west": -c0 * place.sx, "north": -r0 * place.sy, "east": (c0 + nc - w) * place.sx,
             "south": (r0 + nr - h) * place.sy}
    gaps = {side: metres for side, metres in short.items() if metres > 0}
    if gaps:
        raise SchemaError(f"{where}: does not cover the ground truth's extent: short by "
                          + ", ".join(f"{m:.2f} m on the {side}" for side, m in gaps.items())
                          + f" (product corner ({place.x0:.2f}, {place.y0:.2f}), ground truth's "
                            f"({gt_place.x0:.2f}, {gt_place.y0:.2f}))")
    return array[r0:r0 + nr, c0:c0 + nc]


def load(files: dict[str, bytes], expected_bands: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """{path: bytes} of a downloaded DFC2018 folder -> (RGB uint8, HSI float32, GT uint8, HSI path): RGB and
    HSI cut to the ground truth's extent on their own pixel grids (resize them to the GT grid next)."""
    from rdd_io import landcover_read as lr
    found = classify(list(files))
    gt_array, gt_tags = lr.read_tiff(files[found["gt"]], found["gt"])
    gt = lr.check_classes(gt_array, found["gt"])
    gt_place = tiff_place(gt_tags, found["gt"])
    tiles = {}
    for path in found["rgb"]:
        tiles[path] = (lr.read_rgb_tile(files[path], path), tiff_place(lr.read_tiff(files[path], path)[1], path))
        east, north = (float(v) for v in TILE_NAME.match(os.path.basename(path)).groups())
        place = tiles[path][1]
        if abs(place.x0 - east) > 0.5 or abs(place.y0 - north) > 0.5:  # names round to metres
            raise SchemaError(f"{path}: its name says corner ({east:.0f}, {north:.0f}), its tie point "
                              f"({place.x0:.2f}, {place.y0:.2f}): "
                              f"off by ({place.x0 - east:+.2f}, {place.y0 - north:+.2f}) m")
    rgb, rgb_place = mosaic(tiles)
    rgb = cut_to(rgb, rgb_place, gt_place, gt.shape, "the RGB tiles (" + ", ".join(
        os.path.basename(p) for p in sorted(found["rgb"])) + ")")
    if found["hsi_header"]:
        hsi, hsi_place = read_envi(files[found["hsi_header"]], files[found["hsi"]], found["hsi"])
    else:
        hsi_array, tags = lr.read_tiff(files[found["hsi"]], found["hsi"])
        hsi, hsi_place = hsi_array, tiff_place(tags, found["hsi"])
    if hsi.ndim != 3 or (expected_bands is not None and hsi.shape[2] != expected_bands):
        raise SchemaError(f"{found['hsi']}: shape {hsi.shape}, expected [rows, columns, {expected_bands}]")
    hsi = hsi.astype(np.float32)
    lr._check_finite(found["hsi"], hsi)
    return rgb, cut_to(hsi, hsi_place, gt_place, gt.shape, found["hsi"]), gt, found["hsi"]


def envi_bytes(cube: np.ndarray, place: Place) -> tuple[bytes, bytes]:
    """(header, data) of a float32 [lines, samples, bands] cube as ENVI band-sequential, placed by map info."""
    lines, samples, bands = cube.shape
    header = (f"ENVI\nsamples = {samples}\nlines = {lines}\nbands = {bands}\nheader offset = 0\n"
              f"file type = ENVI Standard\ndata type = 4\ninterleave = bsq\nbyte order = 0\n"
              f"map info = {{UTM, 1.000, 1.000, {place.x0:.3f}, {place.y0:.3f}, {place.sx}, {place.sy}, 15, North, "
              f"NAD83, units=Meters}}\n")
    return header.encode(), np.ascontiguousarray(cube.transpose(2, 0, 1), dtype="<f4").tobytes()


def list_files(uri: str) -> list[str]:
    """Every file under a folder URI, any depth (local folders directly, others through Hadoop)."""
    from rdd_io import storage
    if storage.is_local(uri):
        root = storage.local_path(uri)
        return sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)
    h = storage._Hadoop(uri)
    found, it = [], h.fs.listFiles(h.path, True)
    while it.hasNext():
        found.append(str(it.next().getPath().toString()))
    return sorted(found)


def read_folder(uri: str, expected_bands: int | None = None):
    """load() on the products found under a downloaded DFC2018 folder; only the files it needs are read
    (the contest's folders also hold LiDAR rasters and point clouds)."""
    from rdd_io import storage
    names = list_files(uri)
    found = classify(names)
    wanted = [found["gt"], found["hsi"], *found["rgb"]] + ([found["hsi_header"]] if found["hsi_header"] else [])
    return load({path: storage.read_bytes(path) for path in wanted}, expected_bands)


# ------------------------------------------------------------------ a simulated scene in this layout
def write_dfc2018(out_dir, seed: int = 0, gt_shape=(200, 200), bands: int = 48, rgb_factor: int = 4,
                  tile_grid=(2, 2), hsi_offset_m=(0.0, 0.0), test_fraction: float = 0.0) -> dict:
    """Generate a scene (rdd_io.landcover_scene) and write it as the contest distributes its products:
    GT/2018_IEEE_GRSS_DFC_GT_TR.tif, HSI/2018_IEEE_GRSS_DFC_HSI_TR + .HDR (ENVI), and
    Final RGB HR Imagery/UH_NAD83_<easting>_<northing>.tif tiles. `hsi_offset_m` (east, north) moves the
    HSI's georeferencing, to make a misregistered copy. Returns the scene's facts."""
    scene = make_scene(seed, gt_shape, bands, rgb_factor, test_fraction=test_fraction)
    for folder in ("GT", "HSI", "Final RGB HR Imagery"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    write_atomic(os.path.join(out_dir, "GT", f"{GT_STEM}.tif"), tiff_bytes(scene["gt"], GT_GSD_M))
    hsi_place = Place(ORIGIN_UTM[0] + hsi_offset_m[0], ORIGIN_UTM[1] + hsi_offset_m[1], 2 * GT_GSD_M, 2 * GT_GSD_M)
    header, data = envi_bytes(scene["hsi"], hsi_place)
    write_atomic(os.path.join(out_dir, "HSI", f"{HSI_STEM}.HDR"), header)
    write_atomic(os.path.join(out_dir, "HSI", HSI_STEM), data)
    rgb_gsd = GT_GSD_M / rgb_factor
    tiles = split_tiles(scene["rgb"], tile_grid)
    names = []
    for (r, c), tile in tiles.items():
        y0 = sum(tiles[(i, c)].shape[0] for i in range(r))
        x0 = sum(tiles[(r, j)].shape[1] for j in range(c))
        origin = (ORIGIN_UTM[0] + x0 * rgb_gsd, ORIGIN_UTM[1] - y0 * rgb_gsd)
        name = "UH_NAD83_{}_{}.tif".format(*(f"{v:.3f}".rstrip("0").rstrip(".") for v in origin))
        write_atomic(os.path.join(out_dir, "Final RGB HR Imagery", name), tiff_bytes(tile, rgb_gsd, origin))
        names.append(name)
    return {"gt": scene["gt"], "hsi_shape": list(scene["hsi"].shape), "rgb_tiles": sorted(names)}
