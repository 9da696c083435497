"""Redshift data: the HDF5 schema, the spectrum simulator and the readers (no Spark, no TF)."""
import io
import os

import h5py
import numpy as np
import pytest

from rdd_io import redshift_sim as sim
from rdd_io.redshift_read import read_npy_pair, read_shard
from rdd_io.schema import N, REDSHIFT, Field, Schema, SchemaError

pytestmark = pytest.mark.unit


def small(n=12, seed=3, **kw):
    return sim.simulate(n, seed, bands=300, **kw)


def h5_bytes(**datasets) -> bytes:
    """An HDF5 file written directly with h5py, bypassing the schema, to fake bad shards."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        for name, value in datasets.items():
            h5.create_dataset(name, data=value)
    return buf.getvalue()


def schema_bytes(arrays) -> bytes:
    buf = io.BytesIO()
    REDSHIFT.write_h5(buf, arrays)
    return buf.getvalue()


# -- schema -------------------------------------------------------------------------------------
def test_round_trip_through_path_and_bytes(tmp_path):
    data = small()
    path = tmp_path / "shard-00000.h5"
    REDSHIFT.write_h5(str(path), data)
    for source in (str(path), path.read_bytes()):
        back = REDSHIFT.read_h5(source, "shard-00000.h5")
        assert set(back) == {"spectra", "z", "label"}
        for field in REDSHIFT.fields:
            assert back[field.name].dtype == field.dtype
            np.testing.assert_array_equal(back[field.name], data[field.name])


def test_lossless_cast_is_allowed_on_read():
    data = small(4)
    raw = h5_bytes(spectra=data["spectra"].astype(np.float16), z=data["z"],
                   label=data["label"].astype(np.int16))
    back = REDSHIFT.read_h5(raw, "a.h5")
    assert back["label"].dtype == np.int32 and back["spectra"].dtype == np.float32
    np.testing.assert_array_equal(back["label"], data["label"])


@pytest.mark.parametrize("case, expected", [
    ("missing", r"shard-00003\.h5: missing dataset 'label'"),
    ("dtype", r"shard-00003\.h5: 'spectra' has dtype float64, expected float32"),
    ("label_dtype", r"shard-00003\.h5: 'label' has dtype float32, expected int32"),
    ("rank", r"shard-00003\.h5: 'z' has rank 2"),
    ("records", r"shard-00003\.h5: 'label' has 11 records but 'spectra' has 12"),
    ("nan", r"shard-00003\.h5: record 7 of 'spectra' has NaN"),
    ("inf", r"shard-00003\.h5: record 2 of 'z' has inf"),
])
def test_bad_shard_is_named(case, expected):
    d = small()
    spectra, z, label = d["spectra"], d["z"], d["label"]
    if case == "missing":
        raw = h5_bytes(spectra=spectra, z=z)
    elif case == "dtype":
        raw = h5_bytes(spectra=spectra.astype(np.float64), z=z, label=label)
    elif case == "label_dtype":
        raw = h5_bytes(spectra=spectra, z=z, label=label.astype(np.float32))
    elif case == "rank":
        raw = h5_bytes(spectra=spectra, z=z[:, None], label=label)
    elif case == "records":
        raw = h5_bytes(spectra=spectra, z=z, label=label[:-1])
    elif case == "nan":
        spectra = spectra.copy()
        spectra[7, 100] = np.nan
        raw = h5_bytes(spectra=spectra, z=z, label=label)
    else:
        z = z.copy()
        z[2] = np.inf
        raw = h5_bytes(spectra=spectra, z=z, label=label)
    with pytest.raises(SchemaError, match=expected):
        REDSHIFT.read_h5(raw, "shard-00003.h5")


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.3, 0.7, 0.99])
def test_truncated_bytes_raise_schema_error(keep):
    raw = schema_bytes(small())
    cut = raw[:int(len(raw) * keep)]
    with pytest.raises(SchemaError, match=r"^shard-00009\.h5: "):
        REDSHIFT.read_h5(cut, "shard-00009.h5")


def test_garbage_bytes_and_missing_file_raise_schema_error(tmp_path):
    with pytest.raises(SchemaError, match=r"junk\.h5: not a readable HDF5 file"):
        REDSHIFT.read_h5(b"definitely not hdf5 " * 50, "junk.h5")
    with pytest.raises(SchemaError, match=r"absent\.h5"):
        REDSHIFT.read_h5(str(tmp_path / "absent.h5"))


def test_write_refuses_what_read_would_refuse():
    d = small(5)
    bad = dict(d, spectra=d["spectra"].copy())
    bad["spectra"][3, 0] = np.nan
    with pytest.raises(SchemaError, match="record 3 of 'spectra' has NaN"):
        REDSHIFT.write_h5(io.BytesIO(), bad)
    with pytest.raises(SchemaError, match="unknown field"):
        REDSHIFT.write_h5(io.BytesIO(), dict(d, extra=d["z"]))
    with pytest.raises(SchemaError, match="'z' has dtype float64"):
        REDSHIFT.write_h5(io.BytesIO(), dict(d, z=d["z"].astype(np.float64)))


def test_named_sizes_must_agree_across_fields():
    pair = Schema("pair", [Field("a", np.float32, (N, "bands")), Field("b", np.float32, (N, "bands"))])
    ok = {"a": np.zeros((3, 4), np.float32), "b": np.ones((3, 4), np.float32)}
    assert pair.validate(ok)["b"].shape == (3, 4)
    with pytest.raises(SchemaError, match=r"'b' axis 1 \(bands\) has size 5 but 'a' has bands=4"):
        pair.validate({"a": ok["a"], "b": np.zeros((3, 5), np.float32)}, "x.h5")
    with pytest.raises(ValueError, match="record axis"):
        Field("c", np.float32, (4, None))


def test_file_written_for_another_schema_is_refused():
    other = Schema("other", REDSHIFT.fields)
    buf = io.BytesIO()
    other.write_h5(buf, small(3))
    with pytest.raises(SchemaError, match="written with schema 'other'"):
        REDSHIFT.read_h5(buf.getvalue(), "o.h5")


# -- simulator ------------------------------------------------------------------------------------
def test_band_grid_covers_the_range_evenly():
    wl = sim.band_wavelengths(1800, 1.1, 2.0)
    assert wl.shape == (1800,)
    step = np.diff(wl)
    np.testing.assert_allclose(step, 0.9 / 1800)
    np.testing.assert_allclose([wl[0] - step[0] / 2, wl[-1] + step[0] / 2], [1.1, 2.0])


def test_label_binning_edges_and_round_trip():
    assert sim.z_to_label(1.0) == 0 and sim.z_to_label(1.7999) == 799
    assert sim.z_to_label(1.0015) == 1
    np.testing.assert_array_equal(sim.z_to_label([0.2, 3.0]), [0, 799])
    labels = np.arange(800)
    np.testing.assert_array_equal(sim.z_to_label(sim.label_to_z(labels)), labels)


def test_labels_agree_with_redshifts():
    d = sim.simulate(2000, 11, bands=200)
    assert d["spectra"].dtype == np.float32 and d["z"].dtype == np.float32
    assert d["label"].dtype == np.int32
    assert d["z"].min() >= 1.0 and d["z"].max() < 1.8
    np.testing.assert_array_equal(d["label"], sim.z_to_label(d["z"]))
    assert np.all(np.abs(sim.label_to_z(d["label"]) - d["z"]) <= 0.0005 + 1e-6)
    assert len(np.unique(d["label"])) > 700  # uniform z fills nearly every class


def test_halpha_peak_lands_at_redshifted_wavelength():
    d = sim.simulate(40, 5, snr=1000.0, types=("starburst", "spiral"))
    wl = sim.band_wavelengths()
    for spectrum, z in zip(d["spectra"], d["z"]):
        expected = int(np.argmin(np.abs(wl - (1 + z) * sim.LINES_A["Halpha"] / 1e4)))
        lo, hi = max(expected - 30, 0), min(expected + 31, len(wl))
        peak = lo + int(np.argmax(spectrum[lo:hi]))
        assert abs(peak - expected) <= 2, (z, peak, expected)
        # A real line, well above the continuum around it.
        assert spectrum[peak] > 1.2 * np.median(spectrum[lo:hi])


def test_noise_level_follows_snr():
    clean = sim.simulate(50, 8, snr=None, bands=600, types=("elliptical",))
    noisy = sim.simulate(50, 8, snr=10.0, bands=600, types=("elliptical",))
    np.testing.assert_array_equal(clean["z"], noisy["z"])  # noise is drawn after the galaxies
    ratio = (noisy["spectra"] - clean["spectra"]).std(axis=1) / clean["spectra"].mean(axis=1)
    assert np.all(np.abs(ratio - 0.1) < 0.02), ratio


def test_simulation_is_deterministic_by_seed():
    a, b, c = small(seed=1), small(seed=1), small(seed=2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["spectra"], c["spectra"])


def test_unknown_galaxy_type_is_refused():
    with pytest.raises(ValueError, match="unknown galaxy type"):
        sim.simulate(3, 0, types=("quasar",))


def test_shards_are_atomic_sized_and_reproducible_one_by_one(tmp_path):
    paths = sim.write_shards(tmp_path / "a", n=25, shard_size=10, seed=7, bands=120)
    assert [os.path.basename(p) for p in paths] == [f"shard-{i:05d}.h5" for i in range(3)]
    assert sorted(os.listdir(tmp_path / "a")) == [os.path.basename(p) for p in paths]
    sizes = [REDSHIFT.read_h5(p)["z"].shape[0] for p in paths]
    assert sizes == [10, 10, 5]
    again = sim.simulate(10, sim.shard_seed(7, 1), bands=120)
    np.testing.assert_array_equal(REDSHIFT.read_h5(paths[1])["spectra"], again["spectra"])
    first = REDSHIFT.read_h5(paths[0])["spectra"]
    assert not np.array_equal(first, REDSHIFT.read_h5(paths[1])["spectra"])


# -- readers --------------------------------------------------------------------------------------
def test_read_shard_from_bytes_and_path(tmp_path):
    d = small()
    path = tmp_path / "shard-00000.h5"
    REDSHIFT.write_h5(str(path), d)
    for data in (path.read_bytes(), str(path)):
        spectra, labels = read_shard(str(path), data, n_classes=800)
        assert spectra.dtype == np.float32 and labels.dtype == np.int32
        np.testing.assert_array_equal(spectra, d["spectra"])
        np.testing.assert_array_equal(labels, d["label"])


def test_read_shard_checks_label_range():
    d = small(6)
    d["label"] = d["label"].copy()
    d["label"][4] = 900
    with pytest.raises(SchemaError, match=r"shard-00001\.h5: record 4 has label 900"):
        read_shard("hdfs://nn/data/shard-00001.h5", schema_bytes(d), n_classes=800)


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_npy_pair_with_int_and_one_hot_labels(tmp_path):
    rng = np.random.default_rng(0)
    spectra = rng.normal(size=(9, 37))
    labels = rng.integers(0, 6, 9)
    np.save(tmp_path / "spectra.npy", spectra)
    s, lab = read_npy_pair(str(tmp_path / "spectra.npy"), npy_bytes(labels), n_classes=6)
    assert s.shape == (9, 37) and s.dtype == np.float32 and lab.dtype == np.int32
    np.testing.assert_array_equal(lab, labels)
    one_hot = np.eye(6, dtype=np.float32)[labels]
    _, lab2 = read_npy_pair(npy_bytes(spectra), npy_bytes(one_hot), n_classes=6)
    np.testing.assert_array_equal(lab2, labels)


@pytest.mark.parametrize("case, expected", [
    ("count", r"labels\.npy: 8 labels but spectra\.npy has 9 spectra"),
    ("rank", r"spectra\.npy: spectra have rank 1"),
    ("range", r"labels\.npy: record 3 has label 6, outside \[0, 5\]"),
    ("nan", r"spectra\.npy: record 5 of 'spectra' has NaN"),
    ("two_hot", r"labels\.npy: record 2 is not a one-hot row"),
    ("columns", r"labels\.npy: one-hot labels have 4 columns"),
    ("fraction", r"labels\.npy: record 1 has non-integer label"),
    ("pickle", r"labels\.npy: not a readable \.npy array"),
    ("garbage", r"spectra\.npy: not a readable \.npy array"),
])
def test_npy_pair_errors_name_file_and_record(case, expected):
    spectra = np.ones((9, 20), np.float32)
    labels = np.arange(9) % 6
    if case == "count":
        labels = labels[:8]
    elif case == "rank":
        spectra = spectra[:, 0]
    elif case == "range":
        labels = labels.copy()
        labels[3] = 6
    elif case == "nan":
        spectra[5, 7] = np.nan
    elif case == "two_hot":
        labels = np.eye(6)[labels]
        labels[2, 0] = 1
    elif case == "columns":
        labels = np.eye(4)[labels % 4]
    elif case == "fraction":
        labels = labels.astype(np.float64)
        labels[1] = 0.5
    s_bytes = b"\x00garbage" if case == "garbage" else npy_bytes(spectra)
    if case == "pickle":
        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}] * 9, dtype=object), allow_pickle=True)
        l_bytes = buf.getvalue()
    else:
        l_bytes = npy_bytes(labels)
    with pytest.raises(SchemaError, match=expected):
        read_npy_pair(s_bytes, l_bytes, n_classes=6, spectra_name="spectra.npy",
                      labels_name="labels.npy")
