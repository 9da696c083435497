"""A real Spark standalone mini-cluster shared by the cluster tests, torn down by pid: on hosts (network
namespaces, distributed/hosts.py) wherever the machine allows it (root), as a real cluster's nodes, else
on loopback; and a real HDFS (NameNode + 2 DataNodes, on the first two hosts) for the tests marked
`hdfs`, also one per session."""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from conf import load_cluster
from distributed import hosts, processes
from distributed.hdfs_cluster import HdfsCluster
from distributed.minicluster import up_on_free_ports
from rdd_io import storage

from .sniff import Sniffer

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 5  # the land-cover roles need 5 executors; other jobs use fewer
# The session's Dom-ST run: the two approaches of the paper's timed figures (Table 1's speedups, the overall
# S(Singlehead(+P)) / IP-D(Dom-ST)), each its own S and IP-D run, and two ablation variants (the
# parameter-matched one and one head) in one more run. Every approach and variant is one more model per
# watershed; the unit tests build every one.
DOMST_APPROACHES = ("singlehead_p", "domst")
DOMST_ABLATION = ("singlehead_p_wide", "domst_k1")
MASTER_TRAFFIC: list[list[bytes]] = []  # TCP payloads to and from the master port during `up` (root only)


TINY_RUNS = {"tiny_redshift", "tiny_landcover", "tiny_domst", "tiny_spacetime", "tiny_outputs"}


def pytest_collection_modifyitems(items):
    from tests.conftest import TINY_RUN_FILES
    for item in items:
        if "tests/cluster" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)
            if TINY_RUNS & set(item.fixturenames) and item.fspath.basename not in TINY_RUN_FILES:
                raise pytest.UsageError(f"{item.nodeid} reads a tiny run: add {item.fspath.basename} to "
                                        "TINY_RUN_FILES in tests/conftest.py (one process makes the tiny runs)")


def on_hosts() -> bool:
    """Whether the session's cluster runs on hosts: wherever the machine allows it. CI runs as root, so
    there it must: a machine that cannot make hosts fails the run instead of falling back to loopback."""
    reason = hosts.unavailable()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI runs as root and must run the cluster tests on hosts: {reason}")
    return reason is None


@pytest.fixture(scope="session")
def minicluster(tmp_path_factory):
    # A busy shared machine can take minutes to start the JVMs: the bound is generous, not a measure.
    hosted = on_hosts()
    with contextlib.ExitStack() as stack:
        # an eavesdropper: on loopback, or on every interface (the hosts' bridge does not exist yet)
        sniffer = stack.enter_context(Sniffer(None if hosted else "lo")) if os.geteuid() == 0 else None
        cluster = up_on_free_ports(replace(load_cluster(), start_timeout_s=300),
                                   tmp_path_factory.mktemp("minicluster"), WORKERS, hosts=WORKERS if hosted else 0)
    if sniffer:  # what went to and from the master while the workers registered
        MASTER_TRAFFIC.append(sniffer.payloads(cluster.cfg.master_port))
    run_id = cluster.state.run_id
    try:
        yield cluster
    finally:
        cluster.down()
        assert processes.tagged(run_id) == [], "mini-cluster processes outlived `down`"


def listening(pid: int) -> list[tuple[str, int]]:
    """(ip, port) of every TCP socket process `pid` listens on, read in the process's own network namespace
    (/proc/<pid>/net/tcp*; psutil reads the caller's, so it misses a process on a host)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with open(f"/proc/{pid}/net/{table}") as fh:
            for row in list(fh)[1:]:
                fields = row.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                    continue
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append((socket.inet_ntop(family, raw).removeprefix("::ffff:"), int(port, 16)))
    return found


def hdfs_possible() -> bool:
    """An HDFS can be started: Maven fetches Hadoop's jars. Under CI it must be (a missing Maven fails)."""
    import shutil
    return bool(shutil.which("mvn") or os.environ.get("CI"))


@pytest.fixture(scope="session")
def hdfs(tmp_path_factory, minicluster):
    """A NameNode and two DataNodes, permissions on; stopped by pid even when a test fails. Beside the
    session's cluster: on hosts, the NameNode on the bridge and DataNode i on host i, else on loopback.
    Without Maven the HDFS tests are skipped on a laptop, but fail under CI (CI=true)."""
    if not hdfs_possible():
        pytest.skip("Maven (mvn) is needed to fetch Hadoop's jars for the HDFS tests")
    network = minicluster.network
    on = {"host": network.bridge_address, "datanode_hosts": [(h.address, h.netns) for h in network.hosts[:2]]} \
        if network else {}
    cluster = HdfsCluster(tmp_path_factory.mktemp("hdfs"), **on)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()
        if cluster.state:
            assert processes.tagged(cluster.state.run_id) == [], "HDFS daemons outlived `down`"


def minicluster_cli(run_dir: Path) -> tuple[list[str], list[str], dict[str, str]]:
    """`python -m distributed.minicluster` as a user runs it: the command, options for a run folder of its
    own on free ports, and the environment."""
    from distributed.minicluster import free_ports
    master, ui, worker_ui = free_ports("127.0.0.1", 3)
    opts = ["--run-dir", str(run_dir), "--set", f"master_port={master}", "--set", f"master_ui_port={ui}",
            "--set", f"worker_ui_port={worker_ui}", "--set", "start_timeout_s=300"]
    return [sys.executable, "-m", "distributed.minicluster"], opts, dict(os.environ, PYTHONPATH=str(ROOT))


def cluster_daemons(cluster) -> set[int]:
    return set(cluster.state.pids.values())


def run_job(script: str, *args: str, timeout: float = 420, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a job the way a user does: `python jobs/<case>.py ...`, output captured."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "jobs" / script), *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def failed_on_input(cluster, case: str, out: Path, input_uri: str, *sets: str) -> dict:
    """Run a tiny job on the user-given input `input_uri` that must fail (exit 1); its summary (status
    failed)."""
    args = [a for key_value in sets for a in ("--set", key_value)]
    proc = run_job(f"{case}.py", "--preset", "tiny", "--master", cluster.state.master_url,
                   "--set", f"cluster.run_dir={cluster.run_dir}", "--output", str(out),
                   "--set", "data.source=files", "--set", f"data.input={input_uri}", *args)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed", summary
    return summary


def leftovers(cluster, timeout_s: float = 30) -> list[str]:
    """Processes of the cluster's run other than its master and workers, once they had time to exit."""
    import time
    deadline = time.monotonic() + timeout_s
    while True:
        extra = [p for p in processes.tagged(cluster.state.run_id) if p.pid not in cluster_daemons(cluster)]
        if not extra or time.monotonic() > deadline:
            return [f"{p.pid}: {' '.join(p.cmdline())[:160]}" for p in extra]
        time.sleep(1)


# ---------------------------------------------------------------- tiny runs, once per session
# The job tests and the output tests (schema, notebook, HTML report) read the same real runs: each case
# study runs once, the first time a test asks for it, into one root laid out as `make demo` lays out
# outputs/ (<root>/redshift, <root>/landcover, <root>/domst, <root>/spacetime). The runs read their input
# from and write their outputs to the session's HDFS, as on a cluster; each finished run is copied into
# tiny_root on the local disk for the tests to read. Without Maven on a laptop (not CI) they run on file://.
@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="session")
def tiny_uri_root(request, tiny_root) -> str:
    """Where the tiny runs write: <the session's HDFS>/outputs, or tiny_root itself without Maven."""
    if hdfs_possible():
        return f"{request.getfixturevalue('hdfs').state.uri}/outputs"
    return storage.to_uri(tiny_root)


TINY_STDOUT: dict[str, str] = {}  # case -> what its tiny run printed (not a terminal: plain progress lines)
TINY_CMDLINES: dict[str, set[str]] = {}  # case -> every command line of its processes seen while it ran


def job_cmdlines(job_pid: int, run_id: str) -> set[str]:
    """Command lines (what any local user reads in `ps`) of a job's driver and its children, and of
    every process of the cluster's run (executors, Python workers, TFoS managers and roles)."""
    import psutil
    try:
        driver = psutil.Process(job_pid)
        procs = [driver, *driver.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    seen = set()
    for proc in procs + processes.tagged(run_id):
        try:
            seen.add(" ".join(proc.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return seen


TF_PROBES: dict[str, dict] = {}  # case -> what probe_tf_servers found while its TF servers were up
TF_SERVER_CASES = ("landcover",)  # studies whose roles run TensorFlow's gRPC servers


def _connects(host: str, port: int) -> int:
    """0 if a TCP connection to host:port opens, else the errno (or -1 on a timeout)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(5)
        try:
            return s.connect_ex((host, port))
        except OSError as exc:
            return exc.errno or -1


def probe_tf_servers(line: str, found: dict, network: hosts.HostNetwork | None = None) -> None:
    """On the driver's 'TFoS roles up: job:i@host:port, ...; their TF servers in private network NAME'
    line (on hosts: '... on the hosts' TF cards (SUBNET)'), while the TF servers are up: connect to every
    TF server's port from inside the run's network (a member, which must get in: the servers are there;
    on hosts, from the TF card of the server's host to that card's address) and then from outside it:
    this machine's own network on each of its addresses, and on hosts also the server's host's own
    network on its address and on the TF card's (not members: must be refused). Results go into `found`."""
    import psutil
    from distributed import netns
    servers = [(f"{job}:{i}", host, int(port))
               for job, i, host, port in re.findall(r"(\w+):(\d+)@([\d.]+):(\d+)", line)]
    private = re.search(r"private network (\S+)", line)
    cards = re.search(r"on the hosts' TF cards \(([\d./]+)\)", line)
    found.update(servers=servers, network=private and private.group(1), tf_subnet=cards and cards.group(1),
                 member={}, outsider={})
    if not (private or cards and network):
        return
    by_address = {h.address: h for h in network.hosts} if network else {}

    def inside(host: str):  # where a member connects from, and to which address
        if private:
            return netns.entered(found["network"]), host
        return netns.entered(by_address[host].tf_netns), by_address[host].tf_address

    deadline = time.monotonic() + 120
    for role, host, port in servers:  # a member: wait until every server listens
        place, address = inside(host)
        with place:
            while (code := _connects(address, port)) != 0 and time.monotonic() < deadline:
                time.sleep(0.5)
        found["member"][role] = code
    addresses = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                 if a.family in (socket.AF_INET, socket.AF_INET6) and not a.address.startswith("fe80")}
    for role, host, port in servers:
        found["outsider"][role] = {address: _connects(address, port) for address in sorted(addresses)}
        if cards:  # the server's own host, off its TF card
            with netns.entered(by_address[host].netns):
                for address in (host, by_address[host].tf_address):
                    found["outsider"][role][f"{by_address[host].netns}->{address}"] = _connects(address, port)


PS_PROBES: dict[str, dict] = {}  # case -> what probe_parameter_server found while its ps was up


def probe_parameter_server(line: str, found: dict) -> None:
    """On the driver's 'TFoS roles up: ps:0@host:port, ...' line, while training: a client with a wrong
    secret connects to the parameter server, which must refuse it (AuthError). Result in `found`."""
    from distributed import ps_wire
    address = re.search(r"ps:0@([\d.]+):(\d+)", line)
    found.update(address=address and address.group(0), refused=None)
    deadline = time.monotonic() + 60
    while address and found["refused"] is None and time.monotonic() < deadline:
        try:
            with socket.create_connection((address.group(1), int(address.group(2))), timeout=5) as sock:
                try:
                    ps_wire.client_handshake(sock, b"not-the-run-secret-0123456789")
                    found["refused"] = False
                except ps_wire.AuthError:
                    found["refused"] = True
        except ConnectionRefusedError:
            time.sleep(0.2)  # the ps listens once its model is built


def _tiny_run(cluster, root: Path, uri_root: str, case: str, *sets: str, timeout: float = 420) -> Path:
    out, uri = root / case, storage.join(uri_root, case)
    args = [a for key_value in sets for a in ("--set", key_value)]
    cmd = [sys.executable, str(ROOT / "jobs" / f"{case}.py"), "--preset", "tiny", "--master",
           cluster.state.master_url, "--set", f"cluster.run_dir={cluster.run_dir}", "--output", uri, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    stdout: list[str] = []
    stderr: list[str] = []
    done = threading.Event()
    probes = []

    def watch():  # while the job runs, as an attacker polling `ps` would
        while not done.wait(1.0):
            seen.update(job_cmdlines(proc.pid, cluster.state.run_id))

    def read_stdout():
        for line in proc.stdout:
            stdout.append(line)
            if case in TF_SERVER_CASES and "TFoS roles up" in line:
                probe = threading.Thread(target=probe_tf_servers,
                                         args=(line, TF_PROBES.setdefault(case, {}), cluster.network))
                probe.start()
                probes.append(probe)
            if case == "redshift" and "TFoS roles up" in line and case not in PS_PROBES:
                probe = threading.Thread(target=probe_parameter_server, args=(line, PS_PROBES.setdefault(case, {})))
                probe.start()
                probes.append(probe)

    threads = [threading.Thread(target=watch), threading.Thread(target=read_stdout),
               threading.Thread(target=lambda: stderr.extend(proc.stderr))]
    for t in threads:
        t.daemon = True
        t.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass  # reported below with what the job printed
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for t in threads + probes:
            t.join(timeout=180)
    text, errors = "".join(stdout), "".join(stderr)
    assert proc.returncode == 0, \
        f"exit {proc.returncode} (-9: killed after {timeout:.0f}s)\n" + text[-5000:] + errors[-3000:]
    TINY_STDOUT[case], TINY_CMDLINES[case] = text, seen
    if not storage.is_local(uri):
        storage.download_tree(uri, out)
    return out


@pytest.fixture(scope="session")
def tiny_redshift(minicluster, tiny_root, tiny_uri_root) -> Path:
    """Baseline + 2 workers on different halves of 600 spectra, 3 epochs, no ablation."""
    return _tiny_run(minicluster, tiny_root, tiny_uri_root, "redshift", "data.sizes=[600]", "train.max_epochs=3",
                     "experiments.workers=[2]", "experiments.data_modes=[different]", "experiments.ablation=false")


@pytest.fixture(scope="session")
def tiny_landcover(minicluster, tiny_root, tiny_uri_root) -> Path:
    """`default` and `scheme4` for the tiny preset's 6 s window each, the default plan at batch sizes 10 and 40
    for the same window, beside the single machine."""
    if WORKERS < 5:
        pytest.skip("the land-cover roles need 5 executors (ps, chief, 3 workers)")
    return _tiny_run(minicluster, tiny_root, tiny_uri_root, "landcover", "experiments.plans=[default,scheme4]",
                     "experiments.data_parallel=false", timeout=600)


@pytest.fixture(scope="session")
def tiny_domst(minicluster, tiny_root, tiny_uri_root) -> Path:
    """Three watersheds, one per node under IP-D, all on one node under S, each approach in its own S and
    IP-D run, the ablation's variants in one more IP-D run; 2 epochs."""
    return _tiny_run(minicluster, tiny_root, tiny_uri_root, "domst", "data.watersheds=3", "train.epochs=2",
                     f"experiments.approaches=[{','.join(DOMST_APPROACHES)}]",
                     f"experiments.ablation=[{','.join(DOMST_ABLATION)}]", timeout=900)


@pytest.fixture(scope="session")
def tiny_spacetime(minicluster, tiny_root, tiny_uri_root) -> Path:
    """Space, depth and space x depth on 1, 2 and 4 processes (8^3 and 2 layers per process), 2 timed steps."""
    return _tiny_run(minicluster, tiny_root, tiny_uri_root, "spacetime", "experiments.steps=2", timeout=600)


@pytest.fixture(scope="session")
def tiny_outputs(tiny_redshift, tiny_landcover, tiny_domst, tiny_spacetime, tiny_root) -> Path:
    """The output root holding all the tiny runs."""
    return tiny_root
