"""A seedable synthetic scene in the file layout of the 2018 IEEE GRSS Data Fusion Contest.

The contest's University of Houston products are a hyperspectral image (48-50 bands, 380-1050 nm,
1 m), very-high-resolution RGB in GeoTIFF tiles and a 0.5 m ground-truth raster with the 20 classes
of the thesis's Table 6.1 (0 = unclassified). This module writes the same layout at a small size:

    hsi.tif                  float32 [H/2, W/2, bands]   1 m
    rgb/tile_r{r}_c{c}.tif   uint8   RGB tiles           0.5 m / rgb_factor
    gt.tif                   uint8   [H, W]              0.5 m
    scene.json               sizes, tile grid, wavelengths, seed, pixels per class

The ground truth is built from Voronoi parcels (some left unclassified), roads with sidewalks and
crosswalks, a railway with trains, rectangular buildings and cars. Each class has its own smooth
spectrum (Gaussian mixture, red edge for vegetation) and its own RGB colour and texture.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np

CLASSES = (
    "Healthy Grass", "Stressed Grass", "Artificial Turf", "Evergreen Trees", "Deciduous Trees",
    "Bare Earth", "Water", "Residential Buildings", "Non-Residential Buildings", "Roads",
    "Sidewalks", "Crosswalks", "Major thoroughfares", "Highways", "Railways",
    "Paved Parking Lots", "Unpaved Parking Lots", "Cars", "Trains", "Stadium Seats",
)  # class k (1..20) is CLASSES[k - 1]; 0 is unclassified
N_CLASSES = len(CLASSES)
UNCLASSIFIED = 0
PARCEL_CLASSES = (1, 2, 3, 4, 5, 6, 7, 16, 17, 20)  # land covers that fill whole parcels
VEGETATION = (1, 2, 4, 5)
# Materials that look alike from above (the thesis's urban classes: roofs, roads, sidewalks, crosswalks,
# parking lots; and the vegetation), whose spectra share most of their shape: CONFUSABLE[k] is k's group.
CONFUSABLE = {k: "urban" for k in (8, 9, 10, 11, 12, 13, 14, 16, 17)} | {k: "green" for k in (1, 2, 3, 4, 5)}
OWN_SHARE = 0.3   # how much of a confusable class's spectrum is its own (the rest is the group's)
BUILDINGS = (8, 9)
SIGNATURE_SEED = 2018  # materials keep their spectra from scene to scene
ORIGIN_UTM = (271460.0, 3290290.0)  # upper-left corner (easting, northing), metres
GT_GSD_M = 0.5

# Per class (0..20): base RGB colour, then texture: speckle, blotch, stripe amplitude, stripe
# period (RGB pixels), stripe axis (0 = varies down rows, 1 = across columns).
_RGB = np.array([
    (150, 140, 120), (60, 160, 60), (170, 170, 70), (30, 210, 90), (20, 80, 40), (90, 120, 30),
    (140, 100, 60), (40, 70, 160), (170, 70, 50), (200, 200, 210), (70, 70, 75), (185, 180, 160),
    (240, 240, 240), (105, 105, 100), (130, 135, 160), (90, 50, 30), (120, 120, 130),
    (200, 170, 120), (220, 30, 30), (240, 140, 20), (140, 60, 160)], dtype=np.float32)
_TEXTURE = np.array([
    (10, 15, 0, 8, 0), (8, 12, 0, 8, 0), (10, 20, 0, 8, 0), (4, 0, 25, 6, 1), (25, 30, 0, 8, 0),
    (20, 35, 0, 8, 0), (12, 20, 0, 8, 0), (2, 6, 0, 8, 0), (4, 0, 15, 10, 0), (3, 0, 0, 8, 0),
    (6, 4, 0, 8, 0), (4, 0, 8, 4, 1), (2, 0, 60, 4, 1), (5, 0, 0, 8, 0), (5, 6, 0, 8, 0),
    (8, 0, 35, 3, 1), (5, 0, 30, 12, 1), (15, 15, 0, 8, 0), (6, 0, 0, 8, 0), (4, 0, 20, 6, 0),
    (6, 0, 45, 3, 0)], dtype=np.float32)


def class_name(k: int) -> str:
    return "Unclassified" if k == UNCLASSIFIED else CLASSES[k - 1]


def wavelengths(bands: int = 48, lo_nm: float = 380.0, hi_nm: float = 1050.0) -> np.ndarray:
    """Band centres evenly spaced from lo_nm to hi_nm inclusive."""
    if bands < 1:
        raise ValueError(f"need bands >= 1, got {bands}")
    return np.linspace(lo_nm, hi_nm, bands)


def class_signatures(wl_nm: np.ndarray, seed: int = SIGNATURE_SEED) -> np.ndarray:
    """Reflectance-like spectra float32 [1 + N_CLASSES, bands]; row 0 is the unclassified mix."""
    rng = np.random.default_rng(seed)
    x = np.asarray(wl_nm, dtype=np.float64)[None, :]
    out = np.empty((N_CLASSES + 1, x.shape[1]))
    for k in range(N_CLASSES + 1):
        centre = rng.uniform(380, 1050, (3, 1))
        width = rng.uniform(40, 200, (3, 1))
        amp = rng.uniform(-0.15, 0.3, (3, 1))
        curve = rng.uniform(0.08, 0.35) + (amp * np.exp(-0.5 * ((x - centre) / width) ** 2)).sum(0)
        if k in VEGETATION:  # chlorophyll: green bump, red absorption, then the red edge
            curve += 0.08 * np.exp(-0.5 * ((x[0] - 550) / 30) ** 2)
            curve += rng.uniform(0.25, 0.5) / (1 + np.exp(-(x[0] - 715) / 15))
        if k == 7:  # water: dark, falling towards the near infrared
            curve = 0.12 * np.exp(-(x[0] - 380) / 250) + 0.01
        out[k] = curve
    for group in set(CONFUSABLE.values()):
        members = [k for k, g in CONFUSABLE.items() if g == group]
        shared = out[members].mean(axis=0)
        out[members] = shared + OWN_SHARE * (out[members] - shared)
    return np.clip(out, 0.01, None).astype(np.float32)


def illumination(gt: np.ndarray, rng) -> np.ndarray:
    """float32 [H, W] factor on the light each ground pixel reflects: smooth variation (sun angle, slopes,
    haze) times shadows cast south-east of every building (x0.45)."""
    light = 1 + 0.2 * _blotch(rng, gt.shape, 16)
    building = np.isin(gt, BUILDINGS)
    shadow = np.zeros_like(building)
    for d in range(1, 5):
        shadow[d:, d:] |= building[:-d, :-d]
    light[shadow & ~building] *= 0.45
    return np.clip(light, 0.2, None).astype(np.float32)


def _line_distance(yy, xx, point, angle):
    """Distance of each pixel from the line through `point` (row, col) at `angle` (radians)."""
    return np.abs((yy - point[0]) * np.cos(angle) - (xx - point[1]) * np.sin(angle))


def _voronoi(shape, rng, n_parcels):
    seeds = rng.uniform((0, 0), shape, (n_parcels, 2))
    owner = np.empty(shape, dtype=np.int32)
    cols = np.arange(shape[1])[None, :, None]
    for r0 in range(0, shape[0], 128):  # row chunks bound the distance table
        rows = np.arange(r0, min(r0 + 128, shape[0]))[:, None, None]
        d2 = (rows - seeds[:, 0]) ** 2 + (cols - seeds[:, 1]) ** 2
        owner[r0:r0 + len(rows[:, 0, 0])] = d2.argmin(axis=2)
    return owner


def label_map(shape=(200, 200), rng=None, margin: int = 12, min_pixels: int = 40,
              test_fraction: float = 0.0) -> np.ndarray:
    """Ground truth uint8 [H, W]: parcels, buildings, roads, railway, cars, trains.

    Every class is guaranteed at least `min_pixels` pixels at least `margin` from the border
    (where a full patch can be cut), by planting a small block where a class came out short; with a
    `test_fraction`, on each side of the held-out split (rdd_io.landcover_patches.split_region): among the
    training centres and among the test centres.
    """
    rng = np.random.default_rng(rng)
    h, w = shape
    n_parcels = max(len(PARCEL_CLASSES) + 4, h * w // 1600)
    choice = list(rng.permutation(PARCEL_CLASSES))  # each parcel class at least once
    choice += list(rng.choice(PARCEL_CLASSES + (UNCLASSIFIED,) * 3, n_parcels - len(choice)))
    gt = np.array(choice, dtype=np.uint8)[_voronoi(shape, rng, n_parcels)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(max(3, h * w // 2500)):  # buildings first: roads are painted over them
        kind = rng.choice((8, 9))
        bh, bw = rng.integers(*((5, 11) if kind == 8 else (10, 22)), size=2)
        r, c = rng.integers(0, max(1, h - bh)), rng.integers(0, max(1, w - bw))
        gt[r:r + bh, c:c + bw] = kind
    lines = []
    for axis in (0, 1):  # roughly horizontal, then roughly vertical roads
        for _ in range(max(1, (h if axis == 0 else w) // 90)):
            where = rng.uniform(0.15, 0.85) * (h if axis == 0 else w)
            point = (where, 0.0) if axis == 0 else (0.0, where)
            angle = rng.uniform(-0.15, 0.15) + axis * np.pi / 2
            kind, width = [(10, 4), (13, 6), (14, 9)][rng.integers(0, 3)]
            dist = _line_distance(yy, xx, point, angle)
            gt[(dist < width / 2 + 2) & (gt != 10) & (gt != 13) & (gt != 14)] = 11  # sidewalk
            gt[dist < width / 2] = kind
            lines.append((point, angle, width))
    for (p1, a1, w1) in lines[:1]:  # crosswalk bars on each arm of the first crossings
        for (p2, a2, w2) in lines[1:]:
            # p1 + t d1 = p2 + s d2 with d = (sin a, cos a) in (row, col); solved in (x, y)
            m = np.array([[np.cos(a1), -np.cos(a2)], [np.sin(a1), -np.sin(a2)]])
            if abs(np.linalg.det(m)) < 1e-6:
                continue
            t = np.linalg.solve(m, [p2[1] - p1[1], p2[0] - p1[0]])
            cy, cx = p1[0] + t[0] * np.sin(a1), p1[1] + t[0] * np.cos(a1)
            ring = np.hypot(yy - cy, xx - cx)
            on_road = np.isin(gt, (10, 13, 14))
            gt[on_road & (ring > max(w1, w2) / 2 + 1) & (ring < max(w1, w2) / 2 + 5)] = 12
    rail_point, rail_angle = (rng.uniform(0.2, 0.8) * h, 0.0), rng.uniform(-0.3, 0.3)
    rail = _line_distance(yy, xx, rail_point, rail_angle) < 2
    gt[rail] = 15
    along = (xx - rail_point[1]) * np.cos(rail_angle) + (yy - rail_point[0]) * np.sin(rail_angle)
    start = rng.uniform(0, 0.5 * w)
    gt[rail & (along > start) & (along < start + 0.3 * w)] = 19  # one train on the line
    parked = np.flatnonzero(np.isin(gt, (10, 13, 14, 16)).ravel())
    for idx in rng.choice(parked, min(len(parked), max(4, h * w // 800)), replace=False):
        r, c = divmod(int(idx), w)
        ch, cw = (2, 4) if rng.random() < 0.5 else (4, 2)
        gt[r:r + ch, c:c + cw] = 18
    # Column ranges [lo, hi) of training and of test centres, and the pixels each class needs there; the
    # narrow test region is topped up as far as it goes (a class absent there is left out of the test set).
    regions = [(margin, w - margin, min_pixels, True)]
    if test_fraction:
        x0 = held_out_column(w, test_fraction)
        regions = [(margin, x0 - 2 * margin, min_pixels, True), (x0, w - margin, max(4, min_pixels // 4), False)]
    for lo, hi, need, required in regions:
        side = int(np.ceil(np.sqrt(need))) + 2
        for _ in range(10 * N_CLASSES):  # top up classes that came out short in the region
            inner = gt[margin:h - margin, lo:hi]
            short = np.flatnonzero(np.bincount(inner.ravel(), minlength=N_CLASSES + 1)[1:] < need)
            if not short.size or hi - lo <= side:
                break
            r = rng.integers(margin, h - margin - side)
            c = rng.integers(lo, hi - side)
            gt[r:r + side, c:c + side] = short[0] + 1
        if required and short.size:
            raise ValueError(f"scene {shape} is too small to hold every class with {min_pixels} pixels")
    return gt


def held_out_column(width: int, test_fraction: float) -> int:
    """First column of the held-out test region: the east-most `test_fraction` of the scene."""
    return int(round(width * (1 - test_fraction)))


def _blotch(rng, shape, cell: int) -> np.ndarray:
    """Smooth-ish noise: coarse normal cells, repeated up to `shape`."""
    coarse = rng.standard_normal((-(-shape[0] // cell), -(-shape[1] // cell)))
    return np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:shape[0], :shape[1]]


def render_hsi(gt: np.ndarray, signatures: np.ndarray, rng, noise: float = 0.01, light=None) -> np.ndarray:
    """float32 [H/2, W/2, bands]: each 1 m pixel mixes the spectra of its 2x2 ground pixels and, through
    the sensor's point spread, some of its neighbours'; lit by `light` (illumination), plus sensor noise."""
    rng = np.random.default_rng(rng)
    fine = signatures[gt] * (1 + 0.05 * _blotch(rng, gt.shape, 6))[..., None].astype(np.float32)
    if light is not None:
        fine = fine * light[..., None]
    h, w = gt.shape[0] // 2, gt.shape[1] // 2
    coarse = fine[:2 * h, :2 * w].reshape(h, 2, w, 2, -1).mean(axis=(1, 3))
    padded = np.pad(coarse, ((1, 1), (1, 1), (0, 0)), mode="edge")
    around = sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    coarse = 0.6 * coarse + 0.4 * around  # point spread: edges mix neighbouring materials
    return (coarse + noise * rng.standard_normal(coarse.shape)).astype(np.float32)


def render_rgb(gt: np.ndarray, factor: int, rng, noise: float = 4.0, light=None) -> np.ndarray:
    """uint8 [H*factor, W*factor, 3]: class colour plus the class's speckle, blotch and stripes, lit by
    `light` (illumination on the ground-truth grid)."""
    rng = np.random.default_rng(rng)
    lab = np.repeat(np.repeat(gt, factor, 0), factor, 1)
    tex = _TEXTURE[lab]
    yy, xx = np.mgrid[0:lab.shape[0], 0:lab.shape[1]].astype(np.float32)
    coord = np.where(tex[..., 4] > 0, xx, yy)
    pattern = (tex[..., 0] * rng.standard_normal(lab.shape)
               + tex[..., 1] * _blotch(rng, lab.shape, 2 * factor)
               + tex[..., 2] * np.sin(2 * np.pi * coord / tex[..., 3]))
    img = _RGB[lab] + pattern[..., None]
    if light is not None:
        img = img * np.repeat(np.repeat(light, factor, 0), factor, 1)[..., None]
    img = img + noise * rng.standard_normal(lab.shape + (3,))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def split_tiles(img: np.ndarray, grid=(4, 4)) -> dict:
    """{(row, col): tile} cut in a grid; sizes differ by at most one pixel when not divisible."""
    tiles = {}
    for r, band in enumerate(np.array_split(img, grid[0], axis=0)):
        for c, tile in enumerate(np.array_split(band, grid[1], axis=1)):
            tiles[(r, c)] = np.ascontiguousarray(tile)
    return tiles


def make_scene(seed: int = 0, gt_shape=(200, 200), bands: int = 48, rgb_factor: int = 4,
               hsi_noise: float = 0.02, rgb_noise: float = 4.0, test_fraction: float = 0.0) -> dict:
    """In-memory scene: dict(gt, hsi, rgb, wavelengths_nm). A seed fixes every pixel."""
    if gt_shape[0] % 2 or gt_shape[1] % 2 or min(gt_shape) < 80 or rgb_factor < 1:
        raise ValueError(f"need an even gt_shape of at least 80x80 and rgb_factor >= 1, got "
                         f"{gt_shape}, {rgb_factor}")
    layout, hsi_seed, rgb_seed = np.random.SeedSequence(seed).spawn(3)
    layout_rng = np.random.default_rng(layout)
    gt = label_map(tuple(gt_shape), layout_rng, test_fraction=test_fraction)
    light = illumination(gt, layout_rng)
    wl = wavelengths(bands)
    return dict(gt=gt, hsi=render_hsi(gt, class_signatures(wl), hsi_seed, hsi_noise, light),
                rgb=render_rgb(gt, rgb_factor, rgb_seed, rgb_noise, light), wavelengths_nm=wl)


def tiff_bytes(array: np.ndarray, gsd_m: float, origin=ORIGIN_UTM) -> bytes:
    """GeoTIFF-style bytes: pixel scale and tie point tags place the raster on the ground."""
    import tifffile
    buf = io.BytesIO()
    photometric = "rgb" if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8 \
        else "minisblack"
    tifffile.imwrite(buf, array, photometric=photometric, planarconfig="contig", extratags=[
        (33550, "d", 3, (gsd_m, gsd_m, 0.0), True),                         # ModelPixelScale
        (33922, "d", 6, (0.0, 0.0, 0.0, origin[0], origin[1], 0.0), True)])  # ModelTiepoint
    return buf.getvalue()


def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_scene(out_dir, seed: int = 0, gt_shape=(200, 200), bands: int = 48,
                rgb_factor: int = 4, tile_grid=(4, 4), **kw) -> dict:
    """Generate and write a scene into `out_dir`; returns the scene.json content."""
    scene = make_scene(seed, gt_shape, bands, rgb_factor, **kw)
    os.makedirs(os.path.join(out_dir, "rgb"), exist_ok=True)
    rgb_gsd = GT_GSD_M / rgb_factor
    tiles = split_tiles(scene["rgb"], tile_grid)
    tile_files, offsets = {}, {}
    for (r, c), tile in tiles.items():
        y0 = sum(tiles[(i, c)].shape[0] for i in range(r))
        x0 = sum(tiles[(r, j)].shape[1] for j in range(c))
        name = f"rgb/tile_r{r}_c{c}.tif"
        origin = (ORIGIN_UTM[0] + x0 * rgb_gsd, ORIGIN_UTM[1] - y0 * rgb_gsd)
        write_atomic(os.path.join(out_dir, name), tiff_bytes(tile, rgb_gsd, origin))
        tile_files[name], offsets[name] = list(tile.shape), [y0, x0]
    write_atomic(os.path.join(out_dir, "hsi.tif"), tiff_bytes(scene["hsi"], 2 * GT_GSD_M))
    write_atomic(os.path.join(out_dir, "gt.tif"), tiff_bytes(scene["gt"], GT_GSD_M))
    counts = np.bincount(scene["gt"].ravel(), minlength=N_CLASSES + 1)
    meta = dict(
        seed=seed, gt_shape=list(scene["gt"].shape), hsi_shape=list(scene["hsi"].shape),
        rgb_shape=list(scene["rgb"].shape), rgb_factor=rgb_factor, tile_grid=list(tile_grid),
        tiles=tile_files, tile_offsets=offsets, bands=bands,
        wavelengths_nm=[round(float(v), 3) for v in scene["wavelengths_nm"]],
        gsd_m=dict(hsi=2 * GT_GSD_M, gt=GT_GSD_M, rgb=rgb_gsd), origin_utm=list(ORIGIN_UTM),
        classes=list(CLASSES), class_pixels={class_name(k): int(n) for k, n in enumerate(counts)},
        generator_kw={k: v for k, v in kw.items()})
    write_atomic(os.path.join(out_dir, "scene.json"),
                  json.dumps(meta, indent=1, sort_keys=True).encode())
    return meta
