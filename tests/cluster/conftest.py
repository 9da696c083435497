"""A real Spark standalone mini-cluster on loopback, shared by the cluster tests, torn down by pid."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conf import load_cluster
from distributed import processes
from distributed.minicluster import MiniCluster
from jobs.runner import free_ports

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 5  # the land-cover roles need 5 executors; other jobs use fewer


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def minicluster(tmp_path_factory):
    cfg = load_cluster()
    master, ui, *worker_uis = free_ports(cfg.host, 2 + WORKERS)
    cluster = MiniCluster(replace(cfg, master_port=master, master_ui_port=ui),
                          tmp_path_factory.mktemp("minicluster"), workers=WORKERS)
    cluster.worker_ui_ports = worker_uis
    cluster.up()
    run_id = cluster.state.run_id
    try:
        yield cluster
    finally:
        cluster.down()
        assert processes.tagged(run_id) == [], "mini-cluster processes outlived `down`"


def cluster_daemons(cluster) -> set[int]:
    return set(cluster.state.pids.values())


def run_job(script: str, *args: str, timeout: float = 420, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a job the way a user does: `python jobs/<case>.py ...`, output captured."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "jobs" / script), *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def leftovers(cluster, timeout_s: float = 30) -> list[str]:
    """Processes of the cluster's run other than its master and workers, once they had time to exit."""
    import time
    deadline = time.monotonic() + timeout_s
    while True:
        extra = [p for p in processes.tagged(cluster.state.run_id) if p.pid not in cluster_daemons(cluster)]
        if not extra or time.monotonic() > deadline:
            return [f"{p.pid}: {' '.join(p.cmdline())[:160]}" for p in extra]
        time.sleep(1)
