"""The TFoS smoke job on the real mini-cluster: 1 ps + 2 workers, InputMode.SPARK, 10,000 records."""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import psutil
import pytest

from rdd_io import storage

from .conftest import ROOT, WORKERS, hdfs_possible, leftovers, run_job


def consumed_exactly_once(summary: dict, out: str, records: int) -> None:
    """Every record fed reached exactly one worker, both workers were fed, and the ps's address is its own."""
    assert summary["status"] == "ok"
    assert summary["records_fed"] == records
    workers = {k: v for k, v in summary["roles"].items() if k.startswith("worker:")}
    assert sorted(workers) == ["worker:0", "worker:1"]
    assert sum(w["count"] for w in workers.values()) == records
    assert sum(w["sum"] for w in workers.values()) == records * (records - 1) // 2
    assert all(w["count"] > 0 for w in workers.values()), "both workers should have been fed"
    ps = summary["roles"]["ps:0"]
    assert summary["ps_addresses"] == [ps["address"]]
    assert ps["bound_port"] == int(summary["ps_addresses"][0].rsplit(":", 1)[1])
    assert storage.exists(storage.join(out, "config.yaml"))


def test_missing_roles_are_named_on_reservation_timeout(minicluster, tmp_path):
    out = tmp_path / "short"
    # One role more than the cluster has workers: that role can never get an executor.
    proc = run_job("smoke.py", "--preset", "tiny", "--master", minicluster.state.master_url,
                   "--set", f"cluster.run_dir={minicluster.run_dir}",
                   "--output", str(out), "--set", f"roles.workers={WORKERS}",
                   "--set", "cluster.reservation_timeout_s=20", "--set", "cluster.start_timeout_s=5")
    assert proc.returncode == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    missing = summary["error"].split("Missing: ", 1)[1].split(". ", 1)[0]
    # The role without an executor is named; on a loaded machine others may not have registered yet.
    assert f"worker:{WORKERS - 1} (executor {WORKERS})" in missing, summary["error"]
    assert f"{WORKERS} executor(s) for {WORKERS + 1} roles" in summary["error"], summary["error"]
    assert leftovers(minicluster) == []


def _run_dir_processes(run_dir) -> list[int]:
    """The Spark daemons logging under run_dir and the HDFS daemons whose configuration is there."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("SPARK_LOG_DIR", "").startswith(str(run_dir)) or \
                    any(str(run_dir) in arg for arg in p.cmdline()):
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def test_embedded_cluster_and_hdfs_are_stopped_on_ctrl_c_and_the_run_copied_back(tmp_path):
    """cluster.hdfs=embedded: the job's own HDFS beside its own mini-cluster; Ctrl-C stops both by pid and the
    run's tree (config.yaml, summary.json), written on that HDFS, is copied to --output first."""
    if not hdfs_possible():
        pytest.skip("Maven (mvn) is needed to fetch Hadoop's jars for the embedded HDFS")
    run_dir = tmp_path / "embedded"
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "smoke.py"), "--preset", "tiny",
                             "--output", str(tmp_path / "out"), "--set", f"cluster.run_dir={run_dir}",
                             "--set", "feed.epochs=50", "--set", "cluster.hdfs=embedded"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seen = []
    try:
        for line in proc.stdout:  # wait until the roles are up and feeding has started
            seen.append(line)
            if "TFoS roles up" in line:
                break
        hdfs_uri = re.search(r"embedded HDFS up at (hdfs://\S+)", "".join(seen))
        assert hdfs_uri, "".join(seen)[-3000:]
        assert len(_run_dir_processes(run_dir)) >= 4 + 3, "the embedded cluster and HDFS should be running"
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(seen)[-3000:] + (rest or "")[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "failed" and "interrupted" in summary["error"]
    assert f"outputs under {hdfs_uri.group(1)}/smoke" in "".join(seen)
    assert (tmp_path / "out" / "config.yaml").exists()
    assert _run_dir_processes(run_dir) == []
    # The finished run's folder is the owner's only and keeps its logs but not its secret.
    folders = [p for p in run_dir.iterdir() if p.is_dir()]
    assert folders and all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in folders)
    holding = [str(p) for p in run_dir.rglob("*") if p.is_file() and re.search(rb"[0-9a-f]{64}", p.read_bytes())]
    assert holding == []


def test_every_record_consumed_exactly_once_through_spark_submit(minicluster, tiny_uri_root, tmp_path):
    """The job as a user submits it to a standing cluster, --output on the session's HDFS (in CI; a local
    folder without Maven). `python jobs/smoke.py` takes the same arguments: the other tests here run it so."""
    from distributed.minicluster import spark_home
    out = f"{tiny_uri_root}-spark-submit/smoke"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP=minicluster.host)  # the driver's JVM starts first: the master's side (loopback, bridge)
    proc = subprocess.run([str(spark_home() / "bin" / "spark-submit"), "--master", minicluster.state.master_url,
                           str(ROOT / "jobs" / "smoke.py"), "--preset", "tiny", "--output", out,
                           "--set", f"cluster.run_dir={minicluster.run_dir}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    if os.environ.get("CI"):
        assert out.startswith("hdfs://"), out
    summary = json.loads(storage.read_text(storage.join(out, "summary.json")))
    assert summary["master"] == minicluster.state.master_url
    assert summary["records_consumed"] == 10_000 and summary["exactly_once"] is True
    consumed_exactly_once(summary, out, 10_000)
    assert leftovers(minicluster) == []


FEED_TIMEOUT_S = 3600  # far beyond the run's own limit below: only the adapter's watch can end it in time
RUN_LIMIT_S = 420


def test_a_role_that_raises_fails_the_job_fast_and_by_name(minicluster, tmp_path):
    out = tmp_path / "failing"
    try:
        proc = run_job("smoke.py", "--preset", "tiny", "--master", minicluster.state.master_url,
                       "--set", f"cluster.run_dir={minicluster.run_dir}", "--output", str(out),
                       "--set", "roles.fail=worker:1", "--set", f"feed.feed_timeout_s={FEED_TIMEOUT_S}",
                       timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        # Without the adapter's watch, feeding only stops at the feed timeout (and is then retried).
        pytest.fail(f"still running {RUN_LIMIT_S}s after worker:1 raised: the failure did not stop the feeding")
    assert proc.returncode == 1, proc.stdout[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert "worker:1 failed" in summary["error"], summary["error"][:2000]
    assert "failure injected into worker:1" in summary["error"]
    assert leftovers(minicluster) == []
