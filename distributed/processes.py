"""Find and stop the processes one run started, by pid.

Every process the mini-cluster starts carries the environment variable RUN_TAG=<run id>, and so do
their descendants (Spark executors, Python workers, TensorFlowOnSpark managers and roles), because a
child inherits its parent's environment. That tag finds a run's processes even after they were
re-parented, without matching on names.
"""
from __future__ import annotations

import os
import select
import signal
import threading
import time

import psutil

RUN_TAG = "SCIDL_RUN_ID"


def tagged(run_id: str) -> list[psutil.Process]:
    """Live processes whose environment carries RUN_TAG=run_id (never this process)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(RUN_TAG) == run_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop(procs: list[psutil.Process], grace_s: float = 10.0) -> list[int]:
    """SIGTERM, wait up to grace_s, then SIGKILL what is left. Returns the pids that were stopped."""
    procs = [p for p in procs if p.is_running()]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _, still = psutil.wait_procs(alive, timeout=5)
    if still:
        raise RuntimeError(f"processes survived SIGKILL: {[p.pid for p in still]}")
    return [p.pid for p in procs]


def alive(pid: int, create_time: float | None = None) -> bool:
    """True if `pid` runs and, when given, was created at `create_time` (not a recycled pid)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except psutil.NoSuchProcess:
        return False


def wait_gone(run_id: str, timeout_s: float = 15.0) -> list[int]:
    """Pids of the run still alive after waiting up to timeout_s for them to exit on their own."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = tagged(run_id)
        if not left or time.monotonic() > deadline:
            return [p.pid for p in left]
        time.sleep(0.5)


def nearest_ancestor(name: str, pid: int | None = None) -> int | None:
    """The pid of the closest ancestor of `pid` (default: this process) whose process name is `name`."""
    try:
        for proc in psutil.Process(pid or os.getpid()).parents():
            if proc.name() == name:
                return proc.pid
    except psutil.Error:
        pass
    return None


def exit_with(pid: int, poll_s: float = 1.0) -> threading.Thread:
    """SIGKILL this process as soon as process `pid` has exited (a daemon thread waits on it).

    PR_SET_PDEATHSIG only ties a process to its parent; this ties it to any process, e.g. the Spark
    executor JVM above the Python worker that forked it. Waits on a pidfd, which a recycled pid cannot
    fool; polls where the kernel has none."""
    def watch():
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            fd = None  # already gone
        except (AttributeError, OSError):  # Python or kernel without pidfd
            while alive(pid):
                time.sleep(poll_s)
            fd = None
        if fd is not None:  # poll, not select: a process with many files may get a pidfd above FD_SETSIZE
            waiter = select.poll()
            waiter.register(fd, select.POLLIN)
            waiter.poll()
        os.kill(os.getpid(), signal.SIGKILL)
    watcher = threading.Thread(target=watch, name=f"exit-with-{pid}", daemon=True)
    watcher.start()
    return watcher
