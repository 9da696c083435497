"""Finding a run's processes by their environment tag and stopping them by pid."""
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from distributed import processes

pytestmark = pytest.mark.unit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
DEAF = [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                              "print('ready', flush=True); time.sleep(60)"]


def _spawn(cmd, run_id=None, env_extra=None, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != processes.RUN_TAG} | (env_extra or {})
    if run_id is not None:
        env[processes.RUN_TAG] = run_id
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, **kw)


def _wait_tagged(run_id: str, count: int, timeout_s: float = 10) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = processes.tagged(run_id)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _kill(*popens: subprocess.Popen) -> None:
    for p in popens:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=5)


@pytest.fixture
def run_id():
    return uuid.uuid4().hex


def test_tagged_finds_exactly_the_tagged_processes_and_stop_ends_them(run_id):
    other_run = uuid.uuid4().hex
    tagged_children = [_spawn(SLEEPER, run_id) for _ in range(2)]
    shell = _spawn(["sh", "-c", "sleep 60 & wait"], run_id)
    untagged = _spawn(SLEEPER)
    neighbour = _spawn(SLEEPER, other_run)  # another run's tag must not match either
    try:
        found = _wait_tagged(run_id, 4)
        pids = {p.pid for p in found}
        grandchildren = {c.pid for c in psutil.Process(shell.pid).children()}
        assert len(grandchildren) == 1
        assert pids == {tagged_children[0].pid, tagged_children[1].pid, shell.pid} | grandchildren
        assert os.getpid() not in pids

        started = time.monotonic()
        stopped = processes.stop(found, grace_s=120)
        assert set(stopped) == pids
        assert time.monotonic() - started < 60  # all obeyed SIGTERM: no wait for the (long) grace period
        # psutil reaps our own children and records how they ended (Popen then sees them as gone)
        by_pid = {p.pid: p for p in found}
        for child in (*tagged_children, shell):
            assert by_pid[child.pid].returncode == -signal.SIGTERM
        assert not any(processes.alive(pid) for pid in pids)
        assert processes.tagged(run_id) == []
        assert processes.wait_gone(run_id, timeout_s=1) == []
        assert untagged.poll() is None and neighbour.poll() is None
        assert [p.pid for p in processes.tagged(other_run)] == [neighbour.pid]
    finally:
        _kill(*tagged_children, shell, untagged, neighbour)


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(run_id):
    deaf = _spawn(DEAF, run_id, stdout=subprocess.PIPE, text=True)
    polite = _spawn(SLEEPER, run_id)
    try:
        assert deaf.stdout.readline().strip() == "ready"  # its SIGTERM handler is in place
        found = _wait_tagged(run_id, 2)
        assert {p.pid for p in found} == {deaf.pid, polite.pid}
        started = time.monotonic()
        stopped = processes.stop(found, grace_s=0.5)
        elapsed = time.monotonic() - started
        assert set(stopped) == {deaf.pid, polite.pid}
        assert elapsed >= 0.5  # the grace period was given; SIGKILL came after it (returncode below)
        by_pid = {p.pid: p for p in found}
        assert by_pid[deaf.pid].returncode == -signal.SIGKILL
        assert by_pid[polite.pid].returncode == -signal.SIGTERM
        assert not processes.alive(deaf.pid) and not processes.alive(polite.pid)
    finally:
        _kill(deaf, polite)
        deaf.stdout.close()


def test_stop_skips_processes_that_already_exited(run_id):
    child = _spawn(SLEEPER, run_id)
    try:
        proc = _wait_tagged(run_id, 1)[0]
        child.kill()
        child.wait(timeout=5)
        assert processes.stop([proc], grace_s=0.5) == []
    finally:
        _kill(child)


def test_alive_checks_the_create_time():
    child = _spawn(SLEEPER)
    try:
        created = psutil.Process(child.pid).create_time()
        assert processes.alive(child.pid)
        assert processes.alive(child.pid, created)
        assert not processes.alive(child.pid, created - 3600)  # same pid, another process
        assert not processes.alive(child.pid, created + 5)
    finally:
        _kill(child)
    assert not processes.alive(child.pid)  # reaped
    assert not processes.alive(child.pid, created)


def test_alive_is_false_for_a_zombie():
    child = _spawn([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not processes.alive(child.pid)  # exited, not yet reaped
    finally:
        child.wait(timeout=5)


def test_nearest_ancestor_is_the_closest_process_of_that_name():
    me = psutil.Process()
    probe = ("from distributed import processes; "
             f"print(processes.nearest_ancestor({me.name()!r}), processes.nearest_ancestor('no-such-process'))")
    # child python -> bash -> this process: the child's nearest ancestor of this process's name is this one
    out = subprocess.run(["bash", "-c", f'{sys.executable} -c "{probe}"; true'], capture_output=True,
                         text=True, timeout=60, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.split() == [str(me.pid), "None"]


def test_exit_with_ends_a_process_when_its_anchor_exits_not_when_its_parent_does():
    """The Spark case: a role forked by a Python worker must outlive that worker (stopped when idle)
    and die with the executor above it. Here: anchor = the executor, middle = the Python worker."""
    anchor = _spawn(SLEEPER)
    child_code = ("import sys, time; from distributed import processes; "
                  f"processes.exit_with({anchor.pid}); print('ready', flush=True); time.sleep(60)")
    middle_code = ("import subprocess, sys; "
                   f"c = subprocess.Popen([sys.executable, '-c', {child_code!r}], stdout=sys.stdout); "
                   "print(c.pid, flush=True)")
    middle = _spawn([sys.executable, "-c", middle_code], stdout=subprocess.PIPE, text=True,
                    env_extra={"PYTHONPATH": os.getcwd()})
    child_pid = int(middle.stdout.readline())
    try:
        assert middle.stdout.readline().strip() == "ready"
        middle.wait(10)  # the parent is gone ...
        time.sleep(1.0)
        assert processes.alive(child_pid)  # ... and the child lives on
        anchor.kill()
        anchor.wait(10)
        deadline = time.monotonic() + 10
        while processes.alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not processes.alive(child_pid), "the child outlived its anchor"
    finally:
        _kill(anchor, middle)
        if processes.alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)
