"""Dom-ST's data layer: one HDF5 bundle per watershed, built by Spark from the region's files.

A bundle holds one watershed's aligned inputs: one record per day (rdd_io.schema.DOMST_DAYS: precipitation
per pixel, outlet discharge, its mask, the day) at the top of the file and one record per pixel
(DOMST_PIXELS: distance to water, grid index) in the group 'pixels', both checked on write and on read;
the watershed's id, USGS site number and count of missing days are file attributes.
"""
from __future__ import annotations

import io
import logging

import numpy as np

from rdd_io import storage
from rdd_io.schema import DOMST_DAYS, DOMST_PIXELS, SchemaError

log = logging.getLogger("rdd_io.domst_bundle")
EPOCH = np.datetime64("1970-01-01", "D")
PIXELS = "pixels"  # the group of the per-pixel records


def bundle_bytes(aligned, distance_km, pixels, site_no: str, distance_name: str = "<distance>") -> bytes:
    """One watershed's HDF5 bundle (an rdd_io.domst_read.AlignedWatershed plus its per-pixel arrays)."""
    distance = np.asarray(distance_km, np.float64).reshape(-1)
    if distance.shape != (aligned.precip.shape[1],) or not np.all(np.isfinite(distance)):
        raise SchemaError(f"{distance_name}: watershed {aligned.watershed}: distance to water "
                          f"must be finite at each of its "
                          f"{aligned.precip.shape[1]} pixels (nodata inside the watershed?)")
    buf = io.BytesIO()
    DOMST_DAYS.write_h5(buf, {"precip": aligned.precip, "discharge": np.where(aligned.valid, aligned.discharge, 0.0),
                              "valid": aligned.valid, "day": (aligned.dates - EPOCH).astype(np.int32)},
                        attrs={"watershed": aligned.watershed, "site_no": str(site_no),
                               "n_missing": int(aligned.n_missing)})
    DOMST_PIXELS.write_h5(buf, {"distance_km": distance, "pixel": np.asarray(pixels, np.int64)}, group=PIXELS)
    return buf.getvalue()


def read_bundle(data: bytes, name: str) -> dict:
    """Bytes of a bundle -> its arrays (discharge NaN where missing), per-pixel arrays and facts."""
    import h5py
    out = DOMST_DAYS.read_h5(data, name)
    pixels = DOMST_PIXELS.read_h5(data, name, group=PIXELS)
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            attrs = {k: h5.attrs[k] for k in ("watershed", "site_no", "n_missing")}
        facts = {"watershed": str(attrs["watershed"]), "site_no": str(attrs["site_no"]),
                 "n_missing": int(attrs["n_missing"])}
    except KeyError as exc:
        raise SchemaError(f"{name}: missing attribute {exc}") from None
    except (OSError, TypeError, ValueError) as exc:  # a damaged attribute surfaces only when it is read
        raise SchemaError(f"{name}: unreadable bundle attributes ({type(exc).__name__}: {exc})") from None
    if len(pixels["pixel"]) != out["precip"].shape[1]:
        raise SchemaError(f"{name}: {len(pixels['pixel'])} pixel records for {out['precip'].shape[1]} "
                          f"precipitation columns")
    out["discharge"] = np.where(out["valid"], out["discharge"], np.nan)
    return {**out, **pixels, **facts}


def build_bundles(sc, uri: str, target: str) -> list[dict]:
    """Spark reads the region's files under `uri` (each parsed on an executor, errors naming the file),
    aligns each watershed and writes its bundle to <target>/<id>.h5; returns each watershed's facts."""
    from rdd_io import domst_read as dr
    from rdd_io.domst_sim import WATERSHEDS_FILE
    meta = dr.read_watersheds(storage.read_bytes(storage.join(uri, WATERSHEDS_FILE)), WATERSHEDS_FILE)
    sheds = meta["watersheds"]
    precip_name, dist_name = meta["precip_file"], meta["distance_file"]
    (dates, lat, lon, pre), = sc.binaryFiles(storage.join(uri, precip_name)).map(
        lambda kv: dr.read_cru_precip(kv[1], kv[0].rsplit("/", 1)[-1])).collect()
    (d_lat, d_lon, dist), = sc.binaryFiles(storage.join(uri, dist_name)).map(
        lambda kv: dr.read_distance(kv[1], kv[0].rsplit("/", 1)[-1])).collect()
    if d_lat.shape != lat.shape or d_lon.shape != lon.shape \
            or not (np.allclose(d_lat, lat) and np.allclose(d_lon, lon)):
        raise ValueError(f"{dist_name}: its grid ({len(d_lat)} x {len(d_lon)}) is not the grid of {precip_name} "
                         f"({len(lat)} x {len(lon)})")
    shared = sc.broadcast((dates, pre, dist.reshape(-1), precip_name, dist_name))
    files = ",".join(storage.join(uri, s["discharge_file"]) for s in sheds)

    def discharge(kv):
        name = kv[0].rsplit("/", 1)[-1]
        site, q_dates, q = dr.read_usgs_rdb(kv[1], name)
        return site, (name, q_dates, q * dr.M3S_PER_CFS)

    def bundle(item):
        site, (shed, (name, q_dates, q)) = item
        p_dates, p, distance, p_name, d_name = shared.value
        aligned = dr.align(p_dates, p, shed["pixels"], q_dates, q, watershed=shed["id"], precip_name=p_name,
                           discharge_name=name)
        facts = {"id": shed["id"], "site_no": site, "pixels": int(len(shed["pixels"])), "days": len(aligned.dates),
                 "start": str(aligned.dates[0]), "end": str(aligned.dates[-1]), "n_missing": aligned.n_missing}
        return facts, bundle_bytes(aligned, distance[shed["pixels"]], shed["pixels"], site, d_name)

    keyed = sc.parallelize([(str(s["site_no"]), s) for s in sheds], max(1, min(len(sheds), 8)))
    joined = keyed.join(sc.binaryFiles(files).map(discharge))
    storage.remove_tree(target)
    facts = []
    for fact, data in joined.map(bundle).toLocalIterator():
        storage.write_bytes(storage.join(target, f"{fact['id']}.h5"), data)
        facts.append(fact)
    missing = sorted({str(s["site_no"]) for s in sheds} - {f["site_no"] for f in facts})
    if missing:
        raise FileNotFoundError(f"{uri}: no discharge for site(s) {missing} listed in {WATERSHEDS_FILE} "
                                f"(the RDB file's site_no must match)")
    shared.unpersist()
    return sorted(facts, key=lambda f: f["id"])
