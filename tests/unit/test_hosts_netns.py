"""Leftover hosts on the real machine (root): `sweep` removes the namespaces, veth pairs, bridge and record
of a cluster whose creating process was killed, keeps those of a live cluster, never touches a name
that only looks like one of ours, and keeps a namespace while a process still runs inside it."""
import subprocess
import sys
import uuid

import pytest

from distributed import hosts

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(hosts.unavailable() is not None, reason=f"{hosts.unavailable()}")]


def plan(n: int = 2) -> tuple[hosts.HostNetwork, str]:
    run_id = uuid.uuid4().hex
    cid = hosts.cluster_id(run_id)
    return hosts.HostNetwork.plan(cid, n, hosts.pick_subnet(hosts.used_networks(), int(cid, 16) % 512)), run_id


def present(network: hosts.HostNetwork) -> set[str]:
    return {n for n in hosts.netns_names() + hosts.link_names() if hosts.owner(n) == network.cid}


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
        assert present(dead) == {*(h.netns for h in dead.hosts), *(h.veth for h in dead.hosts), dead.bridge}
        live.create(live_run)  # this process made it and lives: its cluster is alive
        subprocess.run(["ip", "netns", "add", lookalike_ns], check=True)
        subprocess.run(["ip", "link", "add", lookalike_link, "type", "bridge"], check=True)  # left down

        swept = hosts.sweep()

        assert set(swept) >= {*(h.netns for h in dead.hosts), dead.bridge}
        assert present(dead) == set() and not dead.record.exists()
        assert hosts.owner(lookalike_ns) is None and lookalike_ns in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lookalike_link in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        assert live.left() == [*(h.netns for h in live.hosts), *(h.veth for h in live.hosts), live.bridge,
                               str(live.record)]
    finally:
        live.remove()
        dead.remove()
        subprocess.run(["ip", "netns", "delete", lookalike_ns], capture_output=True)
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
