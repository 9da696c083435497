"""A seedable synthetic region for the Dom-ST hydrology case study, and a writer of its real-format files.

The region mimics the paper's setting: a mid-west box at 5 arc-minutes (40 x 50 cells, ~1,900 land
pixels), 23 watersheds grown from outlet seeds, daily precipitation with a seasonal cycle, moving storms
and dry spells, the distance of each pixel to the nearest water source, and daily discharge at each
outlet from a routing model. Grid arrays are indexed [lat, lon] with latitude ascending (CRU order);
pixel index p = i_lat * n_lon + i_lon.

Routing, per watershed and pixel p (all water volumes in m3):
    quick_p(t)    = c_p * max(P_p(t) - loss, 0) * area_p     (c_p: the planted runoff coefficient)
    recharge_p(t) = base_frac * (P_p(t) * area_p - quick_p(t))
    quick flow reaches the outlet through a gamma unit hydrograph whose mean lag grows with the pixel's
    flow distance (lag_p = 0.5 + flow_km_p / velocity days); recharge feeds one linear reservoir
    (outflow k_base * S per day) that gives baseflow; observed Q = (quick + base) * lognormal noise.
The planted coefficients correlate with the distance to water (wet near-channel cells) without being a
function of it, so the pixel-contribution block has something to discover.
"""
from __future__ import annotations

import heapq
import io
import json
import os
import tempfile

import numpy as np

RES_DEG = 1.0 / 12.0            # 5 arc-minutes
KM_PER_DEG = 111.32
CFS_PER_M3S = 1.0 / 0.028316846592   # 1 ft3 = 0.028316846592 m3 exactly
CRU_FILL = np.float32(9.96921e36)    # CRU TS _FillValue
NODATA = -9999.0                     # distance raster nodata (GDAL_NODATA tag)


def grid_axes(n_lat: int = 40, n_lon: int = 50, lat0: float = 40.5, lon0: float = -96.5):
    """Cell-centre latitudes (ascending) and longitudes at 5 arc-minutes."""
    lat = lat0 + RES_DEG * (np.arange(n_lat) + 0.5)
    lon = lon0 + RES_DEG * (np.arange(n_lon) + 0.5)
    return lat, lon


def _land_mask(rng, n_lat, n_lon):
    """A box with wavy river borders on the west and east (like a state between two rivers)."""
    i = np.arange(n_lat)
    west = np.round(1.5 + 1.2 * np.sin(i / 5.0 + rng.uniform(0, 6))).astype(int)
    east = n_lon - np.round(1.5 + 1.2 * np.sin(i / 4.0 + rng.uniform(0, 6))).astype(int)
    j = np.arange(n_lon)[None, :]
    return (j >= west[:, None]) & (j < east[:, None])


def _neighbours(i, j, n_lat, n_lon, diag=False):
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if diag else [])
    for di, dj in steps:
        a, b = i + di, j + dj
        if 0 <= a < n_lat and 0 <= b < n_lon:
            yield a, b


def _grow_watersheds(rng, land, n_ws, min_size, max_size, fill_frac):
    """Label grid (-1 = none): outlets spread apart, each grows by random accretion towards a log-uniform
    target size; the watershed furthest below its target grows next, so crowding ends some early."""
    n_lat, n_lon = land.shape
    cells = np.argwhere(land)
    if not 1 <= n_ws <= len(cells):
        raise ValueError(f"n_watersheds={n_ws} must be between 1 and the {len(cells)} land pixels")
    outlets: list[tuple[int, int]] = []
    min_sep = 5.0
    while len(outlets) < n_ws:
        for _ in range(2000):
            c = tuple(int(v) for v in cells[rng.integers(len(cells))])
            if all(np.hypot(c[0] - o[0], c[1] - o[1]) >= min_sep for o in outlets):
                outlets.append(c)
                break
        else:
            min_sep *= 0.8  # crowded grid: relax the spacing rather than fail
    targets = np.exp(rng.uniform(np.log(min_size), np.log(max_size), n_ws))
    targets *= min(1.0, fill_frac * land.sum() / targets.sum())
    targets = np.maximum(np.round(targets).astype(int), 1)
    label = np.full(land.shape, -1, int)
    frontier: list[list] = []
    for w, (i, j) in enumerate(outlets):
        label[i, j] = w
        frontier.append(list(_neighbours(i, j, n_lat, n_lon)))
    size = np.ones(n_ws, int)
    heap = [(1.0 / targets[w], w) for w in range(n_ws)]
    heapq.heapify(heap)
    while heap:
        _, w = heapq.heappop(heap)
        added = False
        while frontier[w] and not added:
            k = int(rng.integers(len(frontier[w])))
            frontier[w][k], frontier[w][-1] = frontier[w][-1], frontier[w][k]
            i, j = frontier[w].pop()
            if land[i, j] and label[i, j] < 0:
                label[i, j] = w
                size[w] += 1
                frontier[w].extend(_neighbours(i, j, n_lat, n_lon))
                added = True
        if added and size[w] < targets[w]:
            heapq.heappush(heap, (size[w] / targets[w], w))
    return label, outlets


def _flow_tree(label, w, outlet, step_km):
    """Dijkstra inside the watershed from its outlet (8-neighbour steps): flow distance in km and the
    number of cells draining through each cell (flow accumulation)."""
    n_lat, n_lon = label.shape
    dist = np.full(label.shape, np.inf)
    parent = {outlet: None}
    dist[outlet] = 0.0
    heap, order = [(0.0, outlet)], []
    while heap:
        d, (i, j) = heapq.heappop(heap)
        if d > dist[i, j]:
            continue
        order.append((i, j))
        for a, b in _neighbours(i, j, n_lat, n_lon, diag=True):
            if label[a, b] == w:
                nd = d + np.hypot((a - i) * step_km[0][i], (b - j) * step_km[1][i])
                if nd < dist[a, b]:
                    dist[a, b] = nd
                    parent[(a, b)] = (i, j)
                    heapq.heappush(heap, (nd, (a, b)))
    acc = np.zeros(label.shape, int)
    for cell in reversed(order):  # leaves first
        acc[cell] += 1
        if parent[cell] is not None:
            acc[parent[cell]] += acc[cell]
    return dist, acc


def _smooth_noise(rng, shape, passes=6):
    z = rng.standard_normal(shape)
    for _ in range(passes):  # cheap separable box blur, edges wrap (only texture is needed)
        z = (z + np.roll(z, 1, 0) + np.roll(z, -1, 0)) / 3.0
        z = (z + np.roll(z, 1, 1) + np.roll(z, -1, 1)) / 3.0
    return (z - z.mean()) / z.std()


def _precipitation(rng, dates, land, clim, storm_rate, storm_mm):
    """Daily fields [T, lat, lon] in mm/day: Gaussian storms drifting east, a seasonal cycle in storm
    rate and depth (peak in June), and a two-state wet/dry regime that makes dry spells."""
    n_lat, n_lon = land.shape
    ii, jj = np.mgrid[0:n_lat, 0:n_lon].astype(float)
    doy = (dates - dates.astype("datetime64[Y]")).astype(int)
    season = np.cos(2 * np.pi * (doy - 165) / 365.25)
    out = np.zeros((len(dates), n_lat, n_lon), np.float32)
    storms: list[list[float]] = []  # [i, j, di, dj, sigma, depth, days_left]
    dry = False
    for t in range(len(dates)):
        dry = rng.random() < (0.88 if dry else 0.04)
        rate = storm_rate * (1 + 0.4 * season[t]) * (0.03 if dry else 1.0)
        for _ in range(rng.poisson(rate)):
            storms.append([rng.uniform(-10, n_lat + 10), rng.uniform(-15, n_lon), rng.normal(0.5, 1.0),
                           rng.normal(3.0, 1.0), rng.uniform(2.5, 8.0),
                           rng.exponential(storm_mm * (1 + 0.35 * season[t])), int(rng.integers(1, 4))])
        field = np.zeros((n_lat, n_lon))
        for s in storms:
            field += s[5] * np.exp(-((ii - s[0]) ** 2 + (jj - s[1]) ** 2) / (2 * s[4] ** 2))
            s[0] += s[2]  # the storm moves,
            s[1] += s[3]
            s[5] *= 0.6  # weakens
            s[6] -= 1  # and ages
        storms = [s for s in storms if s[6] > 0]
        field *= clim * rng.lognormal(-0.02, 0.2, field.shape)
        field[field < 0.1] = 0.0  # traces count as dry
        out[t] = field
    out[:, ~land] = np.nan
    return out


def gamma_unit_hydrograph(lag_days: np.ndarray, length: int = 60, shape: float = 3.0) -> np.ndarray:
    """[length, P] daily weights, one column per pixel, mean lag ~lag_days, each column sums to 1."""
    t = np.arange(length, dtype=float)[:, None] + 0.5
    scale = np.asarray(lag_days, float)[None, :] / shape
    h = t ** (shape - 1) * np.exp(-t / scale)
    return h / h.sum(axis=0, keepdims=True)


def route(quick_m3: np.ndarray, recharge_m3: np.ndarray, lag_days: np.ndarray, k_base: float,
          horizon: int | None = None, s0: float = 0.0) -> np.ndarray:
    """Outlet discharge in m3/day over `horizon` days (default T) from per-pixel quick flow and recharge
    [T, P]. Water is conserved: with a long enough horizon, sum(out) = sum(in) + s0."""
    T = quick_m3.shape[0]
    horizon = T if horizon is None else horizon
    h = gamma_unit_hydrograph(lag_days)
    q = np.zeros(horizon + h.shape[0])
    for d in range(h.shape[0]):
        q[d:d + T] += quick_m3 @ h[d]
    recharge = np.zeros(horizon)
    n = min(T, horizon)
    recharge[:n] = recharge_m3[:n].sum(axis=1)
    s = s0
    for t in range(horizon):  # linear reservoir: the outflow leaves before today's recharge arrives
        out = k_base * s
        q[t] += out
        s += recharge[t] - out
    return q[:horizon]


def simulate_region(seed: int = 0, years: int = 6, n_watersheds: int = 23, start_year: int = 2000,
                    n_lat: int = 40, n_lon: int = 50, min_size: int = 4, max_size: int = 320,
                    fill_frac: float = 0.8, storm_rate: float = 1.3, storm_mm: float = 30.0,
                    loss_mm: float = 1.0, noise: float = 0.05, missing_rate: float = 0.01) -> dict:
    """The region as a dict of numpy arrays plus metadata (see the module docstring)."""
    rng = np.random.default_rng(seed)
    lat, lon = grid_axes(n_lat, n_lon)
    dates = np.arange(np.datetime64(f"{start_year}-01-01"), np.datetime64(f"{start_year + years}-01-01"))
    land = _land_mask(rng, n_lat, n_lon)
    km_ns = np.full(n_lat, RES_DEG * KM_PER_DEG)
    km_ew = RES_DEG * KM_PER_DEG * np.cos(np.radians(lat))
    area_km2 = (km_ns * km_ew)[:, None] * np.ones((1, n_lon))
    label, outlets = _grow_watersheds(rng, land, n_watersheds, min_size, max_size, fill_frac)

    flow_km = np.full(land.shape, np.nan)
    water = np.zeros(land.shape, bool)
    for w, o in enumerate(outlets):
        dist, acc = _flow_tree(label, w, o, (km_ns, km_ew))
        inside = label == w
        flow_km[inside] = 1.3 * dist[inside]          # channels meander
        water |= inside & (acc >= 6)                   # the river network of this watershed
        water[o] = True
    for _ in range(6):                                 # lakes and ponds anywhere on land
        cells = np.argwhere(land)
        water[tuple(cells[rng.integers(len(cells))])] = True
    ii, jj = np.mgrid[0:n_lat, 0:n_lon]
    y_km, x_km = ii * km_ns[0], jj * km_ew.mean()
    wi, wj = np.nonzero(water)
    dist_water = np.sqrt((y_km[..., None] - y_km[wi, wj]) ** 2 + (x_km[..., None] - x_km[wi, wj]) ** 2).min(-1)
    dist_water[~land] = np.nan

    # Per-watershed character: steep (fast routing, more runoff) or flat; wet or dry climate.
    steep = rng.uniform(0, 1, n_watersheds)
    velocity = 8.0 + 20.0 * steep                      # km/day, channel and hillslope together
    base_frac = rng.uniform(0.1, 0.3, n_watersheds)
    k_base = 1.0 / rng.uniform(25, 80, n_watersheds)
    clim = np.clip(0.8 + 0.4 * jj / n_lon + 0.1 * _smooth_noise(rng, land.shape), 0.5, 1.5)
    texture = _smooth_noise(rng, land.shape, passes=3)
    ws_offset = np.where(label >= 0, (steep - 0.5)[label], 0.0)
    logit = -1.6 + 2.2 * np.exp(-dist_water / 12.0) + 0.6 * ws_offset + 0.5 * texture
    coef = np.where(land, 1.0 / (1.0 + np.exp(-logit)), np.nan)

    pre = _precipitation(rng, dates, land, clim, storm_rate, storm_mm)
    T = len(dates)
    q_true = np.zeros((n_watersheds, T))
    lag_days = np.full(land.shape, np.nan)
    for w in range(n_watersheds):
        inside = label == w
        p = pre[:, inside].astype(float)
        area_m2 = area_km2[inside] * 1e6
        quick = coef[inside] * np.maximum(p - loss_mm, 0.0) * area_m2 / 1000.0
        recharge = base_frac[w] * (p * area_m2 / 1000.0 - quick)
        lag_days[inside] = 0.5 + flow_km[inside] / velocity[w]
        s0 = recharge.sum(axis=1).mean() / k_base[w]  # start the reservoir at its long-run level
        q_true[w] = route(quick, recharge, lag_days[inside], k_base[w], s0=s0) / 86400.0
    q_obs = q_true * rng.lognormal(-noise ** 2 / 2, noise, q_true.shape)
    q_obs[rng.random(q_obs.shape) < missing_rate] = np.nan
    return {
        "seed": seed, "dates": dates, "lat": lat, "lon": lon, "land": land,
        "precip": pre, "distance_km": dist_water.astype(np.float32), "label": label,
        "outlets": np.array(outlets, int), "site_no": [f"05{412000 + 317 * w:06d}" for w in range(n_watersheds)],
        "discharge_m3s": q_obs, "discharge_true_m3s": q_true,
        "truth": {"runoff_coef": coef, "flow_km": flow_km, "lag_days": lag_days, "velocity_kmd": velocity,
                  "base_frac": base_frac, "k_base": k_base, "steepness": steep, "climate": clim,
                  "water": water, "loss_mm": np.float64(loss_mm)},
    }


# -- real-format files ---------------------------------------------------------------------------
PRECIP_FILE = "precip/cru_ts_layout_pre_daily.nc"
DISTANCE_FILE = "distance_to_water.tif"
WATERSHEDS_FILE = "watersheds.json"
TRUTH_FILE = "truth.npz"
OUTLINES_FILE = "outlines.geojson"


def cru_netcdf_bytes(dates, lat, lon, pre) -> bytes:
    """NetCDF4 in the CRU TS layout (dims time/lat/lon, variable `pre`, days since 1900-1-1, the CRU
    fill value). CRU TS itself is monthly (mm/month); here the time axis is daily and units are mm/day."""
    import netCDF4
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pre.nc")
        with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
            ds.Conventions = "CF-1.4"
            ds.title = "Daily precipitation in the CRU TS layout (synthetic Dom-ST region)"
            ds.comment = "CRU TS is monthly in mm/month; this file keeps its layout with a daily time axis"
            for dim, size in (("lon", len(lon)), ("lat", len(lat)), ("time", None)):
                ds.createDimension(dim, size)
            for name, values, units in (("lon", lon, "degrees_east"), ("lat", lat, "degrees_north")):
                v = ds.createVariable(name, "f4", (name,))
                v.units, v.long_name = units, {"lon": "longitude", "lat": "latitude"}[name]
                v[:] = values
            t = ds.createVariable("time", "f4", ("time",))
            t.units, t.calendar, t.long_name = "days since 1900-1-1", "gregorian", "time"
            t[:] = (np.asarray(dates, "datetime64[D]") - np.datetime64("1900-01-01")).astype(float)
            v = ds.createVariable("pre", "f4", ("time", "lat", "lon"), zlib=True, complevel=4,
                                  fill_value=CRU_FILL)
            v.long_name, v.units, v.missing_value = "precipitation", "mm/day", CRU_FILL
            v[:] = np.ma.masked_invalid(np.asarray(pre, np.float32))
        with open(path, "rb") as fh:
            return fh.read()


def usgs_rdb_text(site_no: str, dates, q_m3s, ts_code: str = "149018") -> str:
    """A USGS NWIS daily-values RDB file (discharge in ft3/s). Missing days alternate between an absent
    row and a row whose value is the 'Eqp' code, the two ways NWIS shows them."""
    col = f"{ts_code}_00060_00003"
    lines = ["# ---------------------------------- WARNING ----------------------------------------",
             "# Provisional data are subject to revision.",
             f"# Data provided for site {site_no}",
             "#            TS   parameter     statistic     Description",
             f"#        {ts_code}       00060     00003     Discharge, cubic feet per second (Mean)",
             "#", "# Data-value qualification codes included in this output:",
             "#     A  Approved for publication -- Processing and review completed.",
             "#     P  Provisional data subject to revision.", "#",
             "\t".join(["agency_cd", "site_no", "datetime", col, col + "_cd"]),
             "\t".join(["5s", "15s", "20d", "14n", "10s"])]
    n_missing = 0
    for d, q in zip(np.asarray(dates, "datetime64[D]"), q_m3s):
        if not np.isfinite(q):
            n_missing += 1
            if n_missing % 2:
                continue
            value, code = "Eqp", "P"
        else:
            value, code = f"{q * CFS_PER_M3S:.7g}", "A"
        lines.append("\t".join(["USGS", site_no, str(d), value, code]))
    return "\n".join(lines) + "\n"


def geotiff_bytes(lat, lon, raster, dtype=np.float32) -> bytes:
    """A GeoTIFF (float32 unless asked), north-up (rows from north to south), WGS84, nodata -9999
    (GDAL_NODATA)."""
    import tifffile
    res = float(lat[1] - lat[0])
    north_up = np.where(np.isfinite(raster), raster, NODATA).astype(dtype)[::-1]
    geokeys = (1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326)
    buf = io.BytesIO()
    tifffile.imwrite(buf, north_up, extratags=[
        (33550, "d", 3, (res, res, 0.0), True),                                   # ModelPixelScale
        (33922, "d", 6, (0.0, 0.0, 0.0, lon[0] - res / 2, lat[-1] + res / 2, 0.0), True),  # tiepoint
        (34735, "H", len(geokeys), geokeys, True),                                 # GeoKeyDirectory
        (42113, "s", 0, f"{NODATA:g}", True)])                                     # GDAL_NODATA
    return buf.getvalue()


def outlines_geojson(region: dict) -> str:
    """The watersheds' outlines as GeoJSON (one MultiPolygon of grid-cell squares per watershed, lon/lat,
    properties site_no and id), the form rdd_io.domst_region reads."""
    lat, lon, half = region["lat"], region["lon"], RES_DEG / 2
    features = []
    for w, site in enumerate(region["site_no"]):
        cells = np.argwhere(region["label"] == w)
        squares = [[[[lon[j] - half, lat[i] - half], [lon[j] + half, lat[i] - half], [lon[j] + half, lat[i] + half],
                      [lon[j] - half, lat[i] + half], [lon[j] - half, lat[i] - half]]] for i, j in cells]
        features.append({"type": "Feature", "properties": {"site_no": site, "id": f"W{w + 1:02d}"},
                         "geometry": {"type": "MultiPolygon",
                                      "coordinates": np.round(np.asarray(squares, float), 6).tolist()}})
    return json.dumps({"type": "FeatureCollection", "features": features})


def write_region(out_dir: str, region: dict) -> dict:
    """Write the region's real-format files under `out_dir` (path or URI), each atomically; returns the
    URIs by role. The planted truth goes to truth.npz, apart from the model inputs."""
    from rdd_io import storage
    base = storage.to_uri(out_dir)
    n_lat, n_lon = region["land"].shape
    files = {"precip": storage.join(base, PRECIP_FILE), "distance": storage.join(base, DISTANCE_FILE),
             "watersheds": storage.join(base, WATERSHEDS_FILE), "truth": storage.join(base, TRUTH_FILE),
             "discharge": {}}
    storage.write_bytes(files["precip"], cru_netcdf_bytes(region["dates"], region["lat"], region["lon"],
                                                          region["precip"]))
    storage.write_bytes(files["distance"], geotiff_bytes(region["lat"], region["lon"], region["distance_km"]))
    sheds = []
    for w, site in enumerate(region["site_no"]):
        rel = f"discharge/{site}.rdb"
        files["discharge"][site] = storage.join(base, rel)
        storage.write_text(files["discharge"][site],
                           usgs_rdb_text(site, region["dates"], region["discharge_m3s"][w]))
        i, j = (int(v) for v in region["outlets"][w])
        sheds.append({"id": f"W{w + 1:02d}", "site_no": site, "discharge_file": rel, "outlet": [i, j],
                      "outlet_lat_lon": [float(region["lat"][i]), float(region["lon"][j])],
                      "pixels": np.flatnonzero(region["label"].ravel() == w).tolist()})
    meta = {"format": "domst-watersheds/1", "precip_file": PRECIP_FILE, "distance_file": DISTANCE_FILE,
            "grid": {"n_lat": n_lat, "n_lon": n_lon, "res_deg": RES_DEG,
                     "lat_first": float(region["lat"][0]), "lon_first": float(region["lon"][0]),
                     "pixel_index": "i_lat * n_lon + i_lon, latitude ascending"},
            "watersheds": sheds}
    storage.write_text(files["watersheds"], json.dumps(meta, indent=1))
    files["outlines"] = storage.join(base, OUTLINES_FILE)
    storage.write_text(files["outlines"], outlines_geojson(region))
    truth = dict(region["truth"], label=region["label"], discharge_true_m3s=region["discharge_true_m3s"])
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in truth.items()})
    storage.write_bytes(files["truth"], buf.getvalue())
    return files
