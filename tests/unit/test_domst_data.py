"""Dom-ST data: the synthetic region, its real-format files and readers, bad input, and the metrics."""
from __future__ import annotations

from collections import deque

import netCDF4  # a hard dependency (setup.py): a broken install fails here instead of skipping
import numpy as np
import pytest

from models.domst_metrics import correlation, nse, peak_flow_error, share_best, share_better
from rdd_io import domst_read as rd
from rdd_io import domst_sim as sim
from rdd_io.schema import SchemaError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def region():
    return sim.simulate_region(seed=3, years=2)


@pytest.fixture(scope="module")
def written(region, tmp_path_factory):
    out = tmp_path_factory.mktemp("domst")
    sim.write_region(str(out), region)
    return out


def _months(dates):
    return dates.astype("datetime64[M]").astype(int) % 12 + 1


# -- the simulator ---------------------------------------------------------------------------------
def test_simulator_is_deterministic_by_seed():
    a, b, c = (sim.simulate_region(seed=s, years=1) for s in (5, 5, 6))
    for key in ("precip", "discharge_m3s", "label", "distance_km"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["label"], c["label"])
    assert not np.allclose(np.nan_to_num(a["precip"]), np.nan_to_num(c["precip"]))


def test_shapes_and_units(region):
    T = 731  # 2000 is a leap year
    assert region["dates"].dtype == np.dtype("datetime64[D]") and region["dates"].shape == (T,)
    assert region["precip"].shape == (T, 40, 50)
    assert region["discharge_m3s"].shape == (23, T)
    assert region["distance_km"].shape == region["label"].shape == (40, 50)
    assert 1700 <= region["land"].sum() <= 2100
    assert len(set(region["site_no"])) == 23


def test_precipitation_nonnegative_seasonal_with_dry_spells(region):
    pre, land = region["precip"], region["land"]
    assert np.isnan(pre[:, ~land]).all() and np.nanmin(pre) >= 0
    month = _months(region["dates"])
    summer = np.nanmean(pre[np.isin(month, [6, 7, 8])])
    winter = np.nanmean(pre[np.isin(month, [12, 1, 2])])
    assert summer > 1.5 * winter
    assert 400 < np.nanmean(pre) * 365 < 1500  # mm/year, mid-west-like
    dry = np.nanmean(pre, axis=(1, 2)) < 0.1
    longest, run = 0, 0
    for d in dry:
        run = run + 1 if d else 0
        longest = max(longest, run)
    assert longest >= 5


def test_precipitation_is_spatially_correlated(region):
    pre = region["precip"]
    rng = np.random.default_rng(0)

    def mean_corr(dj):
        rs = []
        for _ in range(40):
            i, j = rng.integers(5, 35), rng.integers(5, 45 - dj)
            rs.append(np.corrcoef(pre[:, i, j], pre[:, i, j + dj])[0, 1])
        return np.mean(rs)

    near, far = mean_corr(1), mean_corr(30)
    assert near > 0.8 and far < near - 0.2


def _connected(mask, start):
    seen, todo = {start}, deque([start])
    while todo:
        i, j = todo.popleft()
        for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and (a, b) not in seen:
                seen.add((a, b))
                todo.append((a, b))
    return len(seen) == mask.sum()


def test_watersheds_disjoint_nonempty_connected_and_varied(region):
    label = region["label"]
    sizes = np.bincount(label[label >= 0], minlength=23)
    assert sizes.size == 23 and sizes.min() >= 1
    assert sizes.min() <= 20 and sizes.max() >= 100
    assert not (label[~region["land"]] >= 0).any()
    for w, (i, j) in enumerate(region["outlets"]):
        assert label[i, j] == w
        assert region["truth"]["flow_km"][i, j] == 0
        assert _connected(label == w, (int(i), int(j)))


def test_runoff_coefficients_correlate_with_distance_but_are_not_a_function_of_it(region):
    inside = region["label"] >= 0
    c = correlation(region["distance_km"][inside], region["truth"]["runoff_coef"][inside])
    assert -0.95 < c["pearson"] < -0.3 and -0.95 < c["spearman"] < -0.3


def test_discharge_lags_precipitation_more_for_longer_flow_paths(region):
    label, flow = region["label"], region["truth"]["flow_km"]
    mean_flow = [np.nanmean(flow[label == w]) for w in range(23)]

    def peak_lag(w):
        p = np.nanmean(region["precip"][:, label == w], axis=1)
        q = region["discharge_m3s"][w]
        xc = []
        for lag in range(20):
            ok = np.isfinite(q[lag:])
            xc.append(np.corrcoef(p[:len(p) - lag][ok], q[lag:][ok])[0, 1])
        return int(np.argmax(xc))

    short, long_ = peak_lag(int(np.argmin(mean_flow))), peak_lag(int(np.argmax(mean_flow)))
    assert long_ >= 1 and long_ > short


def test_routing_conserves_water():
    rng = np.random.default_rng(1)
    quick = rng.exponential(5.0, (200, 6)) * (rng.random((200, 6)) < 0.3)
    recharge = rng.exponential(1.0, (200, 6))
    lags = np.array([0.6, 1.0, 2.5, 4.0, 8.0, 15.0])
    out = sim.route(quick, recharge, lags, k_base=0.05, horizon=3000, s0=40.0)
    assert out.sum() == pytest.approx(quick.sum() + recharge.sum() + 40.0, rel=1e-9)
    h = sim.gamma_unit_hydrograph(lags)
    np.testing.assert_allclose(h.sum(axis=0), 1.0)
    assert np.all(np.diff((h * np.arange(h.shape[0])[:, None]).sum(axis=0)) > 0)  # later with distance


def test_missing_discharge_rate_is_configurable():
    none = sim.simulate_region(seed=2, years=1, missing_rate=0.0)
    some = sim.simulate_region(seed=2, years=1, missing_rate=0.05)
    assert not np.isnan(none["discharge_m3s"]).any()
    assert 0.02 < np.isnan(some["discharge_m3s"]).mean() < 0.08


# -- real-format files round-trip -------------------------------------------------------------------
def test_netcdf_round_trip_from_path_and_bytes(region, written):
    path = written / sim.PRECIP_FILE
    for source in (str(path), path.read_bytes()):
        dates, lat, lon, pre = rd.read_cru_precip(source, "pre.nc")
        np.testing.assert_array_equal(dates, region["dates"])
        np.testing.assert_allclose(lat, region["lat"], atol=1e-5)
        np.testing.assert_allclose(lon, region["lon"], atol=1e-5)
        np.testing.assert_array_equal(pre, region["precip"])  # float32 both ways, NaN where no land


def test_usgs_rdb_round_trip_in_cfs(region, written):
    meta = rd.read_watersheds(str(written / sim.WATERSHEDS_FILE))
    for w in (0, 7, 22):
        shed = meta["watersheds"][w]
        site, dates, q_cfs, codes = rd.read_usgs_rdb((written / shed["discharge_file"]).read_bytes(),
                                                     shed["discharge_file"], with_codes=True)
        expected = region["discharge_m3s"][w]
        n = dates.size
        assert site == region["site_no"][w] and dates[0] == region["dates"][0]
        np.testing.assert_array_equal(np.isnan(q_cfs), np.isnan(expected[:n]))
        np.testing.assert_allclose(q_cfs * rd.M3S_PER_CFS, expected[:n], rtol=1e-6)  # 7 significant digits
        assert set(codes[np.isnan(q_cfs)]) <= {"", "P"} and set(codes[~np.isnan(q_cfs)]) == {"A"}


def test_distance_and_watersheds_round_trip(region, written):
    lat, lon, dist = rd.read_distance(str(written / sim.DISTANCE_FILE))
    np.testing.assert_allclose(lat, region["lat"], atol=1e-9)
    np.testing.assert_allclose(lon, region["lon"], atol=1e-9)
    np.testing.assert_array_equal(dist, region["distance_km"].astype(float))
    meta = rd.read_watersheds((written / sim.WATERSHEDS_FILE).read_bytes(), "watersheds.json")
    for w, shed in enumerate(meta["watersheds"]):
        np.testing.assert_array_equal(shed["pixels"], np.flatnonzero(region["label"].ravel() == w))
        assert tuple(shed["outlet"]) == tuple(region["outlets"][w])
    assert "runoff_coef" not in (written / sim.WATERSHEDS_FILE).read_text()
    with np.load(written / sim.TRUTH_FILE, allow_pickle=False) as truth:
        np.testing.assert_array_equal(truth["runoff_coef"], region["truth"]["runoff_coef"])


# -- alignment, windows, split -----------------------------------------------------------------------
def test_align_masks_and_counts_missing_days_and_windows_follow(region):
    w = 4
    pixels = np.flatnonzero(region["label"].ravel() == w)
    a = rd.align(region["dates"], region["precip"], pixels, region["dates"][10:], region["discharge_m3s"][w, 10:],
                 watershed="W05")
    q = region["discharge_m3s"][w, 10:]
    assert a.dates[0] == region["dates"][10] and a.precip.shape == (q.size, pixels.size)
    assert a.n_missing == int(np.isnan(q).sum()) > 0
    np.testing.assert_array_equal(a.valid, np.isfinite(q))
    X, p_target, y, mask = rd.windows(a.precip, a.discharge, 7, a.valid)
    assert X.shape == (q.size - 7, 7, pixels.size) and p_target.shape == (q.size - 7, pixels.size)
    np.testing.assert_array_equal(X[5, 3], a.precip[8])
    np.testing.assert_array_equal(p_target[5], a.precip[12])
    assert mask.sum() == np.isfinite(q[7:]).sum() and np.isnan(y[~mask]).all()
    train, val, test = rd.split_by_time(len(y))
    assert (train.start, train.stop, val.stop, test.stop) == (0, round(0.6 * len(y)), val.stop, len(y))
    assert train.stop == val.start and val.stop == test.start < test.stop


def test_dates_that_do_not_line_up_name_both_files(region):
    dates, pre = region["dates"], region["precip"]
    q = region["discharge_m3s"][0]
    later = dates + 3650
    with pytest.raises(SchemaError, match=r"pre\.nc.*05412000\.rdb.*first mismatching date " + str(later[0])):
        rd.align(dates, pre, [100], later, q, watershed="W01", precip_name="pre.nc",
                 discharge_name="05412000.rdb")
    gappy = np.delete(dates, 40)
    with pytest.raises(SchemaError, match=r"pre\.nc: time axis.*first mismatching date " + str(dates[40])):
        rd.align(gappy, np.delete(pre, 40, axis=0), [100], dates, q, watershed="W01", precip_name="pre.nc")


def test_watershed_without_pixels_and_fill_inside_watershed_are_errors(region):
    dates, pre, q = region["dates"], region["precip"], region["discharge_m3s"][0]
    with pytest.raises(SchemaError, match="watershed W09: no pixels"):
        rd.align(dates, pre, [], dates, q, watershed="W09")
    sea = int(np.flatnonzero(~region["land"].ravel())[0])
    with pytest.raises(SchemaError, match=r"pre\.nc: fill value.*watershed W02"):
        rd.align(dates, pre, [sea], dates, q, watershed="W02", precip_name="pre.nc")


def test_negative_precipitation_names_file_date_and_pixel(region):
    pre = region["precip"][:20].copy()
    pre[3, 12, 30] = -2.5
    data = sim.cru_netcdf_bytes(region["dates"][:20], region["lat"], region["lon"], pre)
    lat = f"{region['lat'][12]:.4f}"
    with pytest.raises(SchemaError, match=rf"bad\.nc: negative precipitation -2\.5 .* on 2000-01-04 .*lat {lat}"):
        rd.read_cru_precip(data, "bad.nc")


def test_malformed_rdb_lines_name_file_and_line(region):
    text = sim.usgs_rdb_text("05412000", region["dates"][:30], region["discharge_m3s"][0, :30])
    lines = text.splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("USGS")) + 4
    broken = lines.copy()
    broken[k] = broken[k].rsplit("\t", 1)[0]
    with pytest.raises(SchemaError, match=rf"site\.rdb: line {k + 1}: 4 tab-separated fields, expected 5"):
        rd.read_usgs_rdb("\n".join(broken).encode(), "site.rdb")
    broken = lines.copy()
    broken[k] = "\t".join(broken[k].split("\t")[:3] + ["12,5", "A"])
    with pytest.raises(SchemaError, match=rf"site\.rdb: line {k + 1}: discharge '12,5'"):
        rd.read_usgs_rdb("\n".join(broken).encode(), "site.rdb")


# -- metrics -----------------------------------------------------------------------------------------
def test_nse_hand_computed():
    obs = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    assert nse(obs, obs) == 1.0
    assert nse(np.full(5, obs.mean()), obs) == pytest.approx(0.0)
    # pairs 2 and 3 dropped: obs (1, 2, 5), sim (2, 2, 4): 1 - 2 / (78/9) = 60/78
    assert nse([2, 2, np.nan, 4, 4], [1, 2, 3, np.nan, 5]) == pytest.approx(60 / 78)
    with pytest.raises(ValueError, match="constant"):
        nse([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="1 valid"):
        nse([1.0, np.nan], [1.0, 2.0])


def test_peak_flow_error_share_and_correlation():
    obs = np.arange(1.0, 21.0)           # top 5% of 20 days: the single day with 20
    sim_ = obs.copy()
    sim_[-1] = 15.0
    assert peak_flow_error(sim_, obs) == pytest.approx(0.25)
    assert peak_flow_error(sim_, obs, top=0.1, signed=True) == pytest.approx(-5 / 39)
    a, b, c = np.array([0.9, 0.5, 0.7, np.nan]), np.array([0.8, 0.6, 0.7, 0.1]), np.array([0.1, 0.1, 0.9, 0.1])
    assert share_better(a, b) == pytest.approx(1 / 3)
    assert share_best(a, b, c) == pytest.approx(1 / 3)
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    r = correlation(x, np.exp(x))
    assert r["spearman"] == pytest.approx(1.0) and r["pearson"] < 0.95 and r["n"] == 5
    assert correlation([1, 2, 2, 3], [1, 3, 2, 4])["spearman"] == pytest.approx(0.9486833, rel=1e-6)


def _netcdf(path, lat, units="mm/day", var="pre"):
    with netCDF4.Dataset(path, "w") as ds:
        for dim, size in (("time", 3), ("lat", len(lat)), ("lon", 2)):
            ds.createDimension(dim, size)
        ds.createVariable("lat", "f4", ("lat",))[:] = lat
        ds.createVariable("lon", "f4", ("lon",))[:] = [-93.0, -92.9]
        t = ds.createVariable("time", "f4", ("time",))
        t.units, t[:] = "days since 2001-3-1", [0, 1, 2]
        v = ds.createVariable(var, "f4", ("time", "lat", "lon"), fill_value=np.float32(9.96921e36))
        v.units = units
        v[:] = np.arange(3 * len(lat) * 2, dtype=np.float32).reshape(3, len(lat), 2)
        v[1, 0, 1] = np.ma.masked


def test_netcdf_layout_checks_fill_and_descending_latitude(tmp_path):
    good = tmp_path / "desc.nc"
    _netcdf(good, [42.0, 41.9])
    dates, lat, lon, pre = rd.read_cru_precip(str(good))
    assert str(dates[0]) == "2001-03-01" and list(lat) == sorted(lat)
    assert np.isnan(pre[1, 1, 1]) and pre[0, 0, 0] == 2.0  # rows flipped to ascending latitude
    _netcdf(tmp_path / "monthly.nc", [41.9, 42.0], units="mm/month")
    with pytest.raises(SchemaError, match=r"monthly\.nc: .*monthly CRU TS"):
        rd.read_cru_precip(str(tmp_path / "monthly.nc"))
    _netcdf(tmp_path / "tmp.nc", [41.9, 42.0], var="tmp")
    with pytest.raises(SchemaError, match=r"tmp\.nc: variable 'pre' missing"):
        rd.read_cru_precip(str(tmp_path / "tmp.nc"))
