"""The pure parts of the mini-cluster's hosts (distributed/hosts.py): addresses only from 198.18.0.0/15,
interface names within Linux's 15 characters, leftovers found by the exact name patterns only; and
`up --hosts` without root says so and makes nothing."""
import ipaddress
import os

import pytest

from distributed import hosts, minicluster
from distributed.hosts import HostsError

pytestmark = pytest.mark.unit

CID = "0a1b2"


@pytest.mark.parametrize("value", ["198.18.0.0", "198.18.0.1", "198.18.200.7", "198.19.255.254", "198.19.255.255",
                                   "198.18.3.4/24"])
def test_addresses_of_the_benchmark_range_are_accepted(value):
    assert hosts.address(value) in ipaddress.ip_network("198.18.0.0/15")


@pytest.mark.parametrize("value", ["198.17.255.255", "198.20.0.0", "198.20.0.1", "10.0.0.1", "127.0.0.1", "0.0.0.0",
                                   "192.168.1.2", "8.8.8.8", "::1", "fe80::1", "::ffff:198.18.0.1", "host-1", ""])
def test_any_other_address_is_refused(value):
    with pytest.raises(HostsError):
        hosts.address(value)


def test_subnets_are_the_512_slash_24s_of_the_range_and_no_other():
    assert hosts.subnet(0) == ipaddress.ip_network("198.18.0.0/24")
    assert hosts.subnet(255) == ipaddress.ip_network("198.18.255.0/24")
    assert hosts.subnet(256) == ipaddress.ip_network("198.19.0.0/24")
    assert hosts.subnet(511) == ipaddress.ip_network("198.19.255.0/24")
    for index in (-1, 512, 1000, "3", 1.0):
        with pytest.raises(HostsError):
            hosts.subnet(index)


def test_pick_subnet_skips_every_network_in_use_and_wraps():
    assert hosts.pick_subnet([]) == hosts.subnet(0)
    assert hosts.pick_subnet(["198.18.0.1/24", "198.18.1.7/32"]) == hosts.subnet(2)
    assert hosts.pick_subnet(["198.18.0.0/23"], start=0) == hosts.subnet(2)
    assert hosts.pick_subnet(["10.0.0.0/8", "127.0.0.1/8", "::1/128", "fd00::2/64"], start=7) == hosts.subnet(7)
    assert hosts.pick_subnet(["198.19.255.0/24"], start=511) == hosts.subnet(0)
    assert hosts.pick_subnet(["198.18.0.0/16"], start=3) == hosts.subnet(256)
    for everything in (["198.18.0.0/15"], ["198.16.0.0/12"], ["0.0.0.0/0"]):
        with pytest.raises(HostsError):
            hosts.pick_subnet(everything)


def test_host_addresses_are_inside_their_subnet_and_the_range():
    net = hosts.subnet(300)
    assert hosts.bridge_address(net) == ipaddress.ip_address("198.19.44.1")
    assert hosts.host_address(net, 1) == ipaddress.ip_address("198.19.44.2")
    assert hosts.host_address(net, hosts.MAX_HOSTS) == ipaddress.ip_address("198.19.44.254")
    for i in (0, -1, hosts.MAX_HOSTS + 1):
        with pytest.raises(HostsError):
            hosts.host_address(net, i)
    for outside in ("10.0.0.0/24", "198.20.0.0/24", "198.18.0.0/23", "198.18.0.0/25"):
        with pytest.raises(HostsError):
            hosts.bridge_address(outside)
        with pytest.raises(HostsError):
            hosts.host_address(outside, 1)


def test_a_plan_gives_distinct_addresses_of_the_range_and_names_linux_accepts():
    plan = hosts.HostNetwork.plan(CID, hosts.MAX_HOSTS, hosts.subnet(511))
    names = [plan.bridge, *(h.veth for h in plan.hosts)]
    assert all(len(n) <= hosts.IFNAMSIZ for n in names)
    assert max(len(n) for n in names) == hosts.IFNAMSIZ  # "scidl-0a1b2-253"
    assert all(hosts.LINK_NAME.match(n) for n in names) and len(set(names)) == len(names)
    assert all(hosts.NETNS_NAME.match(h.netns) for h in plan.hosts)
    addresses = [plan.bridge_address, *(h.address for h in plan.hosts)]
    assert len(set(addresses)) == len(addresses) == hosts.MAX_HOSTS + 1
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(plan.subnet) for a in addresses)
    assert all(hosts.address(a) for a in addresses)
    assert plan.host(3).netns == f"scidl-host-{CID}-3" and plan.host(3).veth == f"scidl-{CID}-3"
    assert hosts.HostNetwork.from_dict(plan.to_dict()) == plan
    for n in (0, hosts.MAX_HOSTS + 1):
        with pytest.raises(HostsError):
            hosts.HostNetwork.plan(CID, n, hosts.subnet(0))
    with pytest.raises(HostsError):
        hosts.HostNetwork.plan(CID, 2, ipaddress.ip_network("192.168.7.0/24"))


def test_names_refuse_a_bad_cluster_id_or_host_number():
    assert hosts.cluster_id("5f3a9c0e" + "0" * 24) == "5f3a9"
    assert hosts.bridge_name(CID) == "scidl-0a1b2-br"
    for cid in ("0A1B2", "0a1b", "0a1b2c", "0a1g2", "../x", ""):
        with pytest.raises(HostsError):
            hosts.netns_name(cid, 1)
        with pytest.raises(HostsError):
            hosts.bridge_name(cid)
    for i in (0, 254, -3):
        with pytest.raises(HostsError):
            hosts.veth_name(CID, i)
    with pytest.raises(HostsError):  # a longer prefix would not fit an interface name
        hosts._iface("scidl-0a1b2-1234")


OURS = ["scidl-host-0a1b2-1", "scidl-host-0a1b2-253", "scidl-0a1b2-br", "scidl-0a1b2-7", "0a1b2.json"]
NOT_OURS = ["scidl-tf-4242-deadbeef",   # netns.py's private networks of TF servers: never touched here
            "scidl-host-0a1b2-1x", "scidl-host-0a1b2-0", "scidl-host-0a1b2-01", "scidl-host-0a1b2-1000",
            "scidl-host-0A1B2-1", "scidl-host-0a1b-1", "xscidl-host-0a1b2-1",
            "scidl-host-0a1b2-1 ", "scidl-host-0a1b2-1\n",
            "scidl-0a1b2-br0", "scidl-0a1b2-bridge", "scidl-0a1b2c-1", "scidl-0a1b2", "scidl-0a1b2-",
            "scidl-0a1b2-br\n", "eth0", "lo", "docker0", "br-0a1b2", "0a1b2.json.tmp", "0a1b2c.json", "scidl-host-",
            "scidl-host-0a1b2-1/../x"]


def test_leftovers_are_only_names_of_the_exact_patterns_of_dead_clusters():
    assert [hosts.owner(n) for n in OURS] == [CID] * len(OURS)
    assert [n for n in NOT_OURS if hosts.owner(n) is not None] == []
    live = ["scidl-host-ffff0-1", "scidl-ffff0-br", "scidl-ffff0-1", "ffff0.json"]
    names = NOT_OURS + OURS + live
    assert hosts.leftovers(names, alive={"ffff0"}) == OURS
    assert hosts.leftovers(names, alive={"ffff0", CID}) == []
    assert hosts.leftovers(names, alive=set()) == OURS + live


def test_up_with_hosts_without_root_says_so_and_makes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert hosts.unavailable() == hosts.NEEDS_ROOT
    run_dir = tmp_path / "run"
    code = minicluster.main(["up", "--hosts", "2", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 1
    assert "needs root" in err and "loopback" in err and "Traceback" not in err
    assert not run_dir.exists()  # no folder, no secret, no process


def test_hosts_need_a_worker_each(tmp_path, capsys):
    if hosts.unavailable():
        pytest.skip(hosts.unavailable())
    code = minicluster.main(["up", "--hosts", "3", "--workers", "2", "--run-dir", str(tmp_path / "run")])
    assert code == 1 and "--hosts 3 needs a worker on each host; got --workers 2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_workers_are_spread_over_the_hosts_round_robin_and_each_host_has_one_datanode():
    assert minicluster.host_roles(3, 3, hdfs=False) == [["worker-1"], ["worker-2"], ["worker-3"]]
    assert minicluster.host_roles(5, 3, hdfs=True) == [["worker-1", "worker-4", "datanode-1"],
                                                       ["worker-2", "worker-5", "datanode-2"],
                                                       ["worker-3", "datanode-3"]]
    assert [minicluster.host_of_worker(w, 2) for w in (1, 2, 3, 4)] == [1, 2, 1, 2]
