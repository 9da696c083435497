"""The TFoS adapter's error paths on the real mini-cluster (1 ps + 1 worker, InputMode.SPARK), through
the job contract: feeding that fails on an executor surfaces the task's own error, roles that never
report make shutdown fail within its bound, naming them, with no process left behind, and a ps still
finishing its work when told to stop hands in its result."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import ROOT, leftovers

DRIVER = textwrap.dedent("""
    import sys, time
    from distributed import tfos
    from jobs.runner import run_job
    from jobs.smoke import SmokeConfig

    SCENARIO = sys.argv[1]

    def role(args, ctx):
        if ctx.job_name == "ps":
            while not ctx.should_stop():
                time.sleep(0.2)
            if args["scenario"] == "late_ps":
                time.sleep(4)  # still writing its last checkpoint when it is told to stop
            return {"finished": True}
        if args["scenario"] == "late_ps":
            return {}
        if args["scenario"] == "silent":
            time.sleep(3600)  # never reads its feed, never reports
        feed = ctx.data_feed()
        while not feed.should_stop():
            feed.next_batch(10)
        return {}

    def bad_record(x):
        if x == 57:
            raise ValueError("record 57 cannot be fed")
        return x

    def run(job):
        mode = "tensorflow" if SCENARIO == "late_ps" else "spark"
        cluster = tfos.run(job.sc, role, {"scenario": SCENARIO}, tfos.Roles(ps=1, workers=1), input_mode=mode,
                           node_host=job.node_host, secret=job.secret, reservation_timeout_s=120)
        try:
            if SCENARIO == "feed":
                cluster.train(job.sc.parallelize(range(100), 2).map(bad_record), feed_timeout_s=600)
        except BaseException:
            cluster.abort()
            raise
        return {"results": cluster.shutdown(timeout_s=20)}

    # InputMode.SPARK runs the roles in the background of reused Python workers (as jobs/smoke.py asks);
    # late_ps needs its task's process to die with the task, so it keeps fresh workers.
    sys.exit(run_job("smoke", SmokeConfig, run, sys.argv[2:], reuse_workers=SCENARIO != "late_ps"))
""")


def drive(cluster, scenario: str, out) -> subprocess.CompletedProcess:
    # As many executors as the driver's roles (ps + 1 worker): TFoS's shutdown job runs on every executor.
    return subprocess.run([sys.executable, "-c", DRIVER, scenario, "--preset", "tiny", "--output", str(out),
                           "--master", cluster.state.master_url, "--set", f"cluster.run_dir={cluster.run_dir}",
                           "--set", "roles.workers=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"))


def test_a_feed_that_fails_on_an_executor_fails_the_job_with_the_tasks_error(minicluster, tmp_path):
    proc = drive(minicluster, "feed", tmp_path / "out")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["error"] == "ValueError: record 57 cannot be fed", summary["error"][:2000]
    assert proc.stderr.rstrip().splitlines()[-1] == "smoke: failed: ValueError: record 57 cannot be fed"
    assert leftovers(minicluster) == []


@pytest.mark.timeout(400 + 60)
def test_roles_that_never_report_fail_shutdown_within_its_bound_by_name(minicluster, tmp_path):
    proc = drive(minicluster, "silent", tmp_path / "out")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    error = json.loads((tmp_path / "out" / "summary.json").read_text())["error"]
    # Whether the stopping thread is still inside its last Spark job at the bound is a matter of timing;
    # either way both silent roles are named and nothing waits past the bound.
    assert error in ("RoleFailed: no result from ps:0, worker:0",
                     "RoleFailed: roles still running after 20s; no result from ps:0, worker:0"), error
    assert leftovers(minicluster) == []


def test_a_ps_still_finishing_when_told_to_stop_hands_in_its_result(minicluster, tmp_path):
    # TFoS ends a ps task as soon as its control queue is told to stop, and the role's process dies
    # with its task (no reused Python workers here): the stop signal must come first, the result next.
    proc = drive(minicluster, "late_ps", tmp_path / "out")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "summary.json").read_text())["results"]
    assert results["ps:0"]["finished"] is True and results["worker:0"] == {}, results
    assert leftovers(minicluster) == []
