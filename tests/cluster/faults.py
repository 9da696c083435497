"""Killing a job's role for real: run a job in the background, wait for a file it writes, kill a role's
process by the pid it recorded (distributed.pidfile), and wait for the job to end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from distributed import pidfile

from .conftest import ROOT


def start_job(script: str, *args: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    """`python jobs/<script> ...` in the background, like conftest.run_job, output to `log`; `env`
    instead of this process's environment."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, str(ROOT / "jobs" / script), *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until `path` exists; fails if the job ends first or the timeout passes (a hang guard)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, f"the job ended (rc {proc.returncode}) before {path} appeared:\n" + tail(log)
        assert time.monotonic() < deadline, f"{path} did not appear:\n" + tail(log)
        time.sleep(0.2)


def kill_role(pids: Path, role: str) -> int:
    """SIGKILL the process `role` recorded under `pids`; returns its pid."""
    pid = pidfile.read(str(pids), role)["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


def finish(proc: subprocess.Popen, log: Path, timeout_s: float) -> int:
    """The job's exit status, waiting at most timeout_s (a hang guard)."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the job did not end within {timeout_s:.0f}s:\n" + tail(log)) from None
    return proc.returncode


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def weights(path) -> dict:
    """Every dataset of an HDF5 weights file (a path or a file object), by its path inside the file."""
    import h5py
    out = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:]
