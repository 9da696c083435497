"""Per-host figures of the mini-cluster's hosts, taken per machine as Ganglia takes them.

    python -m distributed.minicluster watch [--interval 1] [--samples N]   (the series as CSV on stdout)

A job run on a mini-cluster with hosts samples them the same way and writes hosts.csv beside its outputs,
with a per-host summary in summary.json (jobs/runner.py).

- bytes in / out: the kernel's counters of the machine's ends of host i's veth pairs, both its cards (its
  own and the one its TensorFlow servers use, hosts.py) summed, as Ganglia sums a machine's NICs
  (/sys/class/net/<veth>/statistics): what that end transmits, the host receives, and the reverse. Like a
  NIC's counters (and Ganglia's bytes_in / bytes_out) they count whole frames of every protocol, headers
  and acks included, so they exceed the sockets' payload bytes that metrics.py sums per process.
- CPU: the CPU time of the host's cgroup (cgroup v2 `cpu.stat` usage_usec, else v1 `cpuacct.usage`). The
  hosts share this machine's cores, so `cpu_percent_of_host` is of all of them (100 = every core busy)
  and `cpu_percent_of_core` of one (as metrics.py and top report a process).
- memory: resident set size summed over the processes in the host's cgroup (as metrics.py sums a role's).

A host's cgroup bears its namespace's name (scidl-host-<id>-<i>), under the machine's cgroup v2
hierarchy when that counts CPU, else under v1's cpuacct. The host's worker and DataNode enter it with
their namespace before they exec (hosts.in_netns); what they start inherits it. It is made with the
host's namespace and removed with it, and `sweep` removes those of clusters that died.
"""
from __future__ import annotations

import csv
import functools
import io
import os
import threading
import time
from pathlib import Path

MEANINGS = {  # hosts.csv's columns: the writer's order, and what jobs/output_schema.py declares
    "t_s": "seconds since the first sample",
    "host": "the host's network namespace (scidl-host-<id>-<i>)",
    "address": "the host's address",
    "bytes_in": "bytes the host received since `up` (whole frames, as a NIC counts them)",
    "bytes_out": "bytes the host sent since `up` (whole frames)",
    "bytes_in_per_s": "bytes per second received since the previous sample (empty in the first row)",
    "bytes_out_per_s": "bytes per second sent since the previous sample (empty in the first row)",
    "cpu_s": "CPU seconds of the host's cgroup since `up`",
    "cpu_percent_of_host": "CPU since the previous sample, % of all the machine's cores (the hosts share them)",
    "cpu_percent_of_core": "CPU since the previous sample, % of one core",
    "rss_bytes": "resident set size summed over the host's processes, bytes",
    "n_procs": "processes in the host's cgroup",
}
COLUMNS = tuple(MEANINGS)
RATE_COLUMNS = ("bytes_in_per_s", "bytes_out_per_s", "cpu_percent_of_host", "cpu_percent_of_core")


class CgroupError(RuntimeError):
    """A host's cgroup could not be made, read or removed."""


# -- pure parts ---------------------------------------------------------------------------------------
def parse_mounts(text: str) -> tuple[str, Path] | None:
    """The hierarchy host cgroups go under, from /proc/self/mounts: ("v2", mount) of cgroup2, else
    ("v1", mount) of the v1 hierarchy with cpuacct, else None."""
    v1 = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[2] == "cgroup2":
            return "v2", Path(fields[1])
        if fields[2] == "cgroup" and "cpuacct" in fields[3].split(",") and v1 is None:
            v1 = "v1", Path(fields[1])
    return v1


def cpu_seconds(version: str, text: str) -> float:
    """CPU time in seconds from a cgroup's v2 cpu.stat or v1 cpuacct.usage (nanoseconds)."""
    if version == "v1":
        return int(text.strip()) / 1e9
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    raise CgroupError(f"no usage_usec in cpu.stat: {text[:200]!r}")


def row(previous: dict | None, current: dict, start: float, cores: int) -> dict:
    """One row of a host's series (COLUMNS): `current`'s counters, time from `start`, and the rates since
    `previous` (None for the first sample: no rates yet)."""
    rated = rates(previous, current, cores) if previous else dict.fromkeys(RATE_COLUMNS)
    return {k: v for k, v in {**current, **rated, "t_s": current["t_s"] - start}.items() if k in COLUMNS}


def summarise(rows: list[dict], cores: int, roles: dict[str, str] | None = None) -> dict[str, dict]:
    """Per host, from its first row to its last: bytes in and out, CPU seconds, mean and peak CPU % of the
    host, peak RSS, and the roles whose address is the host's (`roles`: role -> address)."""
    by_host: dict[str, list[dict]] = {}
    for r in rows:
        by_host.setdefault(r["host"], []).append(r)
    out = {}
    for host, series in by_host.items():
        first, last = series[0], series[-1]
        span, cpu_s = last["t_s"] - first["t_s"], last["cpu_s"] - first["cpu_s"]
        peaks = [r["cpu_percent_of_host"] for r in series[1:] if r["cpu_percent_of_host"] is not None]
        out[host] = {"address": first["address"],
                     "roles": sorted(n for n, a in (roles or {}).items() if a == first["address"]),
                     "seconds": round(span, 3), "bytes_in": last["bytes_in"] - first["bytes_in"],
                     "bytes_out": last["bytes_out"] - first["bytes_out"], "cpu_s": round(cpu_s, 3),
                     "cpu_percent_of_host_mean": round(100 * cpu_s / span / cores, 2) if span > 0 else None,
                     "cpu_percent_of_host_peak": round(max(peaks), 2) if peaks else None,
                     "rss_bytes_peak": max(r["rss_bytes"] for r in series)}
    return out


def window(rows: list[dict], wall_start: float, t0: float, t1: float) -> list[dict]:
    """Each host's rows sampled inside the wall-clock window [t0, t1] (`wall_start`: the wall-clock time
    of t_s = 0), each host's led by its last row before t0: the origin summarise() counts from."""
    out, before = [], {}
    for r in rows:
        t = wall_start + r["t_s"]
        if t < t0:
            before[r["host"]] = r
        elif t <= t1:
            if r["host"] in before:
                out.append(before.pop(r["host"]))
            out.append(r)
    return out


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in r.items()})
    return buf.getvalue()


def rates(previous: dict, current: dict, cores: int) -> dict:
    """A host's rates between two samples of `sample_host` (bytes per second, CPU in percent)."""
    dt = current["t_s"] - previous["t_s"]
    if dt <= 0:
        raise ValueError(f"samples out of order: {previous['t_s']} then {current['t_s']}")
    cpu = current["cpu_s"] - previous["cpu_s"]
    return {"bytes_in_per_s": (current["bytes_in"] - previous["bytes_in"]) / dt,
            "bytes_out_per_s": (current["bytes_out"] - previous["bytes_out"]) / dt,
            "cpu_percent_of_core": 100 * cpu / dt, "cpu_percent_of_host": 100 * cpu / dt / cores}


# -- the machine --------------------------------------------------------------------------------------
@functools.cache
def hierarchy() -> tuple[str, Path] | None:
    try:
        return parse_mounts(Path("/proc/self/mounts").read_text())
    except OSError:
        return None


def cgroup_path(name: str) -> Path:
    found = hierarchy()
    if found is None:
        raise CgroupError("this machine mounts neither cgroup v2 nor v1's cpuacct: no CPU per host")
    return found[1] / name


def create(name: str) -> None:
    try:
        cgroup_path(name).mkdir(mode=0o755)
    except OSError as exc:
        raise CgroupError(f"cannot make cgroup {cgroup_path(name)}: {exc}") from None


def exists(name: str) -> bool:
    return hierarchy() is not None and cgroup_path(name).is_dir()


def procs_file(name: str) -> str:
    """The file a process writes its pid into to enter cgroup `name`."""
    return str(cgroup_path(name) / "cgroup.procs")


def pids(name: str) -> list[int]:
    return [int(p) for p in (cgroup_path(name) / "cgroup.procs").read_text().split()]


def remove(name: str, timeout_s: float = 10) -> bool:
    """Remove cgroup `name` once its processes are gone (the kernel refuses earlier); False if absent."""
    path = cgroup_path(name)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:  # EBUSY: a process still leaving it
            if time.monotonic() > deadline:
                raise CgroupError(f"cannot remove cgroup {path}: {exc}; processes in it: {pids(name)}") from None
            time.sleep(0.2)


def names(prefix: str) -> list[str]:
    """Cgroups directly under the hierarchy whose name starts with `prefix`."""
    found = hierarchy()
    if found is None or not found[1].is_dir():
        return []
    return sorted(p.name for p in found[1].iterdir() if p.is_dir() and p.name.startswith(prefix))


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def sample_host(host, now: float | None = None) -> dict:
    """Cumulative figures of one host (hosts.Host) right now."""
    import psutil
    group = cgroup_path(host.netns)  # raises when the machine has no cgroup hierarchy to count CPU
    version = hierarchy()[0]
    cards = [f"/sys/class/net/{veth}/statistics" for veth in (host.veth, host.tf_veth) if veth]
    cpu = cpu_seconds(version, (group / ("cpu.stat" if version == "v2" else "cpuacct.usage")).read_text())
    rss, members = 0, pids(host.netns)
    for pid in members:
        try:
            rss += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue  # gone since the list was read
    return {"t_s": time.monotonic() if now is None else now, "host": host.netns, "address": host.address,
            "bytes_in": sum(_read_int(f"{c}/tx_bytes") for c in cards),
            "bytes_out": sum(_read_int(f"{c}/rx_bytes") for c in cards),
            "cpu_s": cpu, "rss_bytes": rss, "n_procs": len(members)}


class Sampler:
    """Samples every host of a network each `interval_s` on a thread, like Ganglia's series: a first row
    when started, one per interval, a last one when stopped."""

    def __init__(self, network, interval_s: float = 1.0, cores: int | None = None):
        self.network, self.interval_s = network, interval_s
        self.cores = cores or os.cpu_count() or 1
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="host-sampler", daemon=True)
        self._previous: dict[str, dict] = {}
        self._start = 0.0
        self.wall_start = 0.0  # wall-clock time of t_s = 0

    def sample(self) -> list[dict]:
        """One row per host now (also what the thread does each interval); times count from the first."""
        if not self._previous:
            self._start, self.wall_start = time.monotonic(), time.time()
        rows = []
        for host in self.network.hosts:
            current = sample_host(host)
            rows.append(row(self._previous.get(host.netns), current, self._start, self.cores))
            self._previous[host.netns] = current
        self.rows += rows
        return rows

    def start(self) -> "Sampler":
        self.sample()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except (OSError, CgroupError):  # the hosts going away at the end of a run: the last rows stand
                return

    def between(self, t0: float, t1: float, roles: dict[str, str] | None = None) -> dict[str, dict]:
        """Each host's totals (summarise) over the wall-clock window [t0, t1] of the run so far."""
        return summarise(window(list(self.rows), self.wall_start, t0, t1), self.cores, roles)

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join()
        try:
            self.sample()
        except (OSError, CgroupError):
            pass
        return self.rows


def watch(network, interval_s: float, samples: int) -> None:
    """Print each host's figures (COLUMNS) as CSV on stdout, a row per host every interval_s."""
    sampler = Sampler(network, interval_s)
    for i in range(samples + 1):
        if i:
            time.sleep(interval_s)
        text = to_csv(sampler.sample())
        print(text if i == 0 else text.split("\n", 1)[1], end="", flush=True)  # the header once
