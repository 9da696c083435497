"""Measured resource figures: ss parsing, real loopback byte counts, the sampler on real processes,
summary math, and the figures/tables written from the series."""
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from distributed import metrics
from distributed.metrics import COLUMNS, Sampler, increment, parse_ss, summarise

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.unit

needs_ss = pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) not installed")

# `ss -tinpeH` captured on a 6.x kernel (iproute2 6.1) with a loopback pair open in pid 12421, then the
# same pair shared with a forked child (pid 12425), an IPv6 socket in CLOSE-WAIT and an orphan in
# FIN-WAIT-2 with an empty info line. Info lines trimmed to the fields that matter.
SS_SAMPLE = (
    "ESTAB 0      0      127.0.0.1:52939 127.0.0.1:46980 users:((\"python\",pid=12421,fd=5)) "
    "ino:328653 sk:8 cgroup:/ <->\n"
    "\t ts sack bbr wscale:10,10 rto:204 rtt:0.018/0.01 mss:38400 cwnd:11 bytes_sent:1234 bytes_acked:1234 "
    "bytes_received:100000 segs_out:3 segs_in:6 data_segs_out:1 data_segs_in:3 bbr:(bw:76800000000bps,mrtt:0.004) "
    "send 187733333333bps lastsnd:216 delivered:2 app_limited minrtt:0.004 snd_wnd:76800\n"
    "ESTAB 0      0      127.0.0.1:46980 127.0.0.1:52939 "
    "users:((\"python\",pid=12425,fd=4),(\"python\",pid=12421,fd=4)) "
    "ino:328652 sk:9 cgroup:/ <->\n"
    "\t ts sack bbr wscale:10,10 rto:204 rtt:0.029/0.011 mss:47616 cwnd:13 bytes_sent:100000 bytes_acked:100001 "
    "bytes_received:1234 segs_out:6 segs_in:4 data_segs_out:3 data_segs_in:1 delivered:4 snd_wnd:95232\n"
    "CLOSE-WAIT 1      0          [::1]:50759     [::1]:36376 users:((\"python\",pid=12421,fd=8)) "
    "ino:329507 sk:a cgroup:/ -->\n"
    "\t ts sack bbr wscale:10,10 rto:204 rtt:0.145/0.072 mss:32768 cwnd:10 bytes_received:11 segs_out:2 segs_in:4 "
    "data_segs_in:1 delivered:1 app_limited snd_wnd:65536\n"
    "FIN-WAIT-2 0      0          [::1]:36376     [::1]:50759 timer:(timewait,59sec,0) ino:0 sk:b\n"
    "\t" + " " * 40 + "\n"
)


def test_parse_ss_on_captured_output():
    rows = parse_ss(SS_SAMPLE)
    by_key = {(r["pid"], r["fd"]): r for r in rows}
    assert set(by_key) == {(12421, 5), (12425, 4), (12421, 4), (12421, 8)}  # orphan has no owner: left out
    assert by_key[(12421, 5)] == {"pid": 12421, "fd": 5, "state": "ESTAB", "local": "127.0.0.1:52939",
                                        "peer": "127.0.0.1:46980", "ino": 328653, "bytes_sent": 1234,
                                        "bytes_received": 100000, "bytes_retrans": 0}
    assert by_key[(12425, 4)]["bytes_sent"] == by_key[(12421, 4)]["bytes_sent"] == 100000
    assert by_key[(12421, 8)]["bytes_sent"] == 0 and by_key[(12421, 8)]["local"] == "[::1]:50759"


def test_parse_ss_counts_retransmitted_bytes_once():
    # the sender's socket after a 5 MiB loopback transfer in which the kernel retransmitted 130966 bytes
    text = ("ESTAB 0 0 127.0.0.1:41000 127.0.0.1:38000 users:((\"python\",pid=99,fd=3)) ino:5 sk:1\n"
            "\t bbr mss:65483 bytes_sent:5373846 bytes_retrans:130966 bytes_acked:5242881 bytes_received:1 "
            "data_segs_out:94 retrans:0/2\n")
    row = parse_ss(text)[0]
    assert row["bytes_sent"] == 5 * 1024 * 1024 and row["bytes_retrans"] == 130966


def test_parse_ss_old_kernel_falls_back_to_acked_and_rejects_garbage():
    old = ("ESTAB 0 0 10.0.0.1:5000 10.0.0.2:6000 users:((\"java\",pid=7,fd=9))\n"
           "\t cubic bytes_acked:4097 bytes_received:50\n")
    assert parse_ss(old)[0] == {"pid": 7, "fd": 9, "state": "ESTAB", "local": "10.0.0.1:5000",
                                     "peer": "10.0.0.2:6000", "ino": 0, "bytes_sent": 4097, "bytes_received": 50,
                                     "bytes_retrans": 0}
    with pytest.raises(ValueError, match="cannot read socket line"):
        parse_ss("ESTAB 0 0\n\t bytes_sent:1\n")


def test_increment_counts_new_keys_whole_ignores_gone_and_resets():
    assert increment({"a": 10, "b": 5}, {"a": 15, "c": 7}) == 5 + 7
    assert increment({"a": 10}, {"a": 3}) == 3  # reused key: counter started again
    assert increment({}, {}) == 0


SENDER = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"x" * int(sys.argv[2]))
    s.recv(1)  # keep the socket open until the parent has measured
""")


# The receiving side runs in a fresh process too: ss counts every socket a pid holds, and this test
# process may still hold sockets of earlier tests run by the same worker (measured: +234 KB once).
RECEIVER = textwrap.dedent("""
    import json, os, socket, subprocess, sys
    from distributed import metrics
    sender, size = sys.argv[1], int(sys.argv[2])
    with socket.create_server(("127.0.0.1", 0)) as server:
        child = subprocess.Popen([sys.executable, "-c", sender, str(server.getsockname()[1]), str(size)])
        try:
            conn, _ = server.accept()
            with conn:
                got = 0
                while got < size:
                    got += len(conn.recv(1 << 20))
                counts = metrics.socket_bytes([os.getpid(), child.pid])
                conn.sendall(b"!")
        finally:
            child.wait(timeout=60)
    print(json.dumps({"in": counts[os.getpid()][0], "out": counts[child.pid][1]}))
""")


@needs_ss
def test_socket_bytes_over_real_loopback_connection():
    size = 5 * 1024 * 1024
    proc = subprocess.run([sys.executable, "-c", RECEIVER, SENDER, str(size)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout)
    assert size <= counts["in"] <= size * 1.02
    assert size <= counts["out"] <= size * 1.02


def test_missing_ss_is_named(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.raises(metrics.ToolMissing, match="iproute2"):
        metrics.run_ss()


# The role's process forks (as TFoS forks a role from the Spark Python worker); the grandchild burns
# 1.2 s of CPU, sends 1 MiB over loopback, then sleeps 3 s (idle samples however late the sampler runs).
FORKING_ROLE = textwrap.dedent("""
    import os, socket, sys, time
    sys.stdin.readline()
    pid = os.fork()
    if pid == 0:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        while time.process_time() < 1.2:  # CPU time, not wall time: the same work on a loaded machine
            pass
        s.sendall(b"y" * (1 << 20))
        time.sleep(3.0)
        os._exit(0)
    os.waitpid(pid, 0)
""")


@needs_ss
def test_sampler_follows_forked_child_cpu_traffic_and_exit():
    with socket.create_server(("127.0.0.1", 0)) as server:
        role = subprocess.Popen([sys.executable, "-c", FORKING_ROLE, str(server.getsockname()[1])],
                                stdin=subprocess.PIPE, text=True)
        received = []

        def drain():
            conn, _ = server.accept()
            with conn:
                while chunk := conn.recv(1 << 16):
                    received.append(len(chunk))

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            sampler = Sampler({"worker0": role.pid}, interval_s=0.25).start()
            role.stdin.write("go\n")
            role.stdin.flush()
            role.wait(timeout=60)
        finally:
            role.kill()  # no-op once it has exited; its grandchild ends by itself within 3 s
            role.wait()
        series = sampler.stop()["worker0"]
        reader.join(timeout=5)
    assert {len(v) for v in series.values()} == {len(series["t_s"])} and set(series) == set(COLUMNS)
    assert "worker0" in sampler.meta["vanished"]
    cpu, t = series["cpu_percent"], series["t_s"]
    dts = [b - a for a, b in zip([0.0] + t[:-1], t)]
    # the 1.2 CPU seconds burned (not 0: children followed; not 2.4: counted once), give or take a sample
    assert 1.0 <= sum(c * d for c, d in zip(cpu, dts)) / 100 <= 1.8, (t, cpu)
    idle = [k for k, s in enumerate(t) if s >= t[-1] - 1.5]  # within the grandchild's 3 s sleep
    busy = [k for k, c in enumerate(cpu) if c > 20]  # a loaded machine still gives the burner a third of a core
    assert busy and idle and max(busy) < min(idle) and max(cpu[k] for k in idle) < 10, (t, cpu)
    assert all(r > 0 for r in series["rss_bytes"])
    assert max(series["n_procs"]) == 2
    assert sum(received) == 1 << 20
    assert 1 << 20 <= series["bytes_out"][-1] <= (1 << 20) * 1.02
    assert all(w >= 0 for w in series["wait_percent"])


def test_cpu_wait_sees_runqueue_wait_of_two_busy_processes_on_one_cpu():
    cpu = min(os.sched_getaffinity(0))
    # Both processes say they are running before the measurement starts; each ends within 60 s by itself.
    # one write(2) per process: print() may write the number and the newline apart, and two lines interleave
    burner = f"import os, time\nos.sched_setaffinity(0, {{{cpu}}})\nos.fork()\nos.write(1, b'%d\\n' % os.getpid())\n" \
             "end = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\n"
    proc = subprocess.Popen([sys.executable, "-c", burner], stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        pids = [int(proc.stdout.readline()) for _ in range(2)]
        wait = metrics.cpu_wait(proc.pid, interval_s=0.6)
    finally:
        for pid in pids:
            if pid != proc.pid:
                os.kill(pid, signal.SIGKILL)  # the forked burner (not our child: nobody else ends it)
        proc.kill()
        proc.wait()
        proc.stdout.close()
    # two runnable processes on one CPU: each waits about half the time (more if the machine is loaded);
    # a fraction of wall time, so at most 1 (plus the slack of reading /proc before and after the interval)
    assert 0.25 < wait["runqueue"] <= 1.2, wait
    assert wait["total"] == pytest.approx(wait["runqueue"] + wait["io"])


@needs_ss
def test_for_self_samples_this_process():
    sampler = Sampler.for_self("chief", interval_s=0.1).start()
    total = 0
    for i in range(3_000_000):
        total += i
    series = sampler.stop()["chief"]
    assert series["t_s"] and max(series["cpu_percent"]) > 20 and series["rss_bytes"][-1] > 0


def test_summarise_weights_by_interval_and_skips_unmeasured():
    series = {"ps": {"t_s": [1.0, 2.0, 4.0], "bytes_in": [100, 300, 700], "bytes_in_per_s": [100.0, 200.0, 200.0],
                     "cpu_percent": [10.0, 40.0, 20.0], "io_wait_percent": [None, None, None],
                     "rss_bytes": [5, 9, 7]}}
    got = summarise(series)["ps"]
    assert got["samples"] == 3 and got["duration_s"] == 4.0 and got["bytes_in_total"] == 700
    assert got["bytes_in_per_s_mean"] == pytest.approx(700 / 4.0)
    assert got["cpu_percent_mean"] == pytest.approx((10 * 1 + 40 * 1 + 20 * 2) / 4)
    assert got["cpu_percent_peak"] == 40.0 and got["rss_bytes_peak"] == 9
    assert got["io_wait_percent_mean"] is None and got["io_wait_percent_peak"] is None


def _fake_run(scale):
    t = [0.5 * (k + 1) for k in range(6)]
    ramp = [float(i) for i in range(6)]

    def role(k):
        return {"t_s": t, "bytes_in": [k * 10 * i for i in range(6)], "bytes_out": [k * 5 * i for i in range(6)],
                "bytes_in_per_s": [scale * k * 1e5] * 6, "bytes_out_per_s": [scale * k * 5e4] * 6,
                "cpu_percent": [scale * k * 10.0 + i for i in range(6)], "wait_percent": ramp,
                "runq_wait_percent": list(ramp), "io_wait_percent": [None] * 6,
                "rss_bytes": [k * (1 << 20)] * 6, "n_procs": [1] * 6}
    return {"ps": role(1), "worker0": role(2), "worker1": role(3)}


def test_figures_and_tables_are_written(tmp_path):
    from jobs import metrics_figures as mf
    runs = {"default": _fake_run(1), "scheme4": _fake_run(2)}
    for plot, name in ((mf.plot_traffic, "traffic.png"), (mf.plot_cpu_wait_box, "cpu.png"),
                       (mf.plot_memory, "mem.png")):
        path = plot(runs, str(tmp_path / name))
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert mf.plot_traffic({}, str(tmp_path / "none.png")) is None
    h5 = mf.write_series_h5(runs, str(tmp_path / "series.h5"), {"default": {"interval_s": 0.5}})
    back, meta = mf.read_series_h5(h5)
    assert back["scheme4"]["worker1"]["cpu_percent"] == runs["scheme4"]["worker1"]["cpu_percent"]
    assert all(math.isnan(v) for v in back["default"]["ps"]["io_wait_percent"]) \
        and meta == {"default": {"interval_s": 0.5}}
    csv_path = mf.write_summary_csv(runs, str(tmp_path / "summary.csv"))
    lines = open(csv_path).read().splitlines()
    assert len(lines) == 1 + 6 and lines[0].startswith("run,role,samples")
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
    with pytest.raises(ValueError, match="no '/'"):
        mf.write_series_h5({"a/b": {}}, str(tmp_path / "bad.h5"))


def test_a_role_that_exits_just_before_stop_is_recorded_as_vanished():
    """stop() skips a last sample taken too soon after the previous one, but not the role's exit."""
    role = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sampler = Sampler({"worker0": role.pid}, interval_s=60.0, sockets=False).start()
    finally:
        role.kill()
        role.wait()
    sampler.stop()  # well within interval_s / 4 of start(): no sample, only the liveness check
    assert "worker0" in sampler.meta["vanished"]
