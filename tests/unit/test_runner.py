"""The job contract's error paths (jobs/runner.py), end to end where a user meets them: exit 2 for a bad
config or a refused --resume with nothing written, exit 130 and a summary on SIGTERM, and a summary.json
that cannot be written never hiding the job's own error; an in-process run leaves the process as it was."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def driver(code: str, *args: str, **kw) -> subprocess.Popen:
    """A job driver as its own process (this repository on its path)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"), **kw)


def smoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "jobs" / "smoke.py"), *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_bad_config_exits_2_naming_the_key_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = smoke("--master", "spark://127.0.0.1:1", "--output", str(out), "--set", "feed.recrods=5")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: config.feed: unknown key(s) recrods; valid keys: "
                                                    "records, partitions, epochs, batch_size, feed_timeout_s")
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_a_refused_resume_exits_2_and_leaves_the_run_as_it_was(tmp_path):
    out = tmp_path / "out"
    proc = smoke("--output", str(out), "--resume")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --resume: {out.as_uri()}/config.yaml does not exist; there is no run to resume in {out.as_uri()}")
    assert not out.exists()

    from conf import CONF_DIR, dump, load
    from jobs.smoke import SmokeConfig
    earlier = dump(load(SmokeConfig, str(CONF_DIR / "smoke.yaml"), None, ["feed.records=7"]), case="smoke",
                   preset=None)
    out.mkdir()
    (out / "config.yaml").write_text(earlier)
    (out / "summary.json").write_text('{"status": "failed", "error": "earlier"}')
    before = files(out)
    proc = smoke("--output", str(out), "--resume", "--master", "spark://127.0.0.1:1")
    assert proc.returncode == 2
    assert f"error: --resume: the config differs from the run in {out.as_uri()}" in proc.stderr
    diff = [line for line in proc.stderr.splitlines() if line[:1] in ("+", "-") and line[:3] not in ("+++", "---")]
    assert diff == ["-  records: 7", "+  records: 10000"], proc.stderr  # the one difference, shown
    assert files(out) == before  # no summary.json, no config.yaml written over the earlier run's


SLOW_JOB = """
    import sys, time
    from jobs.runner import run_job
    from jobs.smoke import SmokeConfig

    def run(job):
        print("running", flush=True)
        time.sleep(600)

    sys.exit(run_job("smoke", SmokeConfig, run, ["--master", "local[1]", "--output", sys.argv[1]]))
"""


def test_sigterm_ends_the_run_with_130_a_summary_and_no_process_left(tmp_path):
    out = tmp_path / "out"
    proc = driver(SLOW_JOB, str(out))
    try:
        line = ""
        while line != "running":  # log lines come first; Spark's start-up may take a while
            line = proc.stdout.readline().strip()
            assert line or proc.poll() is None, proc.stderr.read()[-3000:]
        children = psutil.Process(proc.pid).children(recursive=True)  # Spark's JVM among them
        assert children
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    assert "smoke: interrupted; stopping everything this run started" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "interrupted (signal 15)", summary
    assert (out / "config.yaml").exists()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], [(p.pid, p.cmdline()[:3]) for p in alive]


class FakeSession:
    """Stands in for Spark where the runner's own bookkeeping is under test (Spark is not)."""
    sparkContext = type("Context", (), {"master": "local[1]"})()
    stopped = False

    def stop(self):
        self.stopped = True


@pytest.fixture
def no_spark(monkeypatch):
    from jobs import runner
    session = FakeSession()
    monkeypatch.setattr(runner, "_spark_session", lambda *args, **kw: session)
    return session


def test_a_summary_that_cannot_be_written_does_not_hide_the_jobs_error(tmp_path, no_spark, capsys):
    from jobs.runner import run_job
    from jobs.smoke import SmokeConfig
    out = tmp_path / "out"

    def run(job):
        shutil.rmtree(out)
        out.write_text("a file where the output folder was")  # summary.json cannot be written now
        raise RuntimeError("the job's own error")

    assert run_job("smoke", SmokeConfig, run, ["--master", "local[1]", "--output", str(out)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    failed = lines.index("smoke: failed: RuntimeError: the job's own error")
    assert lines[failed + 1].startswith("smoke: could not write summary.json: "), lines[failed:]
    assert out.read_text() == "a file where the output folder was"
    assert no_spark.stopped


def test_a_shutdown_that_raises_still_ends_with_the_jobs_error_line_and_raises_after_it(tmp_path, monkeypatch,
                                                                                        capsys):
    from jobs import runner
    from jobs.smoke import SmokeConfig

    class FailingStop(FakeSession):
        def stop(self):
            raise OSError("the JVM is gone")
    monkeypatch.setattr(runner, "_spark_session", lambda *args, **kw: FailingStop())

    def run(job):
        raise RuntimeError("the job's own error")
    with pytest.raises(OSError, match="the JVM is gone"):
        runner.run_job("smoke", SmokeConfig, run, ["--master", "local[1]", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "smoke: failed: RuntimeError: the job's own error", err[-5:]
    assert any("OSError: the JVM is gone" in line for line in err)  # its traceback, before the job's line


def test_an_in_process_run_leaves_logging_signals_and_environment_as_they_were(tmp_path, monkeypatch, no_spark):
    from jobs.runner import run_job
    from jobs.smoke import SmokeConfig
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a plain script: nothing configured logging yet
    monkeypatch.setattr(root, "level", logging.WARNING)
    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    seen = {}

    def run(job):  # what the run sees: a log handler, the SIGTERM handler that unwinds, Spark's variables
        seen.update(handlers=list(root.handlers), level=root.level, sigterm=signal.getsignal(signal.SIGTERM))
        raise RuntimeError("stop here")

    try:  # a loopback master: the runner sets SPARK_LOCAL_IP for the session
        code = run_job("smoke", SmokeConfig, run, ["--master", "spark://127.0.0.1:7077", "--output",
                                                   str(tmp_path / "out")])
        assert code == 1
        assert len(seen["handlers"]) == 1 and seen["level"] == logging.INFO
        assert seen["sigterm"] not in (signal.SIG_DFL, previous)
        assert root.handlers == [] and root.level == logging.WARNING
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert "SPARK_LOCAL_IP" not in os.environ
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_configured_jvm_options_reach_the_driver_and_the_executors_and_none_when_empty():
    from dataclasses import replace
    from types import SimpleNamespace
    from conf import load_cluster
    from jobs.runner import spark_settings
    cluster = load_cluster()
    assert cluster.jvm_options == "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"  # conf/cluster.yaml's default
    settings = spark_settings(SimpleNamespace(cluster=cluster), 3, "127.0.0.1", False)
    assert settings["spark.driver.extraJavaOptions"] == settings["spark.executor.extraJavaOptions"] \
        == cluster.jvm_options
    assert settings["spark.cores.max"] == "3" and settings["spark.driver.host"] == "127.0.0.1"
    bare = spark_settings(SimpleNamespace(cluster=replace(cluster, jvm_options="")), 3, None, False)
    assert not {"spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions", "spark.driver.host"} & set(bare)


@pytest.mark.parametrize("extra, said", [
    (["--master", "spark://127.0.0.1:1"], "cluster.hdfs=embedded starts an HDFS beside the embedded mini-cluster"),
    (["--resume"], "cluster.hdfs=embedded: --resume is not possible"),
])
def test_an_embedded_hdfs_that_cannot_work_is_refused_before_anything_starts(tmp_path, extra, said):
    out = tmp_path / "out"
    if "--resume" in extra:  # a run to resume exists: the refusal is the embedded HDFS's, not --resume's
        out.mkdir()
        from conf import CONF_DIR, dump, load
        from jobs.smoke import SmokeConfig
        (out / "config.yaml").write_text(dump(load(SmokeConfig, str(CONF_DIR / "smoke.yaml"), None,
                                                   ["cluster.hdfs=embedded"]), case="smoke", preset=None))
    before = files(tmp_path)
    proc = smoke("--output", str(out), "--set", "cluster.hdfs=embedded", *extra)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {said}"), proc.stderr
    assert files(tmp_path) == before


def test_an_embedded_hdfs_needs_a_local_output():
    from types import SimpleNamespace
    from dataclasses import replace
    from conf import ConfigError, load_cluster
    from jobs.runner import check_embedded_hdfs
    cfg = SimpleNamespace(cluster=replace(load_cluster(), hdfs="embedded"))
    with pytest.raises(ConfigError, match="--output must be a local folder .* got hdfs://nn:9000/x"):
        check_embedded_hdfs(cfg, "hdfs://nn:9000/x", None, False)
    check_embedded_hdfs(cfg, "file:///tmp/x", None, False)  # the embedded default: accepted
    check_embedded_hdfs(SimpleNamespace(cluster=load_cluster()), "hdfs://nn:9000/x", "spark://h:7077", True)


def test_own_address_is_an_address_this_machine_can_bind_and_nothing_else():
    from jobs.runner import own_address
    assert own_address("127.0.0.1") == "127.0.0.1"
    assert own_address("localhost") == "127.0.0.1"
    assert own_address("198.19.255.254") is None  # in the hosts' range, on no interface of this machine
    assert own_address("0.0.0.0") is None           # binds, but is no address a host can reach
    assert own_address("no-such-host.invalid") is None


OURS = sys.executable  # the hosts share this machine's files: executors run the driver's interpreter


@pytest.mark.parametrize("preset, master_is_ours, expected", [
    ({}, True, ("198.18.9.1", "198.18.9.1", OURS, None)),                     # the bridge of the hosts
    ({"TFOS_SERVER_HOST": "198.18.9.7", "PYSPARK_PYTHON": "/opt/py/bin/python"}, True,
     ("198.18.9.1", "198.18.9.7", "/opt/py/bin/python", None)),               # the user's wins
    ({}, False, (None, None, None, None)),                                      # a master on another machine
])
def test_a_master_on_another_address_of_this_machine_makes_the_driver_bind_that_address(
        tmp_path, monkeypatch, no_spark, preset, master_is_ours, expected):
    """The mini-cluster's hosts reach the machine only on the bridge's address, where the master binds: the
    driver and the reservation server bind it too (no hand-set variables), the roles' address stays theirs."""
    from jobs import runner
    from jobs.smoke import SmokeConfig
    for key in ("SPARK_LOCAL_IP", "TFOS_SERVER_HOST", "PYSPARK_PYTHON"):
        monkeypatch.delenv(key, raising=False)
    for key, value in preset.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(runner, "own_address", lambda host: host if master_is_ours else None)
    seen = {}

    def run(job):
        seen["env"] = (os.environ.get("SPARK_LOCAL_IP"), os.environ.get("TFOS_SERVER_HOST"),
                       os.environ.get("PYSPARK_PYTHON"), job.node_host)

    assert runner.run_job("smoke", SmokeConfig, run, ["--master", "spark://198.18.9.1:7077",
                                                      "--output", str(tmp_path / "out")]) == 0
    assert seen["env"] == expected
    assert (os.environ.get("SPARK_LOCAL_IP"), os.environ.get("TFOS_SERVER_HOST"), os.environ.get("PYSPARK_PYTHON")) \
        == (None, preset.get("TFOS_SERVER_HOST"), preset.get("PYSPARK_PYTHON"))  # as before the run
