"""Redshift input through Spark (local mode, no cluster, no TF): the bundle's indices, the two
partition modes, and bad input failing with one line naming the file and record."""
import json
import re
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from jobs.errors import python_error_line, user_message
from rdd_io import redshift_bundle as rb
from rdd_io import redshift_sim as sim
from rdd_io import storage
from rdd_io.schema import REDSHIFT

pytestmark = pytest.mark.unit

BANDS, N_CLASSES = 64, 40
SIM = dict(bands=BANDS, n_classes=N_CLASSES)


@pytest.fixture(scope="module")
def spark_env():
    """Spark's variables for this module's local sessions, put back afterwards."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYSPARK_PYTHON", sys.executable)
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        yield
        from pyspark.sql import SparkSession
        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()


@pytest.fixture
def spark(spark_env):
    """A local session: the module's, or a new one if a test (run_job does) stopped it, so no test
    depends on the order the tests run in."""
    from pyspark.sql import SparkSession
    return (SparkSession.builder.master("local[1]").appName("test-redshift-bad-input")
            .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
            .getOrCreate())


def good_shards(folder: Path, n: int = 14, shard_size: int = 4) -> Path:
    sim.write_shards(str(folder), n, shard_size, seed=5, **SIM)
    return folder


def test_spark_simulates_the_same_shard_files_as_the_local_writer(spark, tmp_path):
    local = good_shards(tmp_path / "local")
    names = rb.simulate_shards(spark.sparkContext, storage.to_uri(tmp_path / "spark"), 14, 4, 5, **SIM)
    assert names == [p.name for p in sorted(local.iterdir())] == [f"shard-{i:05d}.h5" for i in range(4)]
    for name in names:  # one simulated_shard wherever it runs: the bytes are the same, attributes included
        assert (tmp_path / "spark" / name).read_bytes() == (local / name).read_bytes(), name


def failure(sc, folder: Path) -> str:
    """The one-line message the job would report for reading `folder`."""
    with pytest.raises(Exception) as info:
        rb.read_bundle(sc, storage.to_uri(folder), "hdf5", N_CLASSES, bands=BANDS).count()
    return user_message(info.value)


def _edit(path: Path, fn) -> None:
    with h5py.File(path, "a") as h5:
        fn(h5)


def _set(name, index, value):
    def fn(h5):
        data = h5[name][()]
        data[index] = value
        del h5[name]
        h5.create_dataset(name, data=data)
    return fn


def _other_bands(h5):
    data = sim.simulate(int(h5["label"].shape[0]), 9, bands=BANDS + 3, n_classes=N_CLASSES)
    for name in ("spectra", "z", "label"):
        del h5[name]
        h5.create_dataset(name, data=data[name])


CASES = {
    "bands": (lambda p: _edit(p, _other_bands),
              f"SchemaError: shard-00002.h5: 'spectra' have {BANDS + 3} bands, config says data.bands={BANDS}"),
    "nan": (lambda p: _edit(p, _set("spectra", (2, 5), np.nan)),
            "SchemaError: shard-00002.h5: record 2 of 'spectra' has NaN"),
    "inf": (lambda p: _edit(p, _set("spectra", (3, 0), -np.inf)),
            "SchemaError: shard-00002.h5: record 3 of 'spectra' has inf"),
    "label_high": (lambda p: _edit(p, _set("label", 1, N_CLASSES)),
                   f"SchemaError: shard-00002.h5: record 1 has label {N_CLASSES}, outside [0, {N_CLASSES - 1}]"),
    "label_negative": (lambda p: _edit(p, _set("label", 0, -1)),
                       "SchemaError: shard-00002.h5: record 0 has label -1"),
    "no_spectra": (lambda p: _edit(p, lambda h5: h5.__delitem__("spectra")),
                   "SchemaError: shard-00002.h5: missing dataset 'spectra'"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
                  "SchemaError: shard-00002.h5: (not a readable|damaged) HDF5 file"),
    "garbage": (lambda p: p.write_bytes(b"this is not an HDF5 file\n" * 40),
                "SchemaError: shard-00002.h5: not a readable HDF5 file"),
    "empty": (lambda p: p.write_bytes(b""), "SchemaError: shard-00002.h5: not a readable HDF5 file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_shard_fails_naming_file_and_record(spark, tmp_path, case):
    corrupt, expected = CASES[case]
    folder = good_shards(tmp_path / "in")
    corrupt(folder / "shard-00002.h5")  # a later shard: the first ones are fine
    message = failure(spark.sparkContext, folder)
    assert re.match(re.escape(expected) if case != "truncated" else expected, message), message
    assert "\n" not in message


def test_missing_input_names_the_uri(spark, tmp_path):
    sc = spark.sparkContext
    missing = storage.to_uri(tmp_path / "no-such-folder")
    with pytest.raises(FileNotFoundError, match=f"{missing}: input folder does not exist"):
        rb.read_bundle(sc, missing, "hdf5", N_CLASSES, bands=BANDS)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no shards here")
    empty = storage.to_uri(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=f"{empty}: no \\*.h5 shards"):
        rb.read_bundle(sc, empty, "hdf5", N_CLASSES, bands=BANDS)
    np.save(tmp_path / "empty" / "spectra.npy", np.zeros((3, BANDS), np.float32))
    with pytest.raises(FileNotFoundError, match=f"{empty}: missing labels.npy"):
        rb.read_bundle(sc, empty, "npy", N_CLASSES, bands=BANDS)


def test_npy_pair_band_count_is_checked(spark, tmp_path):
    np.save(tmp_path / "spectra.npy", np.ones((5, BANDS - 1), np.float32))
    np.save(tmp_path / "labels.npy", np.arange(5))
    with pytest.raises(Exception) as info:
        rb.read_bundle(spark.sparkContext, storage.to_uri(tmp_path), "npy", N_CLASSES, bands=BANDS).count()
    assert user_message(info.value) == (f"SchemaError: spectra.npy: 'spectra' have {BANDS - 1} bands, "
                                        f"config says data.bands={BANDS}")


def test_bundle_indices_are_unique_and_dense_and_the_two_partition_modes(spark, tmp_path):
    n = 14  # shards of 4, 4, 4, 2
    folder = good_shards(tmp_path / "in", n)
    source = {}
    for path in sorted(folder.glob("*.h5")):
        arrays = REDSHIFT.read_h5(str(path))
        source.update({s.tobytes(): int(y) for s, y in zip(arrays["spectra"], arrays["label"])})
    bundle = rb.read_bundle(spark.sparkContext, storage.to_uri(folder), "hdf5", N_CLASSES, bands=BANDS).cache()
    rows = bundle.collect()
    assert bundle.count() == n
    assert sorted(i for i, _ in rows) == list(range(n))
    # every (spectrum, label) pair is a sample of the input, each once, still paired correctly
    assert {s.tobytes(): y for _, (s, y) in rows} == source
    everything = set(range(n))
    for workers in (2, 3):
        parts = [set(s.keys().collect()) for s in rb.shares(bundle, workers, "different")]
        assert len(parts) == workers
        assert sum(len(p) for p in parts) == n and set().union(*parts) == everything  # disjoint, complete
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    same = rb.shares(bundle, 3, "same")
    assert len(same) == 3 and all(sorted(s.keys().collect()) == list(range(n)) for s in same)
    with pytest.raises(ValueError, match="data mode"):
        rb.shares(bundle, 2, "mixed")


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _earlier_run(out: Path) -> None:
    """Files an earlier, successful run left in the output folder (its input shards included)."""
    good_shards(out / "input", 8)
    (out / "bundles" / "8-all").mkdir(parents=True)
    (out / "bundles" / "8-all" / "part-00000.h5").write_bytes(b"earlier part")
    (out / "report.md").write_text("# earlier report\n")
    (out / "summary.json").write_text(json.dumps({"case": "redshift", "status": "ok"}))


def test_failed_prepare_leaves_earlier_outputs_intact(spark, tmp_path):
    from jobs.redshift import prepare_data
    from jobs.redshift_config import DataConfig
    from jobs.runner import Job
    out = tmp_path / "out"
    _earlier_run(out)
    CASES["nan"][0](out / "input" / "shard-00001.h5")  # the input went bad since
    before = _snapshot(out)
    data = DataConfig(source="hdf5", feed="tensorflow", input="",
                      npy_spectra="spectra.npy", npy_labels="labels.npy", sizes=[8],
                      shard_size=4, seed=5, bands=BANDS, z_min=1.0, z_max=1.8, n_classes=N_CLASSES, snr=10.0)
    job = Job("redshift", SimpleNamespace(data=data), spark, storage.to_uri(out), "secret", None)
    with pytest.raises(Exception) as info:
        prepare_data(job)
    assert user_message(info.value).startswith("SchemaError: shard-00001.h5: record 2 of 'spectra' has NaN")
    assert _snapshot(out) == before


def test_job_reports_the_executor_error_first(spark, tmp_path, capfd):
    """The whole job contract on bad input: exit 1, summary.json and stderr's last line lead with the
    executor's SchemaError, and the earlier run's other outputs are untouched.
    run_job stops the Spark session it finds (this module's); the next test gets a new one."""
    from jobs.redshift import RedshiftConfig, run
    from jobs.runner import run_job
    out = tmp_path / "out"
    _earlier_run(out)
    CASES["label_high"][0](out / "input" / "shard-00001.h5")
    earlier = {k: v for k, v in _snapshot(out).items() if k not in ("summary.json", "config.yaml")}
    handler = signal.getsignal(signal.SIGTERM)
    code = run_job("redshift", RedshiftConfig, run, [
        "--preset", "tiny", "--master", "local[1]", "--output", str(out), "--set", "data.source=hdf5",
        "--set", f"data.bands={BANDS}", "--set", f"data.n_classes={N_CLASSES}", "--set", "data.sizes=[8]"])
    assert signal.getsignal(signal.SIGTERM) is handler  # run_job puts back what it changed in the process
    assert code == 1
    expected = f"SchemaError: shard-00001.h5: record 1 has label {N_CLASSES}, outside [0, {N_CLASSES - 1}]"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == expected
    stderr = capfd.readouterr().err
    assert "Traceback" in stderr  # the full text is still there
    assert stderr.rstrip().splitlines()[-1] == f"redshift: failed: {expected}"
    assert {k: v for k, v in _snapshot(out).items() if k not in ("summary.json", "config.yaml")} == earlier


# -- user_message on its own (no Spark) -----------------------------------------------------------
Py4JJavaError = type("Py4JJavaError", (Exception,), {"__module__": "py4j.protocol"})

WRAPPED = """An error occurred while calling o41.count.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 3.0 failed 4 times
org.apache.spark.api.python.PythonException: Traceback (most recent call last):
  File "/x/pyspark/worker.py", line 1, in main
    process()
ValueError: first attempt

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/x/rdd_io/schema.py", line 9, in read_h5
    raise SchemaError(msg)
    ^^^^^^^^^^^^^^^^^^^^^^
rdd_io.schema.SchemaError: shard-00007.h5: record 3 of 'spectra' has NaN

\tat org.apache.spark.api.python.BasePythonRunner.handlePythonException(PythonRunner.scala:1)
Driver stacktrace:
\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2)
"""


def test_user_message_takes_the_last_python_error_of_a_spark_failure():
    assert python_error_line(WRAPPED) == "SchemaError: shard-00007.h5: record 3 of 'spectra' has NaN"
    assert user_message(Py4JJavaError(WRAPPED)) == "SchemaError: shard-00007.h5: record 3 of 'spectra' has NaN"


def test_user_message_without_python_traceback_uses_the_java_exception():
    text = ("An error occurred while calling z:org.apache.spark.api.python.PythonRDD.collect.\n"
            ": org.apache.hadoop.mapred.InvalidInputException: Input Pattern file:/a/*.h5 matches 0 files\n"
            "\tat org.apache.hadoop.mapred.FileInputFormat.singleThreadedListStatus(FileInputFormat.java:1)\n")
    assert user_message(Py4JJavaError(text)) == "InvalidInputException: Input Pattern file:/a/*.h5 matches 0 files"


def test_user_message_of_a_driver_error_is_unchanged():
    assert user_message(FileNotFoundError("file:///x: input folder does not exist")) == (
        "FileNotFoundError: file:///x: input folder does not exist")
    # only Spark's wrappers are unpacked: a driver error that quotes a traceback keeps its own text
    assert user_message(RuntimeError(WRAPPED)) == f"RuntimeError: {WRAPPED}"
