"""The private network of a run's TF servers (netns.py), probed with real sockets: a server inside is
refused to everyone outside, reached from inside; `outside()` reaches this machine's loopback; names
are removed, and a dead driver's namespace is swept."""
import os
import socket
import subprocess
import sys
import threading

import pytest

from distributed import netns

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(netns.unavailable() is not None, reason=f"{netns.unavailable()}")]


@pytest.fixture
def network():
    name = netns.create()
    try:
        yield name
    finally:
        netns.remove(name)
    assert name not in netns.names()


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_server_inside_is_refused_outside_and_reached_inside(network):
    with netns.entered(network):
        server = socket.create_server(("0.0.0.0", 0))  # binds every interface, as TF's server does
        port = server.getsockname()[1]
        assert not refused(port)                      # a member of the run connects
    try:
        assert refused(port)                          # this process, back outside: refused
        other = subprocess.run([sys.executable, "-c", "import socket,sys; s=socket.socket(); s.settimeout(5);"
                                f"sys.exit(s.connect_ex(('127.0.0.1', {port})) == 0)"], timeout=60)
        assert other.returncode == 0                  # a second process: refused too
    finally:
        server.close()


def test_outside_reaches_this_machines_loopback_and_returns(network):
    home = socket.create_server(("127.0.0.1", 0))
    port = home.getsockname()[1]
    try:
        with netns.entered(network):
            assert refused(port)                      # the driver's loopback is not in the namespace
            with netns.outside():
                assert not refused(port)
            assert refused(port)                      # and back inside after the block
        assert not refused(port)                      # the thread left the namespace
    finally:
        home.close()


def test_threads_started_inside_are_inside_and_the_others_stay_out(network):
    home = socket.create_server(("127.0.0.1", 0))
    port, seen, go = home.getsockname()[1], {}, threading.Event()

    def running_before():
        go.wait(30)
        seen["before"] = refused(port)
    before = threading.Thread(target=running_before)
    before.start()
    try:
        with netns.entered(network):
            inside = threading.Thread(target=lambda: seen.update(inside=refused(port)))
            inside.start()
            inside.join()
            go.set()
            before.join()
        assert seen == {"inside": True, "before": False}
    finally:
        go.set()
        home.close()


def test_entering_a_removed_network_fails_by_name():
    name = netns.create()
    netns.remove(name)
    with pytest.raises(netns.NetnsError, match=name):
        with netns.entered(name):
            pass


def test_sweep_removes_networks_of_dead_drivers_only(network):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    orphan = f"{netns.PREFIX}{dead}-0badc0de"
    subprocess.run(["ip", "netns", "add", orphan], check=True)
    try:
        assert orphan in netns.names()
        assert netns.sweep() == [orphan]
        assert orphan not in netns.names() and network in netns.names()  # ours: its driver is alive
    finally:
        netns.remove(orphan)


def test_names_carry_the_driver_pid(network):
    assert network.startswith(f"{netns.PREFIX}{os.getpid()}-")
