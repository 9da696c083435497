"""The DFC2018 products as downloaded (distributed names, UTM-named tiles, georeferencing): placed on the
ground, cut to the ground truth's extent, and a misregistered or short product named with its offset."""
import os
from pathlib import Path

import numpy as np
import pytest

from rdd_io import landcover_dfc2018 as dfc
from rdd_io import landcover_scene as scene_mod
from rdd_io.schema import SchemaError

pytestmark = pytest.mark.unit
SEED, SHAPE = 3, (120, 120)


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_downloaded_layout_reads_back_as_the_scene(tmp_path):
    facts = dfc.write_dfc2018(tmp_path, SEED, SHAPE)
    assert sorted(os.listdir(tmp_path)) == ["Final RGB HR Imagery", "GT", "HSI"]
    assert "UH_NAD83_271460_3290290.tif" in facts["rgb_tiles"]
    (tmp_path / "GT" / "2018_IEEE_GRSS_DFC_GT_TR.tif").rename(tmp_path / "GT" / "2018_IEEE_GRSS_DFC_GT_TR.tiff")
    rgb, hsi, gt, hsi_name = dfc.load(folder_bytes(tmp_path), expected_bands=48)
    scene = scene_mod.make_scene(SEED, SHAPE)
    assert np.array_equal(gt, scene["gt"]) and np.array_equal(rgb, scene["rgb"])
    assert np.array_equal(hsi, scene["hsi"]) and hsi_name.endswith("HSI/2018_IEEE_GRSS_DFC_HSI_TR")


def test_a_larger_hsi_is_cut_to_the_ground_truth_not_stretched(tmp_path):
    dfc.write_dfc2018(tmp_path, SEED, SHAPE)
    files = folder_bytes(tmp_path)
    header = next(k for k in files if k.endswith(".HDR"))
    data = header[:-4]
    hsi, place = dfc.read_envi(files[header], files[data], data)
    bigger = np.pad(hsi, ((3, 2), (5, 1), (0, 0)), constant_values=7.0)  # 5 m more on the west, 3 m north
    files[header], files[data] = dfc.envi_bytes(bigger, dfc.Place(place.x0 - 5, place.y0 + 3, 1.0, 1.0))
    _, cut, _, _ = dfc.load(files, expected_bands=48)
    assert np.array_equal(cut, hsi)


@pytest.mark.parametrize("offset, message", [
    ((0.4, 0.0), r"HSI/2018_IEEE_GRSS_DFC_HSI_TR: misregistered with the ground truth by \(-0\.400, \+0\.000\) m"),
    ((10.0, 0.0), r"HSI/2018_IEEE_GRSS_DFC_HSI_TR: does not cover the ground truth's extent: short by 10\.00 m "
                  r"on the west"),
])
def test_a_misregistered_or_shifted_hsi_is_named_with_its_offset(tmp_path, offset, message):
    dfc.write_dfc2018(tmp_path, SEED, SHAPE, hsi_offset_m=offset)
    with pytest.raises(SchemaError, match=message):
        dfc.load(folder_bytes(tmp_path), expected_bands=48)


def test_a_tile_off_its_grid_and_a_missing_product_are_named(tmp_path):
    dfc.write_dfc2018(tmp_path, SEED, SHAPE)
    files = folder_bytes(tmp_path)
    with pytest.raises(SchemaError, match="missing the ground truth 2018_IEEE_GRSS_DFC_GT_TR.tif"):
        dfc.load({k: v for k, v in files.items() if "GT_TR" not in k})
    name = next(k for k in files if k.endswith("UH_NAD83_271490_3290290.tif"))
    tile = scene_mod.split_tiles(scene_mod.make_scene(SEED, SHAPE)["rgb"], (2, 2))[(0, 1)]
    files[name] = scene_mod.tiff_bytes(tile, 0.125, (271491.0, 3290290.0))  # a metre east of where it belongs
    with pytest.raises(SchemaError, match=r"UH_NAD83_271490_3290290.tif: its name says corner \(271490, 3290290\), "
                                          r"its tie point \(271491.00, 3290290.00\)"):
        dfc.load(files)


def test_the_job_reads_a_downloaded_folder_and_names_a_misregistered_hsi(tmp_path):
    """jobs.landcover.read_scene with data.source dfc2018: only the products are read (other files lie there
    too), and a misregistered copy fails naming the file."""
    from types import SimpleNamespace

    from jobs.landcover import read_scene
    good, bad = tmp_path / "good", tmp_path / "bad"
    dfc.write_dfc2018(good, SEED, SHAPE)
    dfc.write_dfc2018(bad, SEED, SHAPE, hsi_offset_m=(0.0, 0.3))
    (good / "Lidar GeoTiff Rasters").mkdir()
    (good / "Lidar GeoTiff Rasters" / "UH17_GEG05_TR.tif").write_bytes(b"not read")
    job = SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(source="dfc2018", hsi_bands_in=48)))
    rgb, hsi, gt, name = read_scene(job, str(good))
    assert gt.shape == SHAPE and hsi.shape == (60, 60, 48) and rgb.shape == (480, 480, 3)
    with pytest.raises(SchemaError, match=r"bad/HSI/2018_IEEE_GRSS_DFC_HSI_TR: misregistered .* "
                                          r"\(\+0\.000, \+0\.300\) m"):
        read_scene(job, str(bad))
