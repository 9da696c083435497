"""The region file built from real-format inputs (rdd_io.domst_region): the simulator's files with
watershed outlines as GeoJSON polygons or as a mask raster give back the simulator's own watersheds;
inputs that cannot make a region are errors naming the file and the record."""
import json
import shutil

import numpy as np
import pytest

from rdd_io import domst_region as R
from rdd_io.domst_sim import (DISTANCE_FILE, OUTLINES_FILE, WATERSHEDS_FILE, geotiff_bytes, simulate_region,
                              usgs_rdb_text, write_region)
from rdd_io.schema import SchemaError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def region():
    return simulate_region(seed=5, years=1, n_watersheds=4, n_lat=16, n_lon=20, max_size=60)


@pytest.fixture
def folder(tmp_path, region):
    write_region(str(tmp_path), region)
    planted = json.loads((tmp_path / WATERSHEDS_FILE).read_text())
    (tmp_path / WATERSHEDS_FILE).unlink()
    return tmp_path, planted


def _same_watersheds(built: dict, planted: dict):
    assert built["grid"]["n_lat"] == planted["grid"]["n_lat"] and built["grid"]["n_lon"] == planted["grid"]["n_lon"]
    assert built["precip_file"] == planted["precip_file"] and built["distance_file"] == planted["distance_file"]
    got = {(w["id"], w["site_no"], w["discharge_file"]): w["pixels"] for w in built["watersheds"]}
    want = {(w["id"], w["site_no"], w["discharge_file"]): w["pixels"] for w in planted["watersheds"]}
    assert got == want


def test_geojson_outlines_give_the_simulators_watersheds(folder, capsys):
    path, planted = folder
    assert R.main([str(path)]) == 0
    _same_watersheds(json.loads((path / WATERSHEDS_FILE).read_text()), planted)
    assert "4 watersheds" in capsys.readouterr().out


def test_a_mask_raster_of_site_numbers_gives_the_same_watersheds(folder, region):
    path, planted = folder
    (path / OUTLINES_FILE).unlink()
    sites = np.array([int(s) for s in region["site_no"]] + [0])
    mask = np.where(region["label"] >= 0, sites[region["label"]], 0)
    (path / "outlines.tif").write_bytes(geotiff_bytes(region["lat"], region["lon"], mask, np.int32))
    _, meta, _ = R.build(str(path))
    ids = {w["site_no"]: w["id"] for w in meta["watersheds"]}
    assert ids == {s: f"W{k:02d}" for k, s in enumerate(sorted(region["site_no"]), 1)}  # no ids in a mask
    for w in meta["watersheds"]:
        assert w["pixels"] == next(p["pixels"] for p in planted["watersheds"] if p["site_no"] == w["site_no"])


def test_cells_without_distance_are_left_out_and_counted(folder, region):
    path, planted = folder
    w01 = planted["watersheds"][0]
    dist = region["distance_km"].copy().astype(float)
    dropped = w01["pixels"][0]
    dist.reshape(-1)[dropped] = np.nan
    (path / DISTANCE_FILE).write_bytes(geotiff_bytes(region["lat"], region["lon"], dist))
    _, meta, notes = R.build(str(path))
    assert meta["watersheds"][0]["pixels"] == w01["pixels"][1:]
    assert notes == ["watershed W01 (site %s): 1 cell(s) left out (no distance, or precipitation missing on some day)"
                     % w01["site_no"]]


def test_a_multi_site_rdb_file_is_an_error_saying_so(folder, region, capsys):
    path, planted = folder
    site0, site1 = region["site_no"][:2]
    two = usgs_rdb_text(site0, region["dates"][:5], np.ones(5)) + "".join(
        line + "\n" for line in usgs_rdb_text(site1, region["dates"][5:9], np.ones(4)).splitlines()
        if line.startswith("USGS"))
    (path / "discharge" / f"{site0}.rdb").write_text(two)
    assert R.main([str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{site0}.rdb: one site per file expected" in err and site1 in err
    assert not (path / WATERSHEDS_FILE).exists()


def test_outline_problems_name_the_feature(folder, region):
    path, _ = folder
    doc = json.loads((path / OUTLINES_FILE).read_text())
    doc["features"][2]["properties"]["site_no"] = "09999999"
    (path / OUTLINES_FILE).write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match=r"outlines.geojson: feature 2: no RDB file holds site 09999999"):
        R.build(str(path))
    doc["features"][2]["geometry"] = doc["features"][1]["geometry"]
    doc["features"][2]["properties"]["site_no"] = region["site_no"][2]
    (path / OUTLINES_FILE).write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match=r"is in watersheds W02 and W03; the watersheds must not overlap"):
        R.build(str(path))
    shutil.rmtree(path / "discharge")
    (path / "discharge").mkdir()
    with pytest.raises(SchemaError, match="no .rdb files"):
        R.build(str(path))


def test_point_in_polygon_with_a_hole_and_site_numbers():
    square = [[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]
    hole = [[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]
    lon, lat = np.array([0.5, 2.0, 3.5, 5.0]), np.array([0.5, 2.0, 3.5, 2.0])
    inside = R.geometry_mask({"type": "Polygon", "coordinates": [square, hole]}, lon, lat)
    assert inside.tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="Polygon or MultiPolygon"):
        R.geometry_mask({"type": "Point", "coordinates": [0, 0]}, lon, lat)
    assert R.site_text(5412000) == "05412000" and R.site_text("0541200012") == "0541200012"
    with pytest.raises(ValueError, match="not a USGS number"):
        R.site_text("05-41")
