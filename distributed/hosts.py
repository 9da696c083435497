"""Hosts for the mini-cluster on one machine: Linux network namespaces on a bridge of the cluster's own.

    python -m distributed.minicluster up --hosts 3 [--hdfs]     (root only)

Host i of cluster <id> is the network namespace `scidl-host-<id>-<i>`; its interface `eth0` (the inner
end of the veth pair `scidl-<id>-<i>`) has the address 198.18.<k>.<i+1>/24 and the bridge `scidl-<id>-br`
in the machine's own namespace has 198.18.<k>.1, where the master and the driver sit. <id> is five hex
digits (the first five of the cluster's run id); <k> is a /24 of 198.18.0.0/15 (RFC 2544: network
benchmark tests) that no interface of the machine uses yet, so 198.18.<k> stands for any of the 512
/24s of 198.18.0.0-198.19.255.0.

Each host also has a cgroup of the same name as its namespace (host_stats.py), which its processes enter
with the namespace, so that its CPU and memory are counted per host, as its bytes are on its veth pair.

Nothing routes off the machine: a host's only routes are its own /24 (to the bridge and the other
hosts) and its loopback; there is no default route, no NAT, and ip_forward is left as it is. No address
outside 198.18.0.0/15 is ever assigned (`address` and `subnet` refuse one).

The creating process writes a record /run/scidl-hosts/<id>.json (its pid, the cluster's run id) before it
makes anything. A cluster is alive while that process lives, a process of its run lives (processes.py's
tag), or a process sits in one of its namespaces; `sweep` deletes the namespaces, links and record of
every cluster that is not, and only names that match the exact patterns above.

TensorFlow's servers on hosts: a second network. TensorFlow's gRPC servers bind every interface and have
no authentication. So each host has a second network card for them alone: a namespace
`scidl-host-<id>-<i>-tf` whose interface `eth1` (the inner end of the veth pair `scidl-<id>t<i>`) has
198.18.<m>.<i+1>/24 on a second bridge `scidl-<id>-tf` that has no address. A role's TensorFlow thread
enters its host's one (netns.entered; tfos.RoleContext.private_network) and its cluster spec names each
host by that address (tf_cluster_spec), so TF traffic crosses the bridge from host to host and counts on
the hosts' links (host_stats adds both cards), while nothing outside those namespaces reaches the servers:
the machine's namespace has no address or route on 198.18.<m>, the hosts' own namespaces have no route to
it, and entering a namespace takes root. <m> is another /24 of the range. On loopback netns.py gives a
run's servers one namespace of their own instead (all on one `lo`).
"""
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from distributed import host_stats

RANGE = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544: reserved for network benchmark tests
SUBNETS = 2 ** (24 - RANGE.prefixlen)           # 512 /24s
MAX_HOSTS = 253                                 # .2 to .254 of a /24 (.1 is the bridge)
IFNAMSIZ = 15                                   # longest Linux interface name
PREFIX = "scidl-"
NETNS_PREFIX = f"{PREFIX}host-"
NETNS_DIR = "/run/netns"
RECORD_DIR = Path("/run/scidl-hosts")
INNER_IFACE = "eth0"  # a host's end of its veth pair, inside its namespace
TF_IFACE = "eth1"     # a host's end of its TensorFlow link, inside the host's TF namespace
CLONE_NEWNET = 0x40000000
_ID = "[0-9a-f]{5}"
NETNS_NAME = re.compile(rf"\A{re.escape(NETNS_PREFIX)}({_ID})-([1-9]\d{{0,2}})\Z")
TF_NETNS_NAME = re.compile(rf"\A{re.escape(NETNS_PREFIX)}({_ID})-([1-9]\d{{0,2}})-tf\Z")
LINK_NAME = re.compile(rf"\A{re.escape(PREFIX)}({_ID})(-br|-tf|-[1-9]\d{{0,2}}|t[1-9]\d{{0,2}})\Z")
RECORD_NAME = re.compile(rf"\A({_ID})\.json\Z")
NEEDS_ROOT = ("`up --hosts` needs root: it creates network namespaces, a bridge and veth pairs. "
              "Run it as root, or leave out --hosts: the mini-cluster then runs on loopback (the default), "
              "which needs no root.")


class HostsError(RuntimeError):
    """Hosts could not be made, entered or removed."""


# -- pure parts: addresses and names ---------------------------------------------------------------
def address(value) -> ipaddress.IPv4Address:
    """`value` as an address of 198.18.0.0/15; anything else is refused."""
    try:
        addr = ipaddress.ip_address(str(value).split("/")[0])
    except ValueError:
        raise HostsError(f"{value!r} is not an IP address") from None
    if addr.version != 4 or addr not in RANGE:
        raise HostsError(f"{value} is outside {RANGE}: the mini-cluster's hosts use no other range")
    return addr


def subnet(index: int) -> ipaddress.IPv4Network:
    """The index-th /24 of 198.18.0.0/15 (0 to 511)."""
    if not isinstance(index, int) or not 0 <= index < SUBNETS:
        raise HostsError(f"subnet index {index!r} is not in 0..{SUBNETS - 1} (the /24s of {RANGE})")
    return ipaddress.IPv4Network((int(RANGE.network_address) + 256 * index, 24))


def pick_subnet(used: list, start: int = 0) -> ipaddress.IPv4Network:
    """The first /24 of 198.18.0.0/15 from `start` on (wrapping) that overlaps none of the networks in
    `used` (strings or networks, e.g. every address/prefix on the machine's interfaces)."""
    taken = [ipaddress.ip_network(str(n), strict=False) for n in used]
    taken = [n for n in taken if n.version == 4]
    for step in range(SUBNETS):
        candidate = subnet((start + step) % SUBNETS)
        if not any(candidate.overlaps(n) for n in taken):
            return candidate
    raise HostsError(f"every /24 of {RANGE} is in use on this machine")


def subnet_index(net) -> int:
    """Which /24 of 198.18.0.0/15 `net` is (the inverse of `subnet`)."""
    return (int(_in_range_subnet(net).network_address) - int(RANGE.network_address)) >> 8


def bridge_address(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The bridge's side of a host subnet: .1."""
    return address(_in_range_subnet(net).network_address + 1)


def host_address(net: ipaddress.IPv4Network, i: int) -> ipaddress.IPv4Address:
    """Host i's address (i from 1): .i+1 of the subnet."""
    _check_index(i)
    return address(_in_range_subnet(net).network_address + 1 + i)


def _in_range_subnet(net) -> ipaddress.IPv4Network:
    net = ipaddress.ip_network(str(net))
    if net.prefixlen != 24 or not net.subnet_of(RANGE):
        raise HostsError(f"{net} is not a /24 of {RANGE}")
    return net


def _check_id(cid: str) -> str:
    if not re.fullmatch(_ID, str(cid)):
        raise HostsError(f"cluster id {cid!r} is not five lowercase hex digits")
    return cid


def _check_index(i: int) -> int:
    if not isinstance(i, int) or not 1 <= i <= MAX_HOSTS:
        raise HostsError(f"host number {i!r} is not in 1..{MAX_HOSTS}")
    return i


def cluster_id(run_id: str) -> str:
    """A cluster's id in its host names: the first five hex digits of its run id."""
    return _check_id(run_id[:5])


def netns_name(cid: str, i: int) -> str:
    return f"{NETNS_PREFIX}{_check_id(cid)}-{_check_index(i)}"


def tf_netns_name(cid: str, i: int) -> str:
    """Host i's second namespace: its network card for TensorFlow's servers."""
    return f"{netns_name(cid, i)}-tf"


def _iface(name: str) -> str:
    if len(name) > IFNAMSIZ:
        raise HostsError(f"interface name {name!r} is longer than {IFNAMSIZ} characters")
    return name


def veth_name(cid: str, i: int) -> str:
    """The machine's end of host i's veth pair (enslaved to the bridge)."""
    return _iface(f"{PREFIX}{_check_id(cid)}-{_check_index(i)}")


def tf_veth_name(cid: str, i: int) -> str:
    """The machine's end of host i's TensorFlow link (enslaved to the TF bridge)."""
    return _iface(f"{PREFIX}{_check_id(cid)}t{_check_index(i)}")


def bridge_name(cid: str) -> str:
    return _iface(f"{PREFIX}{_check_id(cid)}-br")


def tf_bridge_name(cid: str) -> str:
    return _iface(f"{PREFIX}{_check_id(cid)}-tf")


def owner(name: str) -> str | None:
    """The cluster id in a namespace, link or record name of the exact patterns; None for any other."""
    for pattern in (NETNS_NAME, TF_NETNS_NAME, LINK_NAME, RECORD_NAME):
        found = pattern.match(name)
        if found:
            return found.group(1)
    return None


def leftovers(names: list[str], alive: set[str]) -> list[str]:
    """Of `names` (namespaces, links or records), those of the exact patterns whose cluster is not alive."""
    return [n for n in names if (cid := owner(n)) is not None and cid not in alive]


# -- the machine ------------------------------------------------------------------------------------
def unavailable() -> str | None:
    """Why this machine (or user) cannot make hosts, or None if it can."""
    if not os.path.exists("/proc/self/ns/net"):
        return "hosts are Linux network namespaces; this is not Linux. Leave out --hosts to run on loopback."
    if os.geteuid() != 0:
        return NEEDS_ROOT
    if not shutil.which("ip"):
        return "`up --hosts` needs `ip` (iproute2) on PATH. Leave out --hosts to run on loopback."
    return None


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise HostsError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


def netns_names() -> list[str]:
    """Namespaces on this machine with the hosts' exact patterns (a host, its TF side), of any cluster."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if NETNS_NAME.match(n) or TF_NETNS_NAME.match(n))
    except FileNotFoundError:
        return []


def link_names() -> list[str]:
    """Links in the machine's namespace with the hosts' exact pattern (bridges and veth ends), of any cluster."""
    if not shutil.which("ip"):
        return []  # no iproute2 (not Linux): no hosts were ever made here
    found = json.loads(_ip("-j", "link", "show") or "[]")
    return sorted(link["ifname"] for link in found if LINK_NAME.match(link.get("ifname", "")))


@contextlib.contextmanager
def planning():
    """Held from picking a cluster's subnets until its bridges carry them: two clusters started at the
    same time (test processes side by side) would otherwise pick the same free /24."""
    import fcntl
    RECORD_DIR.mkdir(mode=0o700, exist_ok=True)
    with open(RECORD_DIR / ".planning.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def used_networks() -> list[str]:
    """Every IPv4 address/prefix on the machine's interfaces, and every route's destination."""
    used = [f"{a['local']}/{a['prefixlen']}" for link in json.loads(_ip("-j", "-4", "addr", "show") or "[]")
            for a in link.get("addr_info", []) if a.get("family") == "inet"]
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default" and re.fullmatch(r"[\d.]+(/\d+)?", dst):
            used.append(dst)
    return used


def netns_inode(name: str) -> int:
    """The inode that identifies namespace `name` (what /proc/<pid>/ns/net of a process inside shows)."""
    return os.stat(os.path.join(NETNS_DIR, name)).st_ino


def pids_inside(names: list[str]) -> list[int]:
    """Processes whose network namespace is one of `names`."""
    inodes = set()
    for name in names:
        try:
            inodes.add(netns_inode(name))
        except FileNotFoundError:
            continue
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                    found.append(int(entry))
            except OSError:
                continue
    return found


@dataclass
class Host:
    number: int
    netns: str
    veth: str
    address: str
    roles: list[str] = field(default_factory=list)  # e.g. ["worker-1", "datanode-1"]
    tf_netns: str = ""    # its second card, for TensorFlow's servers ("": a cluster made without one)
    tf_veth: str = ""
    tf_address: str = ""


@dataclass
class HostNetwork:
    """The bridge and hosts of one cluster (what the cluster's state.json keeps under `network`)."""
    cid: str
    bridge: str
    subnet: str
    bridge_address: str
    hosts: list[Host]
    tf_bridge: str = ""  # the bridge of the hosts' TF cards (no address), and their /24
    tf_subnet: str = ""

    @classmethod
    def plan(cls, cid: str, n: int, net: ipaddress.IPv4Network,
             tf_net: ipaddress.IPv4Network | None = None) -> "HostNetwork":
        """n hosts on `net`, their TF cards on `tf_net` (default: the /24 after `net`)."""
        if not 1 <= n <= MAX_HOSTS:
            raise HostsError(f"--hosts must be 1 to {MAX_HOSTS}, got {n}")
        net = _in_range_subnet(net)
        tf_net = _in_range_subnet(tf_net or pick_subnet([net], subnet_index(net) + 1))
        if tf_net.overlaps(net):
            raise HostsError(f"the TF cards' network {tf_net} is the hosts' own")
        return cls(cid, bridge_name(cid), str(net), str(bridge_address(net)),
                   [Host(i, netns_name(cid, i), veth_name(cid, i), str(host_address(net, i)), [],
                         tf_netns_name(cid, i), tf_veth_name(cid, i), str(host_address(tf_net, i)))
                    for i in range(1, n + 1)],
                   tf_bridge_name(cid), str(tf_net))

    @classmethod
    def from_dict(cls, raw: dict) -> "HostNetwork":
        return cls(**{**raw, "hosts": [Host(**h) for h in raw["hosts"]]})

    def to_dict(self) -> dict:
        return {"cid": self.cid, "bridge": self.bridge, "subnet": self.subnet,
                "bridge_address": self.bridge_address, "hosts": [h.__dict__ for h in self.hosts],
                "tf_bridge": self.tf_bridge, "tf_subnet": self.tf_subnet}

    def tf_network(self) -> dict | None:
        """What a run's roles need to put TensorFlow on the hosts' TF cards (tfos.run(tf_network=...)):
        per host address, its TF namespace and TF address. None for a cluster made without them."""
        if not self.tf_bridge:
            return None
        return {"netns": {h.address: h.tf_netns for h in self.hosts},
                "address": {h.address: h.tf_address for h in self.hosts}, "subnet": self.tf_subnet}

    def host(self, number: int) -> Host:
        return self.hosts[number - 1]

    @property
    def record(self) -> Path:
        return RECORD_DIR / f"{self.cid}.json"

    # -- making and removing ------------------------------------------------------------------
    def create(self, run_id: str) -> None:
        """The record, the bridge with .1, and per host a namespace with lo up and eth0 on the bridge;
        then the TF cards (eth1 in each host's TF namespace, on the TF bridge). On any failure removes
        what it made and raises."""
        reason = unavailable()
        if reason:
            raise HostsError(reason)
        _write_record(self.cid, run_id)
        try:
            _add_bridge(self.bridge, f"{address(self.bridge_address)}/{ipaddress.IPv4Network(self.subnet).prefixlen}")
            for host in self.hosts:
                _ip("netns", "add", host.netns)
                host_stats.create(host.netns)  # its CPU and memory, counted per host (host_stats.py)
                _add_card(host.netns, INNER_IFACE, host.veth, self.bridge, host.address, self.subnet)
            if self.tf_bridge:  # the TF cards: a bridge with no address, so the machine gets no way onto it
                _add_bridge(self.tf_bridge, None)
                for host in self.hosts:
                    _ip("netns", "add", host.tf_netns)
                    _add_card(host.tf_netns, TF_IFACE, host.tf_veth, self.tf_bridge, host.tf_address, self.tf_subnet)
        except BaseException:
            self.remove()
            raise

    def _names(self) -> tuple[list[str], list[str]]:
        """(namespaces, links) this network makes."""
        spaces = [h.netns for h in self.hosts] + [h.tf_netns for h in self.hosts if h.tf_netns]
        links = [h.veth for h in self.hosts] + [h.tf_veth for h in self.hosts if h.tf_veth] + \
            [b for b in (self.bridge, self.tf_bridge) if b]
        return spaces, links

    def remove(self) -> list[str]:
        """Delete the hosts' namespaces, veth pairs and bridges, then the record; returns the names deleted."""
        return _delete(self.cid, *self._names())

    @contextlib.contextmanager
    def cut_off(self, number: int):
        """Host `number` cut off the network while the block runs: the machine's ends of its veth pairs
        (both cards) are down, its processes keep running, as on a machine whose cables are pulled; back
        up afterwards, also when the block fails."""
        host = self.host(number)
        veths = [v for v in (host.veth, host.tf_veth) if v]
        try:
            for veth in veths:
                _ip("link", "set", veth, "down")
            yield host
        finally:
            for veth in veths:
                _ip("link", "set", veth, "up")

    def left(self) -> list[str]:
        """What of this network still exists (namespaces, links, record)."""
        spaces, links = self._names()
        present = set(link_names())
        return ([n for n in spaces if os.path.exists(os.path.join(NETNS_DIR, n))]
                + [f"cgroup {h.netns}" for h in self.hosts if host_stats.exists(h.netns)]
                + [n for n in links if n in present]
                + ([str(self.record)] if self.record.exists() else []))


def _add_bridge(name: str, cidr: str | None) -> None:
    """A bridge in the machine's namespace, up, with address `cidr` or none."""
    _ip("link", "add", name, "type", "bridge")
    # addrgenmode none: no IPv6 link-local address either; the hosts' only addresses are theirs.
    _ip("link", "set", name, "addrgenmode", "none")
    if cidr:
        _ip("addr", "add", cidr, "dev", name)
    _ip("link", "set", name, "up")


def _add_card(netns: str, iface: str, veth: str, bridge: str, addr: str, net: str) -> None:
    """Namespace `netns` (made already) gets lo up and `iface` with `addr` on its /24, the inner end of
    veth pair `veth` whose machine end is enslaved to `bridge`."""
    _ip("-n", netns, "link", "set", "lo", "up")
    _ip("link", "add", veth, "type", "veth", "peer", "name", iface, "netns", netns)
    _ip("link", "set", veth, "addrgenmode", "none")
    _ip("-n", netns, "link", "set", iface, "addrgenmode", "none")
    _ip("link", "set", veth, "master", bridge)
    _ip("link", "set", veth, "up")
    _ip("-n", netns, "addr", "add", f"{address(addr)}/{ipaddress.IPv4Network(net).prefixlen}", "dev", iface)
    _ip("-n", netns, "link", "set", iface, "up")


def _write_record(cid: str, run_id: str) -> None:
    import psutil
    RECORD_DIR.mkdir(mode=0o700, exist_ok=True)
    path = RECORD_DIR / f"{cid}.json"
    if path.exists() or os.path.exists(os.path.join(NETNS_DIR, netns_name(cid, 1))):
        raise HostsError(f"hosts of cluster {cid} exist already ({path})")
    me = psutil.Process()
    path.write_text(json.dumps({"pid": me.pid, "create_time": me.create_time(), "run_id": run_id}))


def _delete(cid: str, namespaces: list[str], links: list[str], cgroups: list[str] = ()) -> list[str]:
    deleted = []
    for name in namespaces:
        if (NETNS_NAME.match(name) or TF_NETNS_NAME.match(name)) and os.path.exists(os.path.join(NETNS_DIR, name)):
            _ip("netns", "delete", name)  # takes the inner end of its veth pair, and so the pair, with it
            deleted.append(name)
    for name in sorted({*namespaces, *cgroups}):  # a host's cgroup bears its namespace's name
        try:
            if NETNS_NAME.match(name) and host_stats.exists(name) and host_stats.remove(name):
                deleted.append(f"cgroup {name}")
        except host_stats.CgroupError as exc:
            raise HostsError(str(exc)) from None
    links = [n for n in links if LINK_NAME.match(n)]
    for name in sorted(set(links) & set(link_names())):
        # A veth end may vanish on its own meanwhile (the kernel removes a deleted namespace's pairs
        # in the background): what counts is that none is left below.
        _ip("link", "delete", name, check=False)
        deleted.append(name)
    deadline = time.monotonic() + 10
    while (left := sorted(set(links) & set(link_names()))) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        raise HostsError(f"could not delete {', '.join(left)}")
    (RECORD_DIR / f"{_check_id(cid)}.json").unlink(missing_ok=True)
    return deleted


def alive_clusters(cids: set[str]) -> set[str]:
    """Of `cids`, the clusters that are alive: their creating process, a process of their run, or a
    process inside one of their namespaces is running."""
    from distributed import processes
    alive = set()
    spaces = netns_names()
    for cid in cids:
        try:
            record = json.loads((RECORD_DIR / f"{cid}.json").read_text())
        except (OSError, ValueError):
            record = {}
        if record.get("pid") and processes.alive(int(record["pid"]), record.get("create_time")):
            alive.add(cid)
        elif record.get("run_id") and processes.tagged(record["run_id"]):
            alive.add(cid)
        elif pids_inside([n for n in spaces if owner(n) == cid]):
            alive.add(cid)
    return alive


def sweep() -> list[str]:
    """Delete the namespaces, links and records of every cluster that is not alive (a crashed `up`, a
    cluster whose processes were killed); only names of the exact patterns. Returns what it deleted."""
    spaces = netns_names()
    links = link_names()
    groups = [n for n in host_stats.names(NETNS_PREFIX) if NETNS_NAME.match(n)]
    records = sorted(p.name for p in RECORD_DIR.glob("*.json")) if RECORD_DIR.is_dir() else []
    cids = {owner(n) for n in spaces + links + groups + records} - {None}
    if not cids:
        return []
    if unavailable():
        raise HostsError(f"hosts of clusters {', '.join(sorted(cids))} are left on this machine and only root "
                         f"can remove them: {', '.join(spaces + links)}")
    dead = cids - alive_clusters(cids)
    deleted = []
    for cid in sorted(dead):
        deleted += _delete(cid, [n for n in leftovers(spaces, set()) if owner(n) == cid],
                           [n for n in leftovers(links, set()) if owner(n) == cid],
                           [n for n in groups if owner(n) == cid])
    return deleted


def in_netns(name: str | None):
    """A preexec_fn for subprocess.Popen that moves the child into host `name` before it execs: its
    network namespace and its cgroup (None: stays). Returns (preexec_fn, close): call close() in the
    parent once Popen returned."""
    if not name:
        return None, lambda: None
    if not NETNS_NAME.match(name):
        raise HostsError(f"{name!r} is not a host of the mini-cluster")
    try:
        group = os.open(host_stats.procs_file(name), os.O_WRONLY | os.O_CLOEXEC)
    except (OSError, host_stats.CgroupError) as exc:
        raise HostsError(f"cannot enter the cgroup of host {name}: {exc}") from None
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    setns = ctypes.CDLL(None, use_errno=True).setns  # looked up before the fork, called after it

    def enter():
        os.write(group, str(os.getpid()).encode())
        if setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")

    def close():
        os.close(fd)
        os.close(group)
    return enter, close
