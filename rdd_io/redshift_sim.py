"""Simulated Euclid-like near-infrared galaxy spectra with redshift labels.

The published study used simulated spectra (1.1-2.0 micron in 1800 bands, z in [1, 1.8) cut into
800 classes) that are not public. This simulator follows those specifications with a simple but
physical model: a power-law continuum whose slope and level depend on a galaxy type, plus the
strong optical emission lines redshifted to (1+z) times their rest wavelength, broadened to the
instrument's resolving power, then Gaussian noise. Everything is drawn from one numpy Generator,
so a seed fixes the output exactly.
"""
from __future__ import annotations

import io
import json
import math
import os

import numpy as np

from rdd_io import storage
from rdd_io.schema import REDSHIFT

# Rest-frame vacuum-ish wavelengths in angstrom of the lines that matter at 1 <= z < 1.8.
LINES_A = {
    "OII_3727": 3727.0, "Hbeta": 4861.0, "OIII_4959": 4959.0, "OIII_5007": 5007.0,
    "NII_6548": 6548.0, "Halpha": 6563.0, "NII_6584": 6584.0,
    "SII_6717": 6717.0, "SII_6731": 6731.0,
}
LINE_NAMES = tuple(LINES_A)

# Per galaxy type: continuum slope (f_lambda ~ lambda^slope) mean/spread, level mean,
# H-alpha rest equivalent width (angstrom, log-normal median), and line fluxes relative to H-alpha.
# The doublet ratios [OIII] 4959/5007 ~ 1/3 and [NII] 6548/6584 ~ 1/3 are fixed by atomic physics.
GALAXY_TYPES = {
    "starburst": dict(slope=(-1.5, 0.3), level=1.0, ew_halpha=120.0, ratios=dict(
        OII_3727=1.2, Hbeta=0.35, OIII_4959=0.25, OIII_5007=0.75,
        NII_6548=0.04, NII_6584=0.12, SII_6717=0.10, SII_6731=0.08)),
    "spiral": dict(slope=(-0.5, 0.3), level=1.0, ew_halpha=35.0, ratios=dict(
        OII_3727=0.9, Hbeta=0.33, OIII_4959=0.06, OIII_5007=0.18,
        NII_6548=0.12, NII_6584=0.36, SII_6717=0.18, SII_6731=0.13)),
    "seyfert": dict(slope=(-0.8, 0.4), level=0.8, ew_halpha=50.0, ratios=dict(
        OII_3727=1.0, Hbeta=0.30, OIII_4959=0.50, OIII_5007=1.50,
        NII_6548=0.30, NII_6584=0.90, SII_6717=0.35, SII_6731=0.30)),
    "elliptical": dict(slope=(0.8, 0.3), level=1.3, ew_halpha=4.0, ratios=dict(
        OII_3727=1.5, Hbeta=0.25, OIII_4959=0.15, OIII_5007=0.45,
        NII_6548=0.40, NII_6584=1.20, SII_6717=0.45, SII_6731=0.35)),
}
TYPE_NAMES = tuple(GALAXY_TYPES)

FWHM_TO_SIGMA = 1.0 / 2.355  # Gaussian: FWHM = 2.355 sigma


def band_wavelengths(bands: int = 1800, wl_min_um: float = 1.1, wl_max_um: float = 2.0) -> np.ndarray:
    """Centres (micron) of `bands` equal-width bands that tile [wl_min_um, wl_max_um]."""
    if bands < 1 or not wl_max_um > wl_min_um:
        raise ValueError(f"need bands >= 1 and wl_max_um > wl_min_um, got {bands}, "
                         f"{wl_min_um}, {wl_max_um}")
    width = (wl_max_um - wl_min_um) / bands
    return wl_min_um + (np.arange(bands) + 0.5) * width


def z_to_label(z, z_min: float = 1.0, bin_width: float = 0.001, n_classes: int = 800):
    """Class index floor((z - z_min) / bin_width), clipped to [0, n_classes - 1]."""
    z = np.asarray(z, dtype=np.float64)
    label = np.floor((z - z_min) / bin_width)
    return np.clip(label, 0, n_classes - 1).astype(np.int32)


def label_to_z(label, z_min: float = 1.0, bin_width: float = 0.001):
    """Redshift at the centre of class `label`."""
    return z_min + (np.asarray(label, dtype=np.float64) + 0.5) * bin_width


def line_sigma_um(observed_um, resolving_power: float = 250.0):
    """Gaussian sigma of a line at the instrument's resolving power R = lambda / FWHM."""
    return np.asarray(observed_um) / resolving_power * FWHM_TO_SIGMA


def _draw_galaxies(rng: np.random.Generator, n: int, z_min: float, z_max: float,
                   types: tuple[str, ...]) -> dict:
    """Per-galaxy parameters, drawn in a fixed order so a seed fixes them."""
    # Labels come from the stored float32 value; rounding must not reach z_max itself.
    z = rng.uniform(z_min, z_max, n).astype(np.float32)
    z = np.minimum(z, np.nextafter(np.float32(z_max), np.float32(z_min)))
    gtype = np.array([TYPE_NAMES.index(t) for t in types])[rng.integers(0, len(types), n)]
    table = [GALAXY_TYPES[t] for t in TYPE_NAMES]
    slope_mu, slope_sd = np.array([t["slope"] for t in table])[gtype].T
    ratios = np.array([[t["ratios"].get(name, 1.0) for name in LINE_NAMES] for t in table])[gtype]
    return dict(
        z=z, gtype=gtype,
        slope=slope_mu + slope_sd * rng.standard_normal(n),
        level=np.array([t["level"] for t in table])[gtype] * np.exp(0.3 * rng.standard_normal(n)),
        # rest-frame angstrom, log-normal around the type's median
        ew_halpha=np.array([t["ew_halpha"] for t in table])[gtype]
        * np.exp(0.4 * rng.standard_normal(n)),
        ratios=ratios * np.exp(0.25 * rng.standard_normal(ratios.shape)),
    )


def _render(params: dict, wl_um: np.ndarray, resolving_power: float):
    """(continuum, continuum + lines), noise-free float64 [n, bands], for the drawn galaxies."""
    n, bands = len(params["z"]), len(wl_um)
    z = params["z"].astype(np.float64)
    continuum = params["level"][:, None] * (wl_um[None, :] / 1.5) ** params["slope"][:, None]
    observed_ha = (1.0 + z) * LINES_A["Halpha"] / 1e4
    cont_ha = params["level"] * (observed_ha / 1.5) ** params["slope"]
    # H-alpha flux = observed equivalent width (rest EW * (1+z), in micron) * continuum there.
    flux_ha = params["ew_halpha"] * (1.0 + z) / 1e4 * cont_ha
    # Each line is evaluated only within +-6 sigma of its centre (a window of 2w+1 bands) on a
    # padded copy, which is ~25x less work than evaluating every line on every band.
    step = wl_um[1] - wl_um[0] if bands > 1 else 1.0
    w = int(math.ceil(6 * line_sigma_um(1.2 * wl_um[-1], resolving_power) / step)) + 1
    w = min(w, bands)
    padded = np.zeros((n, bands + 2 * w))
    rows = np.arange(n)[:, None]
    offsets = np.arange(-w, w + 1)[None, :]
    for j, name in enumerate(LINE_NAMES):
        centre = (1.0 + z) * LINES_A[name] / 1e4
        sigma = line_sigma_um(centre, resolving_power)
        amp = flux_ha * params["ratios"][:, j] / (sigma * math.sqrt(2 * math.pi))
        nearest = np.rint((centre - wl_um[0]) / step).astype(np.int64)
        cols = np.clip(nearest, -w, bands + w - 1)[:, None] + offsets  # band index, may be outside
        inside = (cols >= -w) & (cols < bands + w)
        x = wl_um[0] + cols * step
        values = amp[:, None] * np.exp(-0.5 * ((x - centre[:, None]) / sigma[:, None]) ** 2)
        np.add.at(padded, (np.broadcast_to(rows, cols.shape)[inside], cols[inside] + w),
                  values[inside])
    return continuum, continuum + padded[:, w:w + bands]


def simulate(n: int, seed=0, snr: float | None = 10.0, bands: int = 1800, wl_min_um: float = 1.1,
             wl_max_um: float = 2.0, z_min: float = 1.0, z_max: float = 1.8,
             n_classes: int = 800, resolving_power: float = 250.0,
             types=None, chunk: int = 1024) -> dict:
    """`n` noisy spectra with their redshift and class label.

    seed: int or numpy SeedSequence. snr: mean continuum level of each spectrum over the noise
    standard deviation per band (None or inf for noise-free). types: galaxy types to draw from
    (default all of TYPE_NAMES, equally likely). Classes have width
    (z_max - z_min) / n_classes (0.001 by default). Returns dict(spectra float32 [n, bands],
    z float32 [n], label int32 [n]).
    """
    if n < 0 or not z_max > z_min or n_classes < 1:
        raise ValueError(f"need n >= 0, z_max > z_min, n_classes >= 1; got {n}, {z_min}, "
                         f"{z_max}, {n_classes}")
    types = tuple(TYPE_NAMES if types is None else types)
    unknown = sorted(set(types) - set(TYPE_NAMES))
    if unknown or not types:
        raise ValueError(f"unknown galaxy type(s) {unknown}; valid: {list(TYPE_NAMES)}")
    rng = np.random.default_rng(seed)
    wl = band_wavelengths(bands, wl_min_um, wl_max_um)
    params = _draw_galaxies(rng, n, z_min, z_max, types)
    spectra = np.empty((n, bands), dtype=np.float32)
    # Chunks bound the float64 temporaries; the noise is drawn per chunk in order, so the output
    # depends on the seed and `chunk`, never on timing.
    for start in range(0, n, chunk):
        part = {k: v[start:start + chunk] for k, v in params.items()}
        continuum, clean = _render(part, wl, resolving_power)
        if snr is not None and np.isfinite(snr):
            noise_sd = continuum.mean(axis=1, keepdims=True) / snr
            clean = clean + noise_sd * rng.standard_normal(clean.shape)
        spectra[start:start + chunk] = clean
    bin_width = (z_max - z_min) / n_classes
    return dict(spectra=spectra, z=params["z"],
                label=z_to_label(params["z"], z_min, bin_width, n_classes))


def shard_seed(seed: int, index: int) -> np.random.SeedSequence:
    """Independent stream for shard `index`: regenerating one shard needs no other shard."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(index,))


def simulated_shard(index: int, n: int, shard_size: int, seed: int = 0, **kw) -> bytes:
    """Shard `index` of `n` simulated spectra cut into shards of `shard_size`, as REDSHIFT HDF5 bytes: the
    same bytes wherever it is made (a Spark task or this process). Keyword arguments go to `simulate` and
    are recorded as file attributes with the seed and the shard's index."""
    if shard_size < 1 or n < 0 or not 0 <= index * shard_size < max(n, 1):
        raise ValueError(f"need shard_size >= 1, n >= 0 and a shard inside n, got {shard_size}, {n}, {index}")
    count = min(shard_size, n - index * shard_size)
    attrs = {"seed": seed, "simulate_kw": json.dumps(kw, default=list, sort_keys=True), "shard": index}
    buf = io.BytesIO()
    REDSHIFT.write_h5(buf, simulate(count, shard_seed(seed, index), **kw), attrs=attrs)
    return buf.getvalue()


def write_shards(out_dir, n: int, shard_size: int, seed: int = 0, **kw) -> list[str]:
    """Simulate `n` spectra into shard-00000.h5, shard-00001.h5, ... of at most `shard_size` in a local
    folder (rdd_io.redshift_bundle.simulate_shards makes the same files with Spark, at any URI).

    Each file is written under a temporary name and renamed, so a reader never sees half a shard.
    """
    if shard_size < 1 or n < 0:
        raise ValueError(f"need shard_size >= 1 and n >= 0, got {shard_size}, {n}")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for index in range(-(-n // shard_size)):
        path = os.path.join(out_dir, f"shard-{index:05d}.h5")
        storage.write_bytes(path, simulated_shard(index, n, shard_size, seed, **kw))  # temporary name, then rename
        paths.append(path)
    return paths
