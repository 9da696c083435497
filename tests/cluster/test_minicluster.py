"""The mini-cluster: real master and workers, on their own addresses only (loopback, or the hosts'),
authenticated, stopped by pid."""
import http.server
import os
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import replace

import pytest

from conf import load_cluster
from distributed import minicluster as mc
from distributed import hosts, processes
from distributed.minicluster import ClusterError, MiniCluster
from distributed.minicluster import free_ports

from .conftest import WORKERS
from .conftest import listening as sockets_listening


def test_all_workers_alive(minicluster):
    status = minicluster.status()
    assert status["running"] is True
    assert status["alive_workers"] == WORKERS
    assert len(minicluster.alive_workers()) == WORKERS


def test_status_page_requires_the_token(minicluster):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{minicluster.state.master_ui}/json/", timeout=5)
    assert err.value.code in (401, 403)
    assert minicluster.master_json()["status"] == "ALIVE"


def test_everything_listens_on_its_own_address_only(minicluster):
    """On loopback: 127.0.0.1. On hosts: the master on the bridge's address, each worker on its host's
    (each process's sockets are read from its own network namespace)."""
    listening = [(proc.pid, ip, port) for proc in processes.tagged(minicluster.state.run_id)
                 for ip, port in sockets_listening(proc.pid)]
    assert {pid for pid, _, _ in listening} >= set(minicluster.state.pids.values()), listening  # every daemon
    network = minicluster.network

    def own(pid: int) -> str:  # the address of the network the process is in
        if not network:
            return "127.0.0.1"
        inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        return next((h.address for h in network.hosts if hosts.netns_inode(h.netns) == inode), network.bridge_address)
    assert all(ip == own(pid) for pid, ip, _ in listening), listening
    if network:  # the master on the bridge's side, each worker in its host
        assert own(minicluster.state.pids["master"]) == network.bridge_address
        assert {own(minicluster.state.pids[f"worker-{i}"]) for i in range(1, len(network.hosts) + 1)} == \
            {h.address for h in network.hosts}


def test_up_names_the_worker_that_fails_and_cleans_up(tmp_path):
    cfg = load_cluster()
    master, ui, w1, w2 = free_ports(cfg.host, 4)
    cluster = MiniCluster(replace(cfg, master_port=master, master_ui_port=ui, start_timeout_s=60),
                          tmp_path, workers=2)
    cluster.worker_ui_ports = [w1, w2]
    with socket.create_server((cfg.host, w2)):  # worker-2's web UI port is taken
        with pytest.raises(ClusterError) as err:
            cluster.up()
    assert "worker-2" in str(err.value)
    assert "worker-2.log" in str(err.value)  # the tail of its log is shown
    assert processes.tagged(cluster.state.run_id) == []
    assert not (tmp_path / "state.json").exists()


class AnyPathPage(http.server.BaseHTTPRequestHandler):
    """Another web server: like a Spark application's UI, it answers every path with an HTML page."""
    def do_GET(self):
        body = b"<!DOCTYPE html><html><body>not the master</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("index", [0, 1], ids=["master port, silent", "web UI port, answering HTML"])
def test_a_port_taken_before_the_master_binds_it_is_retried_on_new_ports(tmp_path, monkeypatch, index):
    cfg = replace(load_cluster(), start_timeout_s=300)
    chosen, real = [], mc.free_ports

    def taken_in_between(host, n):  # one of the first choice's ports is taken before the master binds it
        ports = real(host, n)
        if not chosen:
            ports[index] = taken.server_address[1]
        chosen.append(ports)
        return ports

    monkeypatch.setattr(mc, "free_ports", taken_in_between)
    with http.server.HTTPServer((cfg.host, 0), AnyPathPage) as taken:
        threading.Thread(target=taken.serve_forever, daemon=True).start()
        try:
            cluster = mc.up_on_free_ports(cfg, tmp_path, workers=1)
        finally:
            taken.shutdown()
        try:
            assert len(chosen) == 2 and cluster.cfg.master_port == chosen[1][0] != chosen[0][0]
            assert cluster.state.master_ui.endswith(f":{chosen[1][1]}")
            assert cluster.status()["running"] is True and cluster.status()["alive_workers"] == 1
            first_attempt = (tmp_path / "logs" / "master.log").read_text(errors="replace")
            assert any(sign in first_attempt for sign in mc.PORT_TAKEN)  # it did collide, and was retried
        finally:
            cluster.down()
    assert processes.tagged(cluster.state.run_id) == []

