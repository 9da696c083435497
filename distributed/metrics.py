"""Measured resource figures per process: TCP bytes, CPU, wait and memory, sampled over a run.

Everything here is read from the running processes, never computed from a model of them:

- bytes in / out: the kernel's per-socket tcp_info counters ``bytes_received`` and ``bytes_sent`` less
  ``bytes_retrans`` (each payload byte once; retransmissions happen even on loopback and are kept in
  parse_ss's rows) as printed by ``ss -tinpeH`` (iproute2), summed over every TCP socket a process
  owns (loopback or not).
  A socket owned by several processes (inherited across fork) counts once per role, and for each role
  that owns it. Bytes a socket moves between the last sample and its close are not seen.
- CPU %: user + system time of the process and all its descendants over the interval, in percent of one
  core (so 200 means two busy cores), as ``top`` reports it.
- wait: the share of time the process's threads were ready to run but waiting, in percent of one core:
  **runqueue wait** (``/proc/<pid>/task/<tid>/schedstat``, second field: time runnable but not on a
  CPU) plus **I/O wait** (``delayacct_blkio_ticks``, field 42 of ``/proc/<pid>/task/<tid>/stat``: time
  blocked on block I/O). Together they are the honest per-process form of the thesis's "CPU wait": a
  system-wide iowait figure cannot be split by process. I/O wait needs kernel delay accounting
  (``kernel.task_delayacct=1``); where it is off the ``io_wait_percent`` column holds None and
  ``wait_percent`` is the runqueue part alone (``meta["io_wait_measured"]`` says which).
- memory: resident set size summed over the process and its descendants (shared pages count per process).

Descendants are included because TensorFlowOnSpark runs a role in a child forked from the Spark Python
worker: give the sampler the pid of the role's own process (or of the Python worker that forks it) and
the children are found at every sample.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time

import psutil

SS_ARGS = ("-tinpeH",)  # TCP, internal tcp_info, owning processes, socket inode, no header
RATE_COLUMNS = ("bytes_in_per_s", "bytes_out_per_s", "cpu_percent", "wait_percent", "runq_wait_percent",
                "io_wait_percent", "rss_bytes", "n_procs")
CUMULATIVE_COLUMNS = ("bytes_in", "bytes_out")
COLUMNS = ("t_s",) + CUMULATIVE_COLUMNS + RATE_COLUMNS

_OWNER = re.compile(r"pid=(\d+),fd=(\d+)")
_INO = re.compile(r"\bino:(\d+)")


class ToolMissing(RuntimeError):
    pass


# ---------------------------------------------------------------- sockets (ss)
def _counter(info: str, name: str) -> int | None:
    found = re.search(rf"\b{name}:(\d+)", info)
    return int(found.group(1)) if found else None


def _socket_rows(header: str, info: str) -> list[dict]:
    fields = header.split()
    if len(fields) < 5:
        raise ValueError(f"ss output: cannot read socket line {header!r}")
    retrans = _counter(info, "bytes_retrans") or 0
    sent = _counter(info, "bytes_sent")
    acked = _counter(info, "bytes_acked")
    if sent is None and acked is not None and acked > 1:
        sent = acked  # kernels before 4.19 print no bytes_sent; acked data is the closest count
    elif sent is not None:
        sent -= retrans  # tcp_info's bytes_sent counts retransmitted bytes again (seen even on loopback)
    ino = _INO.search(header)
    base = {"state": fields[0], "local": fields[3], "peer": fields[4], "ino": int(ino.group(1)) if ino else 0,
            "bytes_sent": sent or 0, "bytes_received": _counter(info, "bytes_received") or 0,
            "bytes_retrans": retrans}
    # sockets without an owner (orphans in FIN-WAIT / TIME-WAIT) cannot be attributed: left out
    return [dict(base, pid=int(pid), fd=int(fd)) for pid, fd in _OWNER.findall(header)]


def parse_ss(text: str) -> list[dict]:
    """Rows of ``ss -tinpeH`` (or -tinpH): one per (socket, owning pid) with pid, fd, state, local, peer,
    ino (0 when not printed), bytes_sent (payload, retransmissions excluded), bytes_received and
    bytes_retrans. A socket is a line at column 0 followed by an indented tcp_info line (absent or
    blank for some states)."""
    rows: list[dict] = []
    header = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            if header is not None:
                rows.extend(_socket_rows(header, line))
                header = None
            continue
        if header is not None:
            rows.extend(_socket_rows(header, ""))
        header = line
    if header is not None:
        rows.extend(_socket_rows(header, ""))
    return rows


def run_ss() -> str:
    """Raw ``ss -tinpeH`` text. Only sockets of processes this user may inspect show their owner."""
    exe = shutil.which("ss")
    if exe is None:
        raise ToolMissing("ss not found on PATH: per-socket TCP byte counters are read with `ss -tin`; "
                          "install the iproute2 package (Debian/Ubuntu: apt-get install iproute2)")
    done = subprocess.run([exe, *SS_ARGS], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{exe} {' '.join(SS_ARGS)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _socket_key(row: dict):
    return row["ino"] or (row["local"], row["peer"])


def socket_bytes(pids) -> dict[int, tuple[int, int]]:
    """pid -> (bytes_received, bytes_sent) summed over every TCP socket the pid owns now (0, 0 if none)."""
    wanted = {int(p) for p in pids}
    seen: dict[int, dict] = {p: {} for p in wanted}
    for row in parse_ss(run_ss()):
        if row["pid"] in wanted:  # one socket in two fds of the same pid counts once
            seen[row["pid"]][_socket_key(row)] = (row["bytes_received"], row["bytes_sent"])
    return {p: (sum(r for r, _ in s.values()), sum(w for _, w in s.values())) for p, s in seen.items()}


# ---------------------------------------------------------------- wait (/proc)
def io_wait_measured() -> bool:
    """Kernel delay accounting on (I/O wait counters move). Without the sysctl (kernels before 5.14)
    it may have been enabled at boot, so the counters are read and trusted."""
    try:
        with open("/proc/sys/kernel/task_delayacct") as fh:
            return fh.read().strip() == "1"
    except OSError:
        return True


def thread_waits(pid: int) -> dict[int, tuple[float, float]]:
    """tid -> (runqueue wait s, block I/O wait s), cumulative since each thread started."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                runq_ns = int(fh.read().split()[1])
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()  # comm may hold spaces; fields resume at 3
            out[int(tid)] = (runq_ns / 1e9, int(rest[39]) / tick)  # field 42: delayacct_blkio_ticks
        except (OSError, IndexError, ValueError):
            continue  # the thread ended while being read
    return out


def increment(before: dict, now: dict) -> float:
    """Growth of a set of cumulative counters between two readings. A key new since `before` counts whole
    (it started within the interval); a key gone is ignored; a counter that went down was reused, so its
    new value is taken."""
    total = 0.0
    for key, value in now.items():
        old = before.get(key, 0)
        total += value - old if value >= old else value
    return total


def cpu_wait(pid: int, interval_s: float = 0.5) -> dict[str, float]:
    """Wait of one process (all its threads, not its children) over interval_s, as fractions of wall
    time (1.0 = one thread waiting the whole interval): runqueue, io and their sum, total."""
    before, t0 = thread_waits(pid), time.monotonic()
    time.sleep(interval_s)
    now, dt = thread_waits(pid), time.monotonic() - t0
    runq = increment({k: v[0] for k, v in before.items()}, {k: v[0] for k, v in now.items()}) / dt
    io = increment({k: v[1] for k, v in before.items()}, {k: v[1] for k, v in now.items()}) / dt
    return {"runqueue": runq, "io": io, "total": runq + io}


# ---------------------------------------------------------------- sampling
def _alive(root: psutil.Process) -> bool:
    try:
        return root.is_running() and root.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _snapshot(root: psutil.Process, table: list[dict]) -> dict | None:
    """Cumulative counters of a process tree now, keyed so that increment() can difference them."""
    try:
        if not _alive(root):
            return None
        procs = [root] + root.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    snap = {"cpu": {}, "runq": {}, "io": {}, "in": {}, "out": {}, "rss": 0, "n": 0}
    for proc in procs:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                snap["cpu"][(proc.pid, proc.create_time())] = times.user + times.system
                snap["rss"] += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        snap["n"] += 1
        for tid, (runq, io) in thread_waits(proc.pid).items():
            snap["runq"][(proc.pid, tid)] = runq
            snap["io"][(proc.pid, tid)] = io
    pids = {p.pid for p in procs}
    for row in table:
        if row["pid"] in pids:
            snap["in"][_socket_key(row)] = row["bytes_received"]
            snap["out"][_socket_key(row)] = row["bytes_sent"]
    return snap


class Sampler:
    """Background thread sampling each role's process tree every interval_s seconds.

    ``stop()`` returns {role: {column: list}} with the COLUMNS above, one entry per sample (t_s counts
    from start()); bytes_in/bytes_out are cumulative since start(), the *_per_s columns are rates over
    the interval before each sample. A role whose process has ended stops being sampled; ``meta``
    records when (``vanished``), the definition of wait, and any sampling errors.
    """

    def __init__(self, pids_by_role: dict[str, int], interval_s: float = 0.5, sockets: bool = True):
        if interval_s <= 0:
            raise ValueError(f"Sampler: interval_s must be > 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self.sockets = sockets
        self._roots = {}
        for role, pid in pids_by_role.items():
            try:
                self._roots[role] = psutil.Process(int(pid))
            except psutil.NoSuchProcess:
                raise ValueError(f"Sampler: role {role!r}: no process with pid {pid}") from None
        self._series = {role: {c: [] for c in COLUMNS} for role in self._roots}
        self._last: dict[str, dict] = {}
        self._totals = {role: [0.0, 0.0] for role in self._roots}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._t_prev = 0.0
        self.meta = {"interval_s": self.interval_s, "pids": {r: p.pid for r, p in self._roots.items()},
                     "io_wait_measured": io_wait_measured(), "vanished": {}, "errors": [],
                     "host_cores": psutil.cpu_count(),  # for CPU as a share of the whole host
                     "wait_definition": "runqueue wait + block I/O wait of all threads, % of one core"}

    @classmethod
    def for_self(cls, role: str, interval_s: float = 0.5) -> "Sampler":
        """Sample the calling process and its children (run inside a role on an executor and send the
        series back as JSON). The sampling thread's own small CPU use is included."""
        return cls({role: os.getpid()}, interval_s)

    def start(self) -> "Sampler":
        if self._thread is not None:
            raise RuntimeError("Sampler already started")
        table = parse_ss(run_ss()) if self.sockets else []  # fails here, early, if ss is missing
        self._t0 = self._t_prev = time.monotonic()
        for role, root in self._roots.items():
            snap = _snapshot(root, table)
            if snap is None:
                self.meta["vanished"][role] = 0.0
            else:
                self._last[role] = snap
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample_safely()

    def _sample_safely(self) -> None:
        try:
            self._sample()
        except Exception as exc:  # a transient failure must not lose the series gathered so far
            self.meta["errors"].append(f"t={time.monotonic() - self._t0:.2f}s: {type(exc).__name__}: {exc}")

    def stop(self) -> dict[str, dict[str, list]]:
        """Stop the thread, take a last sample (unless one was just taken) and return the series."""
        if self._thread is None:
            raise RuntimeError("Sampler was not started")
        self._stop.set()
        self._thread.join()
        now = time.monotonic()
        if now - self._t_prev > self.interval_s / 4:
            self._sample_safely()
        else:  # too soon for a meaningful rate, but a role that exited since the last sample still counts
            for role in [r for r in self._last if r not in self.meta["vanished"]]:
                if not _alive(self._roots[role]):
                    self.meta["vanished"][role] = round(now - self._t0, 3)
        return self.series()

    def samples(self) -> int:
        """Samples taken so far (of the role sampled least)."""
        return min((len(cols["t_s"]) for cols in self._series.values()), default=0)

    def series(self) -> dict[str, dict[str, list]]:
        return {role: {c: list(v) for c, v in cols.items()} for role, cols in self._series.items()}

    def _sample(self) -> None:
        now = time.monotonic()
        live = [r for r in self._last if r not in self.meta["vanished"]]
        if not live:
            return
        table = parse_ss(run_ss()) if self.sockets else []
        dt = max(now - self._t_prev, 1e-9)
        for role in live:
            snap = _snapshot(self._roots[role], table)
            if snap is None:
                self.meta["vanished"][role] = round(now - self._t0, 3)
                continue
            self._append(role, self._last[role], snap, now - self._t0, dt)
            self._last[role] = snap
        self._t_prev = now

    def _append(self, role: str, old: dict, new: dict, t: float, dt: float) -> None:
        d_in, d_out = increment(old["in"], new["in"]), increment(old["out"], new["out"])
        totals = self._totals[role]
        totals[0] += d_in
        totals[1] += d_out
        runq = 100.0 * increment(old["runq"], new["runq"]) / dt
        io = 100.0 * increment(old["io"], new["io"]) / dt if self.meta["io_wait_measured"] else None
        row = {"t_s": round(t, 4), "bytes_in": int(totals[0]), "bytes_out": int(totals[1]),
               "bytes_in_per_s": d_in / dt, "bytes_out_per_s": d_out / dt,
               "cpu_percent": 100.0 * increment(old["cpu"], new["cpu"]) / dt,
               "wait_percent": runq + (io or 0.0), "runq_wait_percent": runq, "io_wait_percent": io,
               "rss_bytes": int(new["rss"]), "n_procs": new["n"]}
        for col, value in row.items():
            self._series[role][col].append(value)


# ---------------------------------------------------------------- summary (pure)
def counter_at(times: list[float], values: list[float], pause: list[float]) -> tuple[float, bool]:
    """A cumulative counter at the middle of a pause [start, middle, end] in which it does not move:
    (value, True) from the sample in the pause nearest the middle. Without a sample in the pause,
    (value interpolated linearly between the samples around the middle, False). The counter is 0
    before the first sample (the series starts at its sampler's start)."""
    start, t, end = pause
    inside = [(abs(x - t), v) for x, v in zip(times, values) if start <= x <= end]
    if inside:
        return float(min(inside)[1]), True
    before = [(x, v) for x, v in zip(times, values) if x <= t]
    after = [(x, v) for x, v in zip(times, values) if x > t]
    if not after:
        return float(before[-1][1]) if before else 0.0, False
    (x0, v0), (x1, v1) = before[-1] if before else (t, 0.0), after[0]
    return float(v0 + (v1 - v0) * (t - x0) / (x1 - x0)) if x1 > x0 else float(v1), False


def summarise(series: dict[str, dict[str, list]]) -> dict[str, dict]:
    """role -> {samples, duration_s, <cumulative>_total, <column>_mean, <column>_peak}. Means are
    weighted by each sample's interval (from t_s), so bytes_in_per_s_mean == bytes_in_total / duration_s;
    None values (unmeasured) are skipped, and a column with none measured gives None."""
    out = {}
    for role, cols in series.items():
        t = [float(x) for x in cols.get("t_s", [])]
        n = max((len(v) for v in cols.values()), default=0)
        weights = [b - a for a, b in zip([0.0] + t[:-1], t)] if len(t) == n else [1.0] * n
        row = {"samples": n, "duration_s": t[-1] if t else None}
        for col in CUMULATIVE_COLUMNS:
            if col in cols:
                row[f"{col}_total"] = cols[col][-1] if cols[col] else 0
        for col in RATE_COLUMNS:
            if col not in cols:
                continue
            pairs = [(float(v), w) for v, w in zip(cols[col], weights) if v is not None]
            total_w = sum(w for _, w in pairs)
            row[f"{col}_mean"] = (sum(v * w for v, w in pairs) / total_w) if pairs and total_w > 0 else None
            row[f"{col}_peak"] = max(v for v, _ in pairs) if pairs else None
        out[role] = row
    return out
