"""Land-cover data: synthetic scene, GeoTIFF readers, tile merging, patch sampling and cutting."""
import importlib.util
import json
import os

import numpy as np
import pytest

from rdd_io import landcover_scene as scene_mod
from rdd_io.landcover_patches import (LANDCOVER_PATCHES, cut_patches, labels_at, patch_arrays,
                                      patch_centres, resize, resize_nearest, select_bands,
                                      spread_bands, write_patch_shards)
from rdd_io.landcover_read import (grid_positions, merge_tile_files, merge_tiles, read_gt,
                                   read_hsi, read_raster, read_rgb_tile, tile_position)
from rdd_io.schema import SchemaError

pytestmark = pytest.mark.unit

SEED = 3


@pytest.fixture(scope="module")
def scene():
    return scene_mod.make_scene(SEED)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene")
    meta = scene_mod.write_scene(str(out), seed=SEED)
    return out, meta


def interior_counts(gt, half=12):
    inner = gt[half:gt.shape[0] - half, half:gt.shape[1] - half]
    return np.bincount(inner.ravel(), minlength=scene_mod.N_CLASSES + 1)


# -- scene generator ----------------------------------------------------------------------------
def test_scene_is_deterministic_by_seed_and_holds_every_class(scene):
    again, other = scene_mod.make_scene(SEED), scene_mod.make_scene(SEED + 1)
    for key in ("gt", "hsi", "rgb"):
        assert np.array_equal(scene[key], again[key])
        assert not np.array_equal(scene[key], other[key])
    gt = scene["gt"]
    assert gt.shape == (200, 200) and scene["hsi"].shape == (100, 100, 48)
    assert scene["rgb"].shape == (800, 800, 3) and scene["rgb"].dtype == np.uint8
    counts = interior_counts(gt)
    assert (counts[1:] >= 40).all(), counts  # every class, where a full patch fits
    assert 0 < counts[0] < gt.size // 2      # some unlabelled area, not most of it
    assert scene["wavelengths_nm"][0] == 380 and scene["wavelengths_nm"][-1] == 1050


def test_classes_differ_in_spectrum_and_colour(scene):
    sig = scene_mod.class_signatures(scene["wavelengths_nm"])
    rms = np.sqrt(((sig[1:, None] - sig[None, 1:]) ** 2).mean(-1))
    assert rms[~np.eye(20, dtype=bool)].min() > 0.01  # every class has a spectrum of its own
    urban = [k - 1 for k, g in scene_mod.CONFUSABLE.items() if g == "urban"]
    others = [k for k in range(20) if k + 1 not in scene_mod.CONFUSABLE]
    within = rms[np.ix_(urban, urban)][~np.eye(len(urban), dtype=bool)].mean()
    assert within < 0.5 * rms[np.ix_(urban, others)].mean()  # but the urban materials look alike
    smooth = np.abs(np.diff(sig, 2, axis=1)).max()  # smooth curves, no band-to-band jumps
    assert smooth < 0.05
    rgb_on_gt = resize(scene["rgb"], scene["gt"].shape, "area")
    means = np.array([rgb_on_gt[scene["gt"] == k].mean(0) for k in range(1, 21)])
    dist = np.sqrt(((means[:, None] - means[None]) ** 2).sum(-1))
    assert dist[~np.eye(20, dtype=bool)].min() > 10


def test_written_layout_reads_back(scene, scene_dir):
    out, meta = scene_dir
    on_disk = json.loads((out / "scene.json").read_text())
    assert on_disk == meta and on_disk["seed"] == SEED and on_disk["tile_grid"] == [4, 4]
    assert len(on_disk["wavelengths_nm"]) == 48 and on_disk["classes"] == list(scene_mod.CLASSES)
    assert np.array_equal(read_gt(str(out / "gt.tif")), scene["gt"])
    hsi_bytes = (out / "hsi.tif").read_bytes()
    assert np.array_equal(read_hsi(hsi_bytes, "hsi.tif", expected_bands=48), scene["hsi"])
    tiles = {str(p): p.read_bytes() for p in (out / "rgb").glob("tile_r*_c*.tif")}
    assert len(tiles) == 16
    assert np.array_equal(merge_tile_files(tiles), scene["rgb"])
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_tiles_merge_back_to_the_original_image():
    img = np.random.default_rng(0).integers(0, 255, (37, 50, 3), dtype=np.uint8)
    tiles = scene_mod.split_tiles(img, (3, 4))
    shuffled = dict(sorted(tiles.items(), key=lambda kv: -kv[0][0] * 10 - kv[0][1]))
    assert np.array_equal(merge_tiles(shuffled), img)
    assert tile_position("/data/rgb/tile_r12_c3.tif") == (12, 3)


def test_grid_positions_from_tile_corners():
    origins = {"a": (100.0, 500.0), "b": (150.0, 500.0), "c": (100.0, 450.0), "d": (150.0, 450.0)}
    assert grid_positions(origins) == {"a": (0, 0), "b": (0, 1), "c": (1, 0), "d": (1, 1)}


# -- patches ------------------------------------------------------------------------------------
def test_planted_marker_lands_at_the_patch_centre_in_both_modalities(scene):
    # The marker's 1 m pixel (50, 28) covers ground-truth rows 100-101 and columns 56-57.
    r, c = 101, 56
    rgb = scene["rgb"] // 2  # the marker is the only 255 in the image
    rgb[4 * r:4 * r + 4, 4 * c:4 * c + 4] = 255
    hsi = scene["hsi"].copy()
    hsi[r // 2, c // 2, :] = 100.0
    # Through the files a Spark task would get: tiles as bytes, merged, resized, bands picked.
    tiles = {f"rgb/tile_r{i}_c{j}.tif": scene_mod.tiff_bytes(t, 0.125)
             for (i, j), t in scene_mod.split_tiles(rgb, (4, 4)).items()}
    grid = scene["gt"].shape
    rgb_gt = resize_nearest(merge_tile_files(tiles), grid)
    hsi_gt = select_bands(resize_nearest(hsi, grid), spread_bands(48, 11), 48, "hsi.tif")
    centres = np.array([[r, c], [r + 3, c - 5]])
    rgb_p, hsi_p = cut_patches(rgb_gt, hsi_gt, centres)
    assert rgb_p.shape == (2, 25, 25, 3) and hsi_p.shape == (2, 25, 25, 11)
    assert np.argwhere(rgb_p[0].min(-1) == 255).tolist() == [[12, 12]]
    assert np.argwhere(rgb_p[1].min(-1) == 255).tolist() == [[9, 17]]
    assert (hsi_p[0, 12, 12] == 100).all() and (hsi_p[1, 9, 17] == 100).all()
    assert np.argwhere(hsi_p[0, ..., 0] == 100).tolist() == [[11, 12], [11, 13], [12, 12], [12, 13]]


def test_per_class_counts_are_exact_and_seeded(scene):
    gt = scene["gt"]
    centres, report = patch_centres(gt, 30, seed=7)
    labels = gt[centres[:, 0], centres[:, 1]]
    assert np.array_equal(np.bincount(labels, minlength=21), [0] + [30] * 20)
    assert centres.min() >= 12 and centres.max() < 200 - 12
    assert report["with_replacement"] == []
    assert len({tuple(x) for x in centres}) == len(centres)  # no repeats without replacement
    assert np.array_equal(patch_centres(gt, 30, seed=7)[0], centres)
    assert not np.array_equal(patch_centres(gt, 30, seed=8)[0], centres)


def test_the_two_sets_share_no_centre_and_keep_their_per_class_counts(scene):
    from rdd_io.landcover_patches import disjoint_sets
    gt = scene["gt"]
    sets, report = disjoint_sets(gt, [60, 200], seed=7)
    assert report["with_replacement"] == []
    for n, centres in sets.items():
        labels = gt[centres[:, 0], centres[:, 1]]
        assert np.array_equal(np.bincount(labels, minlength=21), [0] + [n // 20] * 20)
    small, large = ({tuple(x) for x in sets[n]} for n in (60, 200))
    assert len(small) == 60 and len(large) == 200 and not small & large


def test_no_training_patch_overlaps_a_held_out_test_patch():
    from rdd_io.landcover_patches import draw_sets
    gt = scene_mod.make_scene(SEED, test_fraction=0.2)["gt"]
    sets, reports = draw_sets(gt, [200, 60], 0.2, 3, seed=1)
    x0, centres, report = reports["test"]["first_column"], sets["test"], reports["test"]
    assert x0 == 160
    assert report["absent"] == [] and len(centres) == 60  # the generator tops every class up on both sides
    assert not set(map(tuple, sets[200])) & set(map(tuple, sets[60]))  # the two training sets are disjoint
    for n in (200, 60):  # 25-pixel windows: training columns [c - 12, c + 12] end before the test windows begin
        assert len(sets[n]) == n and sets[n][:, 1].max() + 12 < centres[:, 1].min() - 12
    assert (gt[centres[:, 0], centres[:, 1]] > 0).all() and centres[:, 1].min() >= x0


def test_the_nearest_signature_baseline_scores_at_most_half_on_the_held_out_region():
    from models.landcover import nearest_signature
    from rdd_io.landcover_patches import disjoint_sets, split_region, test_set
    s = scene_mod.make_scene(SEED, test_fraction=0.2)
    gt, hsi = s["gt"], select_bands(resize(s["hsi"], s["gt"].shape, "bilinear"), spread_bands(48, 11))
    train, test, _ = split_region(gt, 0.2)
    (centres,), _ = disjoint_sets(train, [400], seed=1)[0].values(), None
    held, _ = test_set(test, 10, seed=2)
    spectra = lambda c: hsi[c[:, 0], c[:, 1]]  # noqa: E731
    labels = lambda c: gt[c[:, 0], c[:, 1]] - 1  # noqa: E731
    accuracy = np.mean(nearest_signature(spectra(centres), labels(centres), spectra(held)) == labels(held))
    # Confusable urban and vegetation spectra, light and shadow, mixed edge pixels, sensor noise: the
    # centre pixel alone is not enough (about 0.2 here); it is above chance (0.05) all the same.
    assert 0.05 < accuracy <= 0.5, accuracy
    assert (nearest_signature([[0, 0], [1, 1], [9, 9]], [0, 0, 1], [[0.4, 0.4], [7, 8]]) == [0, 1]).all()


def test_thesis_count_of_400_reports_scarce_classes(scene):
    gt = scene["gt"]
    centres, report = patch_centres(gt, 400, seed=0)
    labels = gt[centres[:, 0], centres[:, 1]]
    assert np.array_equal(np.bincount(labels, minlength=21), [0] + [400] * 20)
    counts = interior_counts(gt)
    scarce = [k for k in range(1, 21) if counts[k] < 400]
    assert scarce  # this tiny scene has some
    assert [e["class"] for e in report["with_replacement"]] == scarce
    assert all(e["available"] == counts[e["class"]] and e["requested"] == 400
               for e in report["with_replacement"])


def test_scarce_class_is_sampled_with_replacement_inside_its_pixels():
    gt = np.ones((60, 60), dtype=np.uint8)
    few = [(20, 20), (20, 21), (30, 40), (35, 35), (40, 22)]
    for pixel in few:
        gt[pixel] = 2
    centres, report = patch_centres(gt, 400, seed=1, classes=[1, 2])
    labels = gt[centres[:, 0], centres[:, 1]]
    assert (labels == 1).sum() == 400 and (labels == 2).sum() == 400
    assert {tuple(x) for x in centres[labels == 2]} <= set(few)
    assert report["with_replacement"] == [
        {"class": 2, "name": "Stressed Grass", "available": 5, "requested": 400}]


def test_patch_set_labels_and_shards_round_trip(scene, tmp_path):
    grid = scene["gt"].shape
    rgb = resize_nearest(scene["rgb"], grid)
    hsi = select_bands(resize(scene["hsi"], grid, "bilinear"), spread_bands(48, 11))
    centres, _ = patch_centres(scene["gt"], 5, seed=2)
    arrays = patch_arrays(rgb, hsi, centres, labels_at(scene["gt"], centres))
    gt_at = scene["gt"][arrays["centre"][:, 0], arrays["centre"][:, 1]]
    assert np.array_equal(arrays["label"], gt_at.astype(np.int32) - 1)
    assert np.array_equal(arrays["rgb"][:, 12, 12], rgb[arrays["centre"][:, 0],
                                                        arrays["centre"][:, 1]])
    paths = write_patch_shards(str(tmp_path), arrays, shard_size=40, attrs={"seed": 2})
    assert [os.path.basename(p) for p in paths] == ["shard-00000.h5", "shard-00001.h5",
                                                    "shard-00002.h5"]
    back = [LANDCOVER_PATCHES.read_h5(p) for p in paths]
    for key in arrays:
        assert np.array_equal(np.concatenate([b[key] for b in back]), arrays[key])
    raw = [f"{key}-{i:05d}.raw" for key in ("hsi", "label", "rgb") for i in range(3)]
    assert sorted(os.listdir(tmp_path)) == sorted(raw + [os.path.basename(p) for p in paths])
    from rdd_io.landcover_patches import MODALITY_DTYPES, modality_parts
    for key, dtype in MODALITY_DTYPES.items():  # what each model-parallel worker reads for itself
        values = np.concatenate([np.fromfile(storage_path, dtype=np.dtype(dtype).newbyteorder("<"))
                                 for storage_path in modality_parts(str(tmp_path), key)])
        assert np.array_equal(values, np.asarray(arrays[key]).ravel()), key


def test_resize_nearest_aligns_integer_factors():
    img = np.arange(12).reshape(3, 4)
    up = resize_nearest(img, (6, 8))
    assert np.array_equal(up, np.repeat(np.repeat(img, 2, 0), 2, 1))
    assert np.array_equal(resize_nearest(up, (3, 4)), img)
    flat = resize(np.full((4, 4, 2), 3.0), (7, 5), "bilinear")
    assert flat.shape == (7, 5, 2) and np.allclose(flat, 3.0)


# -- bad input ----------------------------------------------------------------------------------
def test_band_count_mismatch_names_the_file(scene):
    data = scene_mod.tiff_bytes(scene["hsi"], 1.0)
    with pytest.raises(SchemaError, match=r"^hsi\.tif: has 48 bands, the config expects 50"):
        read_hsi(data, "hdfs://nn/dfc/hsi.tif", expected_bands=50)
    with pytest.raises(SchemaError, match=r"^hsi\.tif: has 48 bands, the config expects 50"):
        select_bands(scene["hsi"], list(range(11)), expected_bands=50, name="hsi.tif")
    with pytest.raises(SchemaError, match=r"hsi\.tif: band indices \[48\]"):
        select_bands(scene["hsi"], [0, 48], name="hsi.tif")


def test_unknown_class_value_names_file_value_and_first_pixel(scene):
    gt = scene["gt"].copy()
    gt[7, 11] = 23
    gt[150, 3] = 200
    with pytest.raises(SchemaError, match=r"^gt\.tif: unknown class value 23 at pixel "
                                          r"\(row 7, col 11\)"):
        read_gt(scene_mod.tiff_bytes(gt, 0.5), "file:///data/gt.tif")


def test_tiles_that_do_not_form_a_grid_are_named(scene):
    tiles = scene_mod.split_tiles(scene["rgb"], (4, 4))
    holed = {k: v for k, v in tiles.items() if k != (1, 2)}
    with pytest.raises(SchemaError, match=r"^tile_r1_c2\.tif: missing from the 4x4 tile grid"):
        merge_tiles(holed)
    files = {f"rgb/tile_r{r}_c{c}.tif": scene_mod.tiff_bytes(t, 0.125)
             for (r, c), t in holed.items()}
    with pytest.raises(SchemaError, match=r"tile_r1_c2\.tif: missing"):
        merge_tile_files(files)
    odd = dict(tiles)
    odd[(2, 3)] = tiles[(2, 3)][:-1]
    with pytest.raises(SchemaError, match=r"^tile_r2_c3\.tif: height 199 differs"):
        merge_tiles(odd)
    with pytest.raises(SchemaError, match=r"notes\.tif: not a tile name"):
        tile_position("rgb/notes.tif")


def test_truncated_or_wrong_files_are_named(scene_dir):
    out, _ = scene_dir
    gt_bytes = (out / "gt.tif").read_bytes()
    for cut in (len(gt_bytes) // 2, 100, 6):
        with pytest.raises(SchemaError, match=r"^gt\.tif: "):
            read_gt(gt_bytes[:cut], "gt.tif")
    with pytest.raises(SchemaError, match=r"^tile_r0_c0\.tif: RGB tile must be \[H, W, 3\]"):
        read_rgb_tile((out / "gt.tif").read_bytes(), "rgb/tile_r0_c0.tif")
    with pytest.raises(SchemaError, match=r"^nowhere\.tif: file not found"):
        read_gt(str(out / "nowhere.tif"))


@pytest.mark.skipif(importlib.util.find_spec("rasterio") is not None,
                    reason="rasterio is installed")
def test_other_formats_need_rasterio(tmp_path):
    (tmp_path / "hsi.hdr").write_text("ENVI\n")
    with pytest.raises(SchemaError, match=r"^hsi\.hdr: .*rasterio"):
        read_raster(tmp_path / "hsi.hdr")


def test_class_without_any_pixel_is_an_error():
    gt = np.ones((40, 40), dtype=np.uint8)
    with pytest.raises(SchemaError, match=r"gt\.tif: class 7 \(Water\) has no labelled pixel"):
        patch_centres(gt, 10, seed=0, classes=[1, 7], name="gt.tif")
