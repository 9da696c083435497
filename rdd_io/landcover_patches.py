"""Land-cover patch extraction (pure numpy): resize to the ground-truth grid, keep some bands,
sample labelled centres per class, cut the same 25x25 window from both modalities.

Following the thesis (section 6.2.1): the RGB mosaic and the hyperspectral image are resized to the
ground-truth grid, class 0 (unclassified) is dropped, and for each class `per_class` centres are
drawn at random among its pixels that are far enough from the border for a full patch. A class
with fewer such pixels than requested is sampled with replacement and reported (a documented
choice, not an error); a class with none is an error.
"""
from __future__ import annotations

import io
import os
from typing import Any, Mapping, Sequence

import numpy as np

from rdd_io.landcover_scene import N_CLASSES, class_name, held_out_column
from rdd_io import storage
from rdd_io.schema import N, Field, Schema, SchemaError

PATCH = 25
UNCLASSIFIED_VALUE = 0

LANDCOVER_PATCHES = Schema("landcover_patches", [
    Field("rgb", np.float32, (N, PATCH, PATCH, 3)),        # raw 0..255 values
    Field("hsi", np.float32, (N, PATCH, PATCH, "bands")),
    Field("label", np.int32, (N,), values=(0, N_CLASSES - 1)),  # ground-truth class - 1
    Field("centre", np.int32, (N, 2), values=(0, None)),         # (row, col) on the ground-truth grid
])


def _source_index(n_out: int, n_in: int) -> np.ndarray:
    """Nearest source pixel of each output pixel, pixel centres aligned (exact integer math)."""
    return ((2 * np.arange(n_out) + 1) * n_in) // (2 * n_out)


def _bilinear_axis(img: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    n_in = img.shape[axis]
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo).astype(np.float32).reshape((-1,) + (1,) * (img.ndim - axis - 1))
    a, b = np.take(img, lo, axis=axis), np.take(img, hi, axis=axis)
    return a * (1 - frac) + b * frac


def resize(img: np.ndarray, shape: Sequence[int], method: str = "nearest") -> np.ndarray:
    """[H, W, ...] -> [shape[0], shape[1], ...].

    nearest: keeps dtype; an integer upscale repeats pixels, an integer downscale picks the
    centre-most source pixel. bilinear: float32, half-pixel centres, edges clamped (for spectra).
    area: float32 block mean, for integer downscale factors only.
    """
    img = np.asarray(img)
    h, w = int(shape[0]), int(shape[1])
    if img.ndim < 2 or h < 1 or w < 1:
        raise ValueError(f"cannot resize an array of shape {img.shape} to {tuple(shape)}")
    if method == "nearest":
        return img[_source_index(h, img.shape[0])][:, _source_index(w, img.shape[1])]
    if method == "bilinear":
        out = _bilinear_axis(img.astype(np.float32, copy=False), h, 0)
        return _bilinear_axis(out, w, 1).astype(np.float32, copy=False)
    if method == "area":
        fh, fw = img.shape[0] // h, img.shape[1] // w
        if fh * h != img.shape[0] or fw * w != img.shape[1]:
            raise ValueError(f"area resize needs integer factors, got {img.shape[:2]} -> {(h, w)}")
        blocks = img.astype(np.float32).reshape((h, fh, w, fw) + img.shape[2:])
        return blocks.mean(axis=(1, 3)).astype(np.float32)
    raise ValueError(f"unknown resize method {method!r}; use nearest, bilinear or area")


def resize_nearest(img: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    return resize(img, shape, "nearest")


def spread_bands(total: int, keep: int) -> list[int]:
    """`keep` band indices spread evenly over 0..total-1 (ends included)."""
    if not 1 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} bands")
    return [int(i) for i in np.linspace(0, total - 1, keep).round()]


def select_bands(hsi: np.ndarray, bands: Sequence[int], expected_bands: int | None = None,
                 name: str = "<hsi>") -> np.ndarray:
    """hsi[..., bands]; the image must have `expected_bands` bands (the config's count)."""
    hsi = np.asarray(hsi)
    have = hsi.shape[-1]
    if expected_bands is not None and have != expected_bands:
        raise SchemaError(f"{name}: has {have} bands, the config expects {expected_bands}")
    bad = [b for b in bands if not isinstance(b, (int, np.integer)) or not 0 <= b < have]
    if bad or not len(bands):
        raise SchemaError(f"{name}: band indices {bad or list(bands)} not valid for an image "
                          f"with {have} bands (need a non-empty list in 0..{have - 1})")
    return hsi[..., list(bands)]


def patch_centres(gt: np.ndarray, per_class: int, seed, patch: int = PATCH,
                  classes: Sequence[int] | None = None,
                  name: str = "<gt>") -> tuple[np.ndarray, dict]:
    """Random labelled centres, `per_class` of each class -> (centres int32 [N, 2], report).

    Candidates are pixels of the class whose patch x patch window lies inside the image. The
    centres come back shuffled (one numpy Generator from `seed`, so a seed fixes them). report:
    available pixels per class, and `with_replacement` listing each class that had fewer
    candidates than requested (class, name, available, requested).
    """
    gt = np.asarray(gt)
    classes = list(range(1, N_CLASSES + 1)) if classes is None else [int(k) for k in classes]
    if patch < 1 or patch % 2 == 0 or per_class < 1:
        raise ValueError(f"need an odd patch >= 1 and per_class >= 1, got {patch}, {per_class}")
    half = patch // 2
    if gt.ndim != 2 or min(gt.shape) < patch:
        raise SchemaError(f"{name}: ground truth of shape {gt.shape} cannot hold a "
                          f"{patch}x{patch} patch")
    inner = gt[half:gt.shape[0] - half, half:gt.shape[1] - half]
    flat = inner.ravel()
    order = np.argsort(flat, kind="stable")  # one pass groups every class's pixels
    bounds = np.searchsorted(flat[order], [classes, np.add(classes, 1)])
    rng = np.random.default_rng(seed)
    picks, report = [], dict(per_class=per_class, patch=patch, seed=seed, available={},
                             with_replacement=[])
    for k, lo, hi in zip(classes, *bounds):
        available = int(hi - lo)
        report["available"][class_name(k)] = available
        if available == 0:
            raise SchemaError(f"{name}: class {k} ({class_name(k)}) has no labelled pixel at "
                              f"least {half} pixels from the border; cannot cut its patches")
        replace = available < per_class
        if replace:
            report["with_replacement"].append(dict(
                **{"class": k}, name=class_name(k), available=available, requested=per_class))
        picks.append(order[lo:hi][rng.choice(available, per_class, replace=replace)])
    chosen = rng.permutation(np.concatenate(picks))
    rows, cols = np.divmod(chosen, inner.shape[1])
    return np.stack([rows + half, cols + half], axis=1).astype(np.int32), report


def split_region(gt: np.ndarray, test_fraction: float, patch: int = PATCH) -> tuple[np.ndarray, np.ndarray, int]:
    """(training ground truth, test ground truth, first test column): the east-most `test_fraction` of the
    columns is held out. Test centres lie in it; training centres end `patch` columns before it, so no
    training patch overlaps a test patch. Pixels outside each part become 0 (unclassified)."""
    gt = np.asarray(gt)
    x0 = held_out_column(gt.shape[1], test_fraction)
    if not 0 < test_fraction < 1 or x0 - patch < patch:
        raise ValueError(f"test_fraction {test_fraction} leaves no training region in {gt.shape[1]} columns")
    train, test = gt.copy(), gt.copy()
    train[:, x0 - patch + 1:] = UNCLASSIFIED_VALUE
    test[:, :x0] = UNCLASSIFIED_VALUE
    return train, test, x0


def test_set(gt_test: np.ndarray, per_class: int, seed, patch: int = PATCH,
             name: str = "<gt>") -> tuple[np.ndarray, dict]:
    """`per_class` centres of every class that has candidates in the held-out region (others are
    listed in the report's `absent`)."""
    half = patch // 2
    inner = np.asarray(gt_test)[half:gt_test.shape[0] - half, half:gt_test.shape[1] - half]
    counts = np.bincount(inner.ravel(), minlength=N_CLASSES + 1)
    present = [k for k in range(1, N_CLASSES + 1) if counts[k]]
    centres, report = patch_centres(gt_test, per_class, seed, patch, classes=present, name=name)
    report["absent"] = [class_name(k) for k in range(1, N_CLASSES + 1) if not counts[k]]
    return centres, report


def disjoint_sets(gt: np.ndarray, sizes: Sequence[int], seed, patch: int = PATCH,
                  name: str = "<gt>") -> tuple[dict[int, np.ndarray], dict]:
    """Patch sets of the given sizes (each a multiple of the class count, drawn per class) that share no
    centre: one draw of sum(sizes) / 20 centres per class, split per class in order, largest set first.
    Returns ({size: centres int32 [size, 2], shuffled}, the draw's report). A class sampled with
    replacement (too few pixels) may repeat a centre across sets; the report names it."""
    total = sum(sizes) // N_CLASSES
    centres, report = patch_centres(gt, total, seed, patch, name=name)
    labels = np.asarray(gt)[centres[:, 0], centres[:, 1]]
    by_class = [np.flatnonzero(labels == k) for k in range(1, N_CLASSES + 1)]
    rng = np.random.default_rng(seed)
    out, taken = {}, 0
    for n in sorted(sizes, reverse=True):
        k = n // N_CLASSES
        picked = np.concatenate([rows[taken:taken + k] for rows in by_class])
        out[n] = centres[rng.permutation(picked)]
        taken += k
    return out, report


def cut_patches(rgb: np.ndarray, hsi: np.ndarray, centres: np.ndarray, patch: int = PATCH,
                name: str = "<scene>") -> tuple[np.ndarray, np.ndarray]:
    """The patch x patch windows centred on `centres` in both images (already on one grid).

    Returns (rgb patches [N, p, p, 3] in rgb's dtype, hsi patches float32 [N, p, p, bands]);
    pixel (r, c) of the image lands at (half, half) of the patch centred on it.
    """
    rgb, hsi, centres = np.asarray(rgb), np.asarray(hsi), np.asarray(centres)
    if rgb.shape[:2] != hsi.shape[:2] or rgb.ndim != 3 or hsi.ndim != 3:
        raise SchemaError(f"{name}: RGB {rgb.shape} and hyperspectral {hsi.shape} must be "
                          f"[H, W, bands] on the same grid (resize both to the ground truth)")
    half = patch // 2
    h, w = rgb.shape[:2]
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise ValueError(f"centres must be [N, 2], got shape {centres.shape}")
    outside = (centres[:, 0] < half) | (centres[:, 0] >= h - half) | \
              (centres[:, 1] < half) | (centres[:, 1] >= w - half)
    if outside.any():
        i = int(np.argmax(outside))
        raise SchemaError(f"{name}: centre {i} at {tuple(int(v) for v in centres[i])} is closer "
                          f"than {half} pixels to the border of a {h}x{w} image")
    offsets = np.arange(-half, half + 1)
    rows = (centres[:, 0, None] + offsets)[:, :, None]
    cols = (centres[:, 1, None] + offsets)[:, None, :]
    return rgb[rows, cols], hsi[rows, cols].astype(np.float32, copy=False)


def on_gt_grid(rgb: np.ndarray, hsi: np.ndarray, gt_shape: Sequence[int], bands: Sequence[int],
               bands_in: int | None = None, hsi_name: str = "<hsi>") -> tuple[np.ndarray, np.ndarray]:
    """Both products on the ground-truth grid (thesis 6.2.1), the hyperspectral one reduced to `bands`:
    RGB averaged over whole pixels where the grids divide (else nearest), HSI bilinear."""
    rgb = resize(rgb, gt_shape[:2], "area" if rgb.shape[0] % gt_shape[0] == 0 else "nearest")
    return rgb, select_bands(resize(hsi, gt_shape[:2], "bilinear"), bands, bands_in, hsi_name)


def draw_sets(gt: np.ndarray, sizes: Sequence[int], test_fraction: float, test_per_class: int, seed,
              patch: int = PATCH, name: str = "<gt>") -> tuple[dict, dict]:
    """The training sets (disjoint_sets, west of the held-out region) and the held-out test set (test_set):
    ({size: centres, "test": centres}, {str(size): sampling report, "test": its report})."""
    train_gt, test_gt, x0 = split_region(gt, test_fraction, patch)
    sets, report = disjoint_sets(train_gt, sizes, seed, patch, name=name)
    sets["test"], test_report = test_set(test_gt, test_per_class, seed + 1, patch, name=name)
    test_report["first_column"] = x0
    return sets, {str(n): report for n in sizes} | {"test": test_report}


def labels_at(gt: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The class index (ground-truth value - 1) at each centre."""
    return np.asarray(gt)[centres[:, 0], centres[:, 1]].astype(np.int32) - 1


def patch_arrays(rgb: np.ndarray, hsi: np.ndarray, centres: np.ndarray, labels: np.ndarray,
                 patch: int = PATCH, name: str = "<scene>") -> dict[str, np.ndarray]:
    """The LANDCOVER_PATCHES record of `centres` (images already on the ground-truth grid)."""
    rgb_p, hsi_p = cut_patches(rgb, hsi, centres, patch, name)
    return dict(rgb=rgb_p.astype(np.float32), hsi=hsi_p, label=labels, centre=centres)


def read_patch_set(uri: str) -> dict[str, np.ndarray]:
    """Every shard-*.h5 of a patch set, concatenated: {rgb, hsi, label}."""
    parts = [LANDCOVER_PATCHES.read_h5(data, path) for path, data in storage.read_parts(uri, "shard-")]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("rgb", "hsi", "label")}


def volumes(data: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches as the model's one-channel volumes (N, 25, 25, bands, 1), RGB scaled to [0, 1]."""
    return (data["rgb"][..., None].astype(np.float32) / 255.0, data["hsi"][..., None].astype(np.float32),
            data["label"].astype(np.int32))


# Each modality of a shard also as raw little-endian values (rgb-00000.raw: float32 [n, 25, 25, 3], hsi-...:
# float32 [n, 25, 25, bands], label-...: int32 [n]), which TensorFlow reads in-graph (tf.io.read_file) on the
# worker that holds the modality's first layer: the model-parallel run keeps the data where it is used.
MODALITY_DTYPES = {"rgb": "float32", "hsi": "float32", "label": "int32"}


def modality_name(key: str, index: int) -> str:
    return f"{key}-{index:05d}.raw"


def modality_bytes(arrays: Mapping[str, Any]) -> dict[str, bytes]:
    """{modality file prefix: raw bytes} of one shard's rgb, hsi and label arrays."""
    return {key: np.ascontiguousarray(arrays[key], dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
            for key, dtype in MODALITY_DTYPES.items()}


def modality_parts(uri: str, key: str) -> list[str]:
    """Paths of one modality's raw shards in a local patch-set folder, in shard order, as TensorFlow opens
    them (TensorFlow has no HDFS file system: a patch set elsewhere is read through rdd_io.storage)."""
    if not storage.is_local(uri):
        raise ValueError(f"{uri}: raw modality shards are read by TensorFlow, from a local folder only")
    folder = storage.local_path(uri)
    names = sorted(os.listdir(folder)) if folder.is_dir() else []
    base = str(folder)
    names = [n for n in names if n.startswith(f"{key}-") and n.endswith(".raw")]
    if not names:
        raise SchemaError(f"{uri}: no {key}-<shard>.raw files (the patch set was written before the "
                          f"model-parallel run read its data on the workers: prepare the patches again)")
    return [storage.join(base, n) for n in names]


def shard_bytes(arrays: Mapping[str, Any], attrs: Mapping[str, Any] | None = None) -> bytes:
    """One LANDCOVER_PATCHES shard as HDF5 bytes (for writers that go through a Hadoop URI)."""
    buf = io.BytesIO()
    LANDCOVER_PATCHES.write_h5(buf, arrays, attrs)
    return buf.getvalue()


def write_patch_shards(out_dir, arrays: Mapping[str, Any], shard_size: int,
                       attrs: Mapping[str, Any] | None = None) -> list[str]:
    """Write shard-00000.h5, ... of at most `shard_size` patches each into a local folder, each with its
    modalities' raw files (shard_files).

    The whole set is checked against the schema first; each file is written under a temporary
    name and renamed, so a reader never sees half a shard.
    """
    if shard_size < 1:
        raise ValueError(f"need shard_size >= 1, got {shard_size}")
    checked = LANDCOVER_PATCHES.validate(arrays, "<patches>")
    n = len(checked["label"])
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for index, start in enumerate(range(0, n, shard_size)):
        part = {k: v[start:start + shard_size] for k, v in checked.items()}
        for name, payload in shard_files(part, index, attrs).items():
            storage.write_bytes(os.path.join(out_dir, name), payload)  # temporary name, then rename
        paths.append(os.path.join(out_dir, f"shard-{index:05d}.h5"))
    return paths


def shard_files(arrays: Mapping[str, Any], index: int, attrs: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """{file name: bytes} of shard `index` of a patch set: shard-<index>.h5 (LANDCOVER_PATCHES) and each
    modality's raw values (modality_name), as the job's executors make them and write_patch_shards writes."""
    return {f"shard-{index:05d}.h5": shard_bytes(arrays, {**(attrs or {}), "shard": index}),
            **{modality_name(key, index): payload for key, payload in modality_bytes(arrays).items()}}
