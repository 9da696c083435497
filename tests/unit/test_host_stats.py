"""The pure parts of the per-host figures: which cgroup hierarchy counts a host's CPU, its CPU time, rates."""
from pathlib import Path

import pytest

from distributed.host_stats import CgroupError, cpu_seconds, parse_mounts, rates, row, summarise, to_csv, window

pytestmark = pytest.mark.unit

HYBRID = """tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
V1_ONLY = """cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0
"""


def test_cgroup_v2_is_preferred_then_v1_cpuacct_then_none():
    assert parse_mounts(HYBRID) == ("v2", Path("/sys/fs/cgroup/unified"))
    assert parse_mounts(V1_ONLY) == ("v1", Path("/sys/fs/cgroup/cpu,cpuacct"))
    assert parse_mounts("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\nproc /proc proc rw 0 0\n") is None


def test_cpu_time_is_read_in_seconds_from_either_hierarchy():
    assert cpu_seconds("v2", "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n") == 2.5
    assert cpu_seconds("v1", "1250000000\n") == 1.25
    with pytest.raises(CgroupError, match="no usage_usec"):
        cpu_seconds("v2", "user_usec 5\n")


def test_rates_are_per_second_and_cpu_is_a_share_of_the_hosts_cores_and_of_one_core():
    before = {"t_s": 10.0, "bytes_in": 1000, "bytes_out": 0, "cpu_s": 1.0}
    after = {"t_s": 12.0, "bytes_in": 5000, "bytes_out": 800, "cpu_s": 2.0}
    assert rates(before, after, cores=4) == {"bytes_in_per_s": 2000.0, "bytes_out_per_s": 400.0,
                                             "cpu_percent_of_core": 50.0, "cpu_percent_of_host": 12.5}
    with pytest.raises(ValueError, match="out of order"):
        rates(after, before, cores=4)


def sample(t, host, bytes_in, bytes_out, cpu_s, rss):
    return {"t_s": t, "host": host, "address": f"198.18.3.{host[-1]}", "bytes_in": bytes_in,
            "bytes_out": bytes_out, "cpu_s": cpu_s, "rss_bytes": rss, "n_procs": 2}


def test_a_series_starts_without_rates_and_sums_up_per_host_with_its_roles():
    samples = {"h-2": [sample(100, "h-2", 0, 0, 5.0, 10), sample(101, "h-2", 4000, 1000, 5.5, 30),
                       sample(103, "h-2", 6000, 9000, 7.5, 20)],
               "h-3": [sample(100, "h-3", 50, 50, 0.0, 5), sample(101, "h-3", 50, 50, 0.0, 5),
                       sample(103, "h-3", 50, 50, 0.0, 5)]}
    rows = []
    for series in samples.values():
        rows += [row(series[i - 1] if i else None, series[i], 100, cores=2) for i in range(len(series))]
    first = rows[0]
    assert first["t_s"] == 0 and first["bytes_in_per_s"] is None and first["cpu_percent_of_host"] is None
    assert rows[2]["t_s"] == 3 and rows[2]["bytes_out_per_s"] == 4000 and rows[2]["cpu_percent_of_host"] == 50
    summary = summarise(rows, cores=2, roles={"ps:0": "198.18.3.2", "worker:0": "198.18.3.2",
                                              "worker:1": "198.18.3.9"})
    assert summary == {
        "h-2": {"address": "198.18.3.2", "roles": ["ps:0", "worker:0"], "seconds": 3, "bytes_in": 6000,
                "bytes_out": 9000, "cpu_s": 2.5, "cpu_percent_of_host_mean": 41.67,
                "cpu_percent_of_host_peak": 50.0, "rss_bytes_peak": 30},
        "h-3": {"address": "198.18.3.3", "roles": [], "seconds": 3, "bytes_in": 0, "bytes_out": 0, "cpu_s": 0,
                "cpu_percent_of_host_mean": 0.0, "cpu_percent_of_host_peak": 0.0, "rss_bytes_peak": 5}}
    text = to_csv(rows).splitlines()
    assert text[0] == ("t_s,host,address,bytes_in,bytes_out,bytes_in_per_s,bytes_out_per_s,cpu_s,"
                       "cpu_percent_of_host,cpu_percent_of_core,rss_bytes,n_procs")
    assert text[1] == "0,h-2,198.18.3.2,0,0,,,5.000,,,10,2" and len(text) == 7


def test_a_window_counts_from_each_hosts_last_sample_before_it_to_its_last_inside():
    """A land-cover cell's figures per host: samples at t_s 0..4 s, the cell from wall 1001.5 to 1003.2
    (wall_start 1000): each host counts from its sample at t_s 1 (the origin) to its sample at t_s 3."""
    series = {h: [sample(t, h, 1000 * t * t, 10 * t, 0.5 * t * (h == "h-2"), 100 + t) for t in range(5)]
              for h in ("h-2", "h-3")}
    rows = [row(s[i - 1] if i else None, s[i], 0, cores=2) for s in series.values() for i in range(5)]
    picked = window(rows, 1000.0, 1001.5, 1003.2)
    assert [(r["host"], r["t_s"]) for r in picked] == [("h-2", 1), ("h-2", 2), ("h-2", 3),
                                                      ("h-3", 1), ("h-3", 2), ("h-3", 3)]
    summary = summarise(picked, cores=2)
    assert summary["h-2"]["bytes_in"] == 1000 * (9 - 1) and summary["h-2"]["bytes_out"] == 20
    assert summary["h-2"]["cpu_s"] == 1.0 and summary["h-2"]["cpu_percent_of_host_mean"] == 25.0
    assert summary["h-2"]["rss_bytes_peak"] == 103 and summary["h-3"]["cpu_s"] == 0
    assert window(rows, 1000.0, 1010, 1020) == []  # nothing sampled in it
