"""Hosts on the real machine (root): `sweep` removes the namespaces, cgroups, veth pairs, bridge and record
of a cluster whose creating process was killed, keeps those of a live cluster, never touches a name
that only looks like one of ours, and keeps a namespace while a process still runs inside it; a host's
figures (host_stats) count what a process inside it sends and computes."""
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from distributed import host_stats, hosts

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(hosts.unavailable() is not None, reason=f"{hosts.unavailable()}")]


def plan(n: int = 2) -> tuple[hosts.HostNetwork, str]:
    run_id = uuid.uuid4().hex
    cid = hosts.cluster_id(run_id)
    return hosts.HostNetwork.plan(cid, n, hosts.pick_subnet(hosts.used_networks(), int(cid, 16) % 512)), run_id


def made(network: hosts.HostNetwork) -> list[str]:
    """Everything `create` makes, in `left()`'s order: each host's namespace and its TF card's, the hosts'
    cgroups, both veth pairs per host, both bridges, the record."""
    return [*(h.netns for h in network.hosts), *(h.tf_netns for h in network.hosts),
            *(f"cgroup {h.netns}" for h in network.hosts), *(h.veth for h in network.hosts),
            *(h.tf_veth for h in network.hosts), network.bridge, network.tf_bridge, str(network.record)]


def present(network: hosts.HostNetwork) -> set[str]:
    return {n for n in hosts.netns_names() + hosts.link_names() if hosts.owner(n) == network.cid} | \
        {f"cgroup {n}" for n in host_stats.names(hosts.NETNS_PREFIX) if hosts.owner(n) == network.cid}


CRASHING_UP = """
import os, sys
from distributed import hosts
network = hosts.HostNetwork.from_dict(__import__("json").loads(sys.argv[1]))
network.create(sys.argv[2])
print("made", flush=True)
os.kill(os.getpid(), 9)  # dies without removing anything, like an `up` killed half-way
"""


def test_sweep_removes_a_dead_clusters_hosts_only(tmp_path):
    dead, dead_run = plan()
    live, live_run = plan()
    lookalike_ns, lookalike_link = f"{dead.host(1).netns}x", f"{dead.bridge}x"
    try:
        import json
        child = subprocess.run([sys.executable, "-c", CRASHING_UP, json.dumps(dead.to_dict()), dead_run],
                               capture_output=True, text=True, timeout=60)
        assert child.returncode == -9 and "made" in child.stdout, child.stderr
        assert present(dead) == set(made(dead)[:-1])
        live.create(live_run)  # this process made it and lives: its cluster is alive
        subprocess.run(["ip", "netns", "add", lookalike_ns], check=True)
        host_stats.create(lookalike_ns)
        subprocess.run(["ip", "link", "add", lookalike_link, "type", "bridge"], check=True)  # left down

        swept = hosts.sweep()

        assert set(swept) >= {*(h.netns for h in dead.hosts), *(h.tf_netns for h in dead.hosts),
                              *(f"cgroup {h.netns}" for h in dead.hosts), dead.bridge, dead.tf_bridge}
        assert present(dead) == set() and not dead.record.exists()
        assert host_stats.exists(lookalike_ns)
        assert hosts.owner(lookalike_ns) is None and lookalike_ns in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lookalike_link in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        assert live.left() == made(live)
    finally:
        live.remove()
        dead.remove()
        subprocess.run(["ip", "netns", "delete", lookalike_ns], capture_output=True)
        host_stats.remove(lookalike_ns)
        subprocess.run(["ip", "link", "delete", lookalike_link], capture_output=True)
    assert live.left() == [] and dead.left() == []


def test_a_namespace_with_a_process_inside_is_kept_until_the_process_ends():
    network, run_id = plan(1)
    sleeper = None
    try:
        network.create(run_id)
        network.record.unlink()  # no record of a creator: only the process inside keeps it alive
        enter, close = hosts.in_netns(network.host(1).netns)
        try:
            sleeper = subprocess.Popen(["sleep", "120"], preexec_fn=enter)
        finally:
            close()
        assert hosts.pids_inside([network.host(1).netns]) == [sleeper.pid]
        assert host_stats.pids(network.host(1).netns) == [sleeper.pid]  # in the host's cgroup as well
        assert network.host(1).netns not in hosts.sweep() and network.host(1).netns in present(network)
        sleeper.kill()
        sleeper.wait()
        assert network.host(1).netns in hosts.sweep()
        assert present(network) == set()
    finally:
        if sleeper and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        network.remove()


BUSY_SENDER = """
import socket, sys, time
start = time.process_time()
while time.process_time() - start < 0.5:  # half a second of CPU
    pass
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(200):  # 200 datagrams of 1,000 bytes to the bridge (no one listens: nothing to answer)
    sock.sendto(b"x" * 1000, (sys.argv[1], 9))
print("done", flush=True)
sys.stdin.read()  # stays in the host until the test has sampled it
"""


def test_a_hosts_figures_count_what_a_process_inside_it_sends_and_computes(capsys):
    network, run_id = plan(2)
    proc = None
    try:
        network.create(run_id)
        busy, idle = network.hosts
        before = {h.netns: host_stats.sample_host(h) for h in network.hosts}
        sampler = host_stats.Sampler(network, interval_s=0.1).start()
        enter, close = hosts.in_netns(busy.netns)
        try:
            proc = subprocess.Popen([sys.executable, "-c", BUSY_SENDER, network.bridge_address], preexec_fn=enter,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        finally:
            close()
        assert proc.stdout.readline() == "done\n"
        after = {h.netns: host_stats.sample_host(h) for h in network.hosts}
        sent = after[busy.netns]["bytes_out"] - before[busy.netns]["bytes_out"]
        assert 200 * 1000 <= sent < 200 * 1100, sent  # payload plus UDP, IP and Ethernet headers
        assert after[busy.netns]["cpu_s"] - before[busy.netns]["cpu_s"] >= 0.45
        assert after[busy.netns]["n_procs"] == 1 and after[busy.netns]["rss_bytes"] > 1_000_000
        assert after[idle.netns]["cpu_s"] == before[idle.netns]["cpu_s"] == 0
        assert after[idle.netns]["n_procs"] == 0 and after[idle.netns]["bytes_out"] < 2_000  # at most a few ARPs
        # The sampler's series over the same time says the same, per host.
        rows = sampler.stop()
        assert {r["host"] for r in rows} == {busy.netns, idle.netns} and len(rows) >= 4
        totals = host_stats.summarise(rows, sampler.cores, {"sender": busy.address})
        assert totals[busy.netns]["roles"] == ["sender"] and totals[idle.netns]["roles"] == []
        assert 200 * 1000 <= totals[busy.netns]["bytes_out"] < 200 * 1100
        assert totals[busy.netns]["cpu_s"] >= 0.45 and totals[idle.netns]["cpu_s"] == 0
        # `minicluster watch` prints the same figures as CSV: a header, then a row per host per interval.
        host_stats.watch(network, 0.05, 2)
        printed = capsys.readouterr().out.splitlines()
        assert printed[0] == ",".join(host_stats.COLUMNS) and len(printed) == 1 + 3 * len(network.hosts)
        assert [line.split(",")[1] for line in printed[1:3]] == [busy.netns, idle.netns]
    finally:
        if proc:
            proc.stdin.close()
            proc.wait(timeout=30)
        network.remove()
    assert network.left() == []


PS_WORKER = """
import sys, time
from distributed.ps_client import PSClient
c = PSClient((sys.argv[1], int(sys.argv[2])), sys.argv[3].encode(), worker=int(sys.argv[4]))
c.join(0)
c.pull()
print("ready", flush=True)
sys.stdin.read()  # idle, connected, until the test ends
"""


def test_a_worker_whose_host_is_cut_off_is_lost_by_keepalive_while_an_idle_one_on_another_host_is_not():
    """No FIN, no RST comes from a host whose link is down: the parameter server finds the worker there
    by TCP keepalive (detect_cut_peer) within about 4 heartbeats and s shrinks, while a worker on another
    host that is connected but silent for as long stays active. The link is restored however it ends."""
    import numpy as np
    from distributed.param_server import ParameterServer
    from distributed.ps_connections import KEEPALIVE_PROBES
    network, run_id = plan(2)
    secret, workers, ps = b"per-run-secret-0123456789abcdef!", [], None
    try:
        network.create(run_id)
        ps = ParameterServer([np.zeros(4)], secret, 2, s=2, host=network.bridge_address, heartbeat_s=1.0)
        _, port = ps.start()
        for index, host in enumerate(network.hosts):
            enter, close = hosts.in_netns(host.netns)
            try:
                workers.append(subprocess.Popen(
                    [sys.executable, "-c", PS_WORKER, network.bridge_address, str(port), secret.decode(), str(index)],
                    preexec_fn=enter, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}))
            finally:
                close()
        assert [w.stdout.readline() for w in workers] == ["ready\n", "ready\n"]
        assert ps.snapshot()["active_workers"] == [0, 1]
        with network.cut_off(1):
            cut_at = time.monotonic()
            while not ps.snapshot()["lost_workers"] and time.monotonic() - cut_at < 30:
                time.sleep(0.1)
            found_after = time.monotonic() - cut_at
        snap = ps.snapshot()
        assert snap["lost_workers"] == [0] and snap["active_workers"] == [1], snap
        assert found_after <= (1 + KEEPALIVE_PROBES) * 1.0 + 3, found_after  # idle + probes, and slack
        (event,) = snap["events"]
        assert event["event"] == "lost" and event["message"] == "worker 0 lost; s shrinks from 2 to 1"
        # the ps tells a cut host (no answer) from a process that ended (its connection closed)
        assert event["address"] == network.host(1).address and event["cause"].startswith("its host stopped answering")
    finally:
        for w in workers:
            w.stdin.close()
            w.wait(timeout=30)
        if ps:
            ps.stop()
        network.remove()
    assert network.left() == []


def _connect_from(netns_name: str | None, address: str, port: int, timeout_s: float = 2.0) -> str:
    """Open a TCP connection to address:port from a thread inside `netns_name` (None: the machine's own
    namespace): 'ok', or the error's name."""
    import errno
    import socket
    import threading
    from distributed import netns
    out = []

    def attempt():
        with netns.entered(netns_name), socket.socket() as sock:
            sock.settimeout(timeout_s)
            code = sock.connect_ex((address, port))
            out.append("ok" if code == 0 else errno.errorcode.get(code, str(code)))
    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return out[0]


def test_a_server_on_a_hosts_tf_card_is_reached_from_the_other_hosts_tf_cards_only_and_counted_on_its_host():
    """What the hosts' TF cards are for (TensorFlow's unauthenticated servers bind every interface): a
    server bound to every interface of host 1's TF namespace is reached from host 2's TF namespace, not
    from host 2 itself nor from the machine's namespace; the bytes it gets count on host 1's figures; a
    host cut off loses both cards."""
    import socket
    import threading
    from distributed import netns
    network, run_id = plan(2)
    listener, stop = None, threading.Event()
    try:
        network.create(run_id)
        one, two = network.hosts
        assert hosts.address(one.tf_address) not in hosts.ipaddress.ip_network(network.subnet)
        # the machine's namespace has no address and no route on the TF cards' /24
        assert not any(hosts.ipaddress.ip_network(n, strict=False).overlaps(
            hosts.ipaddress.ip_network(network.tf_subnet)) for n in hosts.used_networks())

        def serve():
            nonlocal listener
            with netns.entered(one.tf_netns):
                listener = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
            listener.settimeout(0.2)
            ready.set()
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                with conn:
                    while conn.recv(65536):
                        pass
        ready = threading.Event()
        server = threading.Thread(target=serve, daemon=True)
        server.start()
        assert ready.wait(10)
        port = listener.getsockname()[1]

        assert _connect_from(two.tf_netns, one.tf_address, port) == "ok"
        assert _connect_from(two.netns, one.tf_address, port) == "ENETUNREACH"   # a host has no way there
        assert _connect_from(two.netns, one.address, port) == "ECONNREFUSED"     # nor is it on the host's card
        assert _connect_from(None, one.address, port) == "ECONNREFUSED"          # nor from the machine
        # 1 MB sent from host 2's TF card counts as bytes into host 1 and out of host 2
        before = {h.netns: host_stats.sample_host(h) for h in network.hosts}
        sender = []

        def send():
            with netns.entered(two.tf_netns), socket.create_connection((one.tf_address, port), timeout=5) as sock:
                sock.sendall(b"x" * 1_000_000)
            sender.append(True)
        thread = threading.Thread(target=send)
        thread.start()
        thread.join(30)
        assert sender == [True]
        time.sleep(0.2)
        after = {h.netns: host_stats.sample_host(h) for h in network.hosts}
        got = after[one.netns]["bytes_in"] - before[one.netns]["bytes_in"]
        sent = after[two.netns]["bytes_out"] - before[two.netns]["bytes_out"]
        assert 1_000_000 <= got < 1_100_000 and 1_000_000 <= sent < 1_100_000, (got, sent)
        with network.cut_off(1):  # both cards down: host 1's TF server is out of reach too
            assert _connect_from(two.tf_netns, one.tf_address, port, timeout_s=1.0) in ("timeout", "EAGAIN",
                                                                                         "EHOSTUNREACH")
        assert _connect_from(two.tf_netns, one.tf_address, port) == "ok"
    finally:
        stop.set()
        if listener:
            listener.close()
        network.remove()
    assert network.left() == []


def test_a_worker_waiting_on_the_ps_when_its_host_is_cut_off_finds_out_by_keepalive_not_its_timeout():
    """The worker's side of a cut: blocked in a push that waits for another worker's (s = 2), it gets no
    byte from the ps while its host is cut off; its own TCP keepalive ends the wait with
    ParameterServerLost within the cut detection time, long before its 60 s request timeout."""
    import threading
    import numpy as np
    from distributed import netns
    from distributed.param_server import ParameterServer
    from distributed.ps_connections import cut_detection_s
    from distributed.ps_client import ParameterServerLost, PSClient
    network, run_id = plan(1)
    secret, ps, outcome = b"per-run-secret-0123456789abcdef!", None, {}
    try:
        network.create(run_id)
        ps = ParameterServer([np.zeros(4)], secret, 2, s=2, host=network.bridge_address, heartbeat_s=1.0,
                             push_timeout_s=120)
        _, port = ps.start()
        waiting = threading.Event()

        def worker():
            with netns.entered(network.host(1).netns), \
                    PSClient((network.bridge_address, port), secret, 0, timeout_s=60) as client:
                client.join(0)
                waiting.set()
                try:
                    client.push([np.ones(4)], 0)  # waits for worker 1's push, which never comes
                except Exception as exc:  # noqa: BLE001 -- what ended the wait is the result
                    outcome.update(error=exc, at=time.monotonic())
        thread = threading.Thread(target=worker)
        thread.start()
        assert waiting.wait(10)
        time.sleep(1.0)
        with network.cut_off(1):
            cut_at = time.monotonic()
            thread.join(60)
        assert isinstance(outcome.get("error"), ParameterServerLost), outcome
        assert outcome["at"] - cut_at <= cut_detection_s() + 5, outcome["at"] - cut_at
    finally:
        if ps:
            ps.stop()
        network.remove()
    assert network.left() == []


def test_the_chiefs_watch_reports_a_tf_server_whose_host_is_cut_off_once_and_never_a_live_or_refusing_one():
    """jobs.resume.PeerWatch from host 2's TF card: a server on host 1's TF card that accepts, and a port
    on host 2's that refuses (a process gone, its host there), are not reported while the link is up;
    once host 1 is cut off, its server is reported, once, within a few probes."""
    import contextlib
    import socket
    import threading
    from distributed import netns
    from jobs.resume import PeerWatch
    network, run_id = plan(2)
    listener, closed, watch, reports, stop = None, None, None, [], threading.Event()
    try:
        network.create(run_id)
        one, two = network.hosts
        with netns.entered(one.tf_netns):
            listener = socket.create_server((one.tf_address, 0))
        with netns.entered(two.tf_netns):
            closed = socket.socket()
            closed.bind((two.tf_address, 0))  # held, not listening: connections to it are refused

        listener.settimeout(0.2)

        def serve():
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    listener.accept()[0].close()
        threading.Thread(target=serve, daemon=True).start()
        roles = {"worker:0": f"{one.tf_address}:{listener.getsockname()[1]}",
                 "worker:1": f"{two.tf_address}:{closed.getsockname()[1]}"}
        watch = PeerWatch(roles, lambda *report: reports.append((*report, time.monotonic())),
                          network=lambda: netns.entered(two.tf_netns), interval_s=0.2, timeout_s=0.5).start()
        time.sleep(3)
        assert reports == []
        with network.cut_off(1):
            cut = time.monotonic()
            deadline = cut + 15
            while not reports and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)  # a second report would come within this
        assert len(reports) == 1, reports
        role, address, waited_s, at = reports[0]
        assert (role, address) == ("worker:0", roles["worker:0"])
        assert 1.0 <= waited_s <= at - cut + 0.1 and at - cut <= 6, (waited_s, at - cut)
    finally:
        stop.set()
        if watch:
            watch.stop()
        for sock in (listener, closed):
            if sock:
                sock.close()
        network.remove()
    assert network.left() == []
