"""A real Spark standalone cluster on loopback: one master, N workers, from the pip-installed pyspark.

    python -m distributed.minicluster up --workers 3 [--hdfs]
    python -m distributed.minicluster up --hosts 3 [--workers 5] [--hdfs]   (root: workers spread over 3 hosts)
    python -m distributed.minicluster status
    python -m distributed.minicluster watch --interval 1              (hosts: each one's bytes, CPU, memory)
    python -m distributed.minicluster down

Everything binds 127.0.0.1 (conf/cluster.yaml `host`). With --hosts N (root only), the workers run in
N hosts: network namespaces with their own addresses from 198.18.0.0/15 on a bridge the cluster creates
(distributed/hosts.py); worker i on host ((i - 1) mod N) + 1, one worker per host unless --workers asks
for more, as a machine of a real cluster may run several. The master sits on the bridge's address, each
worker (and with --hdfs each DataNode, one per host) binds and advertises its host's address; `down`
removes the hosts, and those of any cluster that died without `down`. Spark RPC requires the cluster's secret
(spark.authenticate) and is encrypted with a key derived from it (spark.network.crypto), and the master
and worker web pages require a token signed with it that expires (Spark's JWSFilter), so nothing
listens unauthenticated. The secret reaches the daemons in an owner-only properties file, never on a
command line. Pid files, logs, the secret and a state file live in the run folder (owner-only);
`down` stops exactly the processes this cluster started (see processes.py) and deletes the secret.
With --hdfs, a real HDFS (a NameNode and two DataNodes, distributed/hdfs_cluster.py) starts beside it in
<run folder>/hdfs and stops with it; `status` prints its hdfs:// URI.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import logging
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from distributed import hosts as host_net
from distributed import processes
from distributed.java import JavaError, require_java

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
JWS_FILTER = "org.apache.spark.ui.JWSFilter"
# What a daemon's log says when a port it was given is taken (spark.port.maxRetries=0: it stops).
PORT_TAKEN = ("java.net.BindException", "Address already in use")

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """The mini-cluster could not be started, reached or stopped."""


def spark_home() -> Path:
    """The pip-installed pyspark's folder (it ships bin/spark-class); under spark-submit, SPARK_HOME."""
    import pyspark
    here = Path(pyspark.__file__).resolve().parent
    if (here / "bin" / "spark-class").exists() or "SPARK_HOME" not in os.environ:
        return here
    return Path(os.environ["SPARK_HOME"])


UI_TOKEN_TTL_S = 3600  # a UI token printed by `status` or sent by a job is good for an hour


def ui_token(secret: str, ttl_s: float = UI_TOKEN_TTL_S, now: float | None = None) -> str:
    """An HS256 JWS that Spark's JWSFilter accepts for the key derived from `secret`, until it
    expires ttl_s after `now` (JWSFilter's JWT parser refuses a token past its `exp`)."""
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    claims = {"exp": int((time.time() if now is None else now) + ttl_s)}
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(ui_key(secret), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def ui_key(secret: str) -> bytes:
    return hashlib.sha256(b"spark-ui:" + secret.encode()).digest()


def security_conf(secret: str) -> dict[str, str]:
    """Spark settings shared by the master, the workers and every application of the cluster."""
    return {
        "spark.authenticate": "true",
        "spark.authenticate.secret": secret,
        # AES-GCM on every RPC connection: task closures carry the job's secret and TFoS's authkeys.
        "spark.network.crypto.enabled": "true",
        "spark.ui.filters": JWS_FILTER,
        f"spark.{JWS_FILTER}.param.secretKey": base64.urlsafe_b64encode(ui_key(secret)).decode(),
        "spark.master.rest.enabled": "false",
    }


def write_private(path: Path, text: str) -> Path:
    """Write `text` to a file only its owner can read (created 0600, never world-readable on the way)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def properties(settings: dict[str, str]) -> str:
    """A Spark properties file (the values here are hex, base64 and class names: nothing to escape)."""
    return "".join(f"{k} {v}\n" for k, v in settings.items())


def make_private_dir(path: Path) -> Path:
    """A folder (and its missing parents) only its owner can enter."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@dataclass
class ClusterState:
    """What `up` leaves in run_dir/state.json for `status`, `down` and jobs that join the cluster."""
    run_id: str
    master_url: str
    master_ui: str
    pids: dict[str, int]
    create_times: dict[str, float]
    secret: str
    network: dict | None = None  # with --hosts: the bridge and hosts (hosts.HostNetwork.to_dict())

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


class MiniCluster:
    def __init__(self, cluster_cfg, run_dir: str | Path | None = None, workers: int | None = None,
                 hdfs: bool = False, hosts: int = 0):
        self.cfg = cluster_cfg
        self.with_hdfs = hdfs
        self.run_dir = Path(run_dir or cluster_cfg.run_dir).resolve()
        self.hosts = hosts  # 0: loopback; N: N hosts in network namespaces, the workers spread over them
        self.workers = workers if workers is not None else (hosts or cluster_cfg.workers)
        self.host = cluster_cfg.host
        self.worker_ui_ports = [cluster_cfg.worker_ui_port + i for i in range(self.workers)]
        self.state: ClusterState | None = None
        self.removed_hosts: list[str] = []  # what the last `down` removed of hosts (this cluster's, leftovers)

    @property
    def network(self) -> host_net.HostNetwork | None:
        """The bridge and hosts of this cluster, when it runs on hosts."""
        state = self.state or self.load_state()
        return host_net.HostNetwork.from_dict(state.network) if state and state.network else None

    @property
    def hdfs(self):
        """The HDFS of this cluster's run folder (running or not); on hosts, DataNode i on host i."""
        from distributed.hdfs_cluster import HdfsCluster
        network = self.network
        if network:
            return HdfsCluster(self.run_dir / "hdfs", host=network.bridge_address, datanodes=len(network.hosts),
                               datanode_hosts=[(h.address, h.netns) for h in network.hosts],
                               start_timeout_s=max(self.cfg.start_timeout_s, 300))
        return HdfsCluster(self.run_dir / "hdfs", host=self.host, start_timeout_s=max(self.cfg.start_timeout_s, 300))

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def conf_file(self) -> Path:
        return self.run_dir / "spark-defaults.conf"

    def load_state(self) -> ClusterState | None:
        if not self.state_file.exists():
            return None
        self.state = ClusterState(**json.loads(self.state_file.read_text()))
        return self.state

    # -- starting -------------------------------------------------------------------------------
    def up(self) -> ClusterState:
        require_java()
        if self.hosts:
            reason = host_net.unavailable()
            if reason:
                raise ClusterError(reason)
            if self.workers < self.hosts:
                raise ClusterError(f"--hosts {self.hosts} needs a worker on each host; got --workers {self.workers}")
        previous = self.load_state()
        if previous and any(processes.alive(p, previous.create_times.get(n)) for n, p in previous.pids.items()):
            raise ClusterError(f"a mini-cluster from {self.run_dir} is already running "
                               f"({previous.master_url}); run `down` first")
        make_private_dir(self.run_dir)
        make_private_dir(self.run_dir / "logs")
        secret = secrets.token_hex(32)
        # No silent move to the next port: a taken port fails start-up with the log shown.
        settings = {**security_conf(secret), "spark.port.maxRetries": "0"}
        conf_file = write_private(self.conf_file, properties(settings))
        run_id = uuid.uuid4().hex
        # Under the lock, two clusters started side by side cannot pick the same free /24.
        with host_net.planning() if self.hosts else contextlib.nullcontext():
            network = self._plan_hosts(run_id) if self.hosts else None
            master_url = f"spark://{self.host}:{self.cfg.master_port}"
            self.state = ClusterState(run_id, master_url, f"http://{self.host}:{self.cfg.master_ui_port}",
                                      {}, {}, secret, network.to_dict() if network else None)
            if network:
                self._save()  # first, so that `down` finds the hosts whatever happens next
                try:
                    network.create(run_id)
                except BaseException:
                    self.down()
                    raise
        try:
            if self.with_hdfs:
                self.hdfs.up(run_id)
            self._spawn("master", [MASTER_CLASS, "--host", self.host, "--port", str(self.cfg.master_port),
                                   "--webui-port", str(self.cfg.master_ui_port)], conf_file)
            self._wait_for_master()
            for i in range(1, self.workers + 1):
                work_dir = make_private_dir(self.run_dir / f"worker-{i}")
                host = network.host(host_of_worker(i, self.hosts)) if network else None
                address = host.address if host else self.host
                self._spawn(f"worker-{i}", [WORKER_CLASS, master_url, "--host", address,
                                            "--cores", str(self.cfg.worker_cores),
                                            "--memory", self.cfg.worker_memory,
                                            "--webui-port", str(self.worker_ui_ports[i - 1]),
                                            "--work-dir", str(work_dir)], conf_file,
                            netns=host.netns if host else None, local_ip=address)
            self._wait_for_workers()
        except BaseException:
            self.down()
            raise
        return self.state

    def _plan_hosts(self, run_id: str) -> host_net.HostNetwork:
        """This cluster's hosts: free /24s for their cards and their TF cards, the workers round robin."""
        self._sweep_hosts()  # what clusters that died without `down` left
        cid = host_net.cluster_id(run_id)
        used = host_net.used_networks()
        net = host_net.pick_subnet(used, int(cid, 16) % host_net.SUBNETS)
        tf_net = host_net.pick_subnet([*used, net], host_net.subnet_index(net) + 1)  # the hosts' TF cards
        network = host_net.HostNetwork.plan(cid, self.hosts, net, tf_net)
        for host, roles in zip(network.hosts, host_roles(self.workers, self.hosts, self.with_hdfs)):
            host.roles = roles
        self.host = network.bridge_address  # the master (and a driver) on the bridge's side
        return network

    def _env(self, local_ip: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": local_ip or self.host,
            "SPARK_LOG_DIR": str(self.run_dir / "logs"),
            "SPARK_NO_DAEMONIZE": "1",
            "PYSPARK_PYTHON": sys.executable,
            processes.RUN_TAG: self.state.run_id,
        })
        return env

    def _spawn(self, name: str, args: list[str], conf_file: Path, netns: str | None = None,
               local_ip: str | None = None) -> None:
        log = os.fdopen(os.open(self.run_dir / "logs" / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                0o600), "ab")
        cmd = [str(spark_home() / "bin" / "spark-class"), *args, "--properties-file", str(conf_file)]
        # spark-class execs java, so this pid is the JVM itself. umask 077: every file the daemons,
        # their executors and the roles create (executor logs, work folders) is the owner's only.
        # netns: the child enters its host before it execs, so the JVM and its executors live there.
        enter, close = host_net.in_netns(netns)
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self._env(local_ip), start_new_session=True, umask=0o077,
                                    preexec_fn=enter)
        finally:
            close()
            log.close()
        import psutil
        self.state.pids[name] = proc.pid
        self.state.create_times[name] = psutil.Process(proc.pid).create_time()
        (self.run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
        self._save()

    def _save(self) -> None:
        os.replace(write_private(self.state_file.with_suffix(".tmp"), self.state.to_json()), self.state_file)

    def master_json(self, timeout_s: float = 5.0) -> dict:
        req = urllib.request.Request(f"{self.state.master_ui}/json/",
                                     headers={"Authorization": f"Bearer {ui_token(self.state.secret)}"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = resp.read()
        try:
            return json.loads(body)
        except ValueError:
            # Another web server holds the port (a Spark UI answers any path with a page): not the master.
            # The master itself then stops on its BindException, which `up` reports and retries.
            raise ConnectionError(f"{req.full_url} answered with a page that is not the master's JSON: "
                                  f"{body[:80]!r}") from None

    def _log_tail(self, name: str, lines: int = 25) -> str:
        path = self.run_dir / "logs" / f"{name}.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
        return f"--- last lines of {path} ---\n" + "\n".join(text)

    def _check_running(self, names: list[str]) -> None:
        for name in names:
            if not processes.alive(self.state.pids[name]):
                raise ClusterError(f"{name} exited during start-up\n{self._log_tail(name)}")

    def _wait_for_master(self) -> None:
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while time.monotonic() < deadline:
            self._check_running(["master"])
            try:
                if self.master_json(2).get("status") == "ALIVE":
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise ClusterError(f"master did not come up at {self.state.master_ui} within "
                           f"{self.cfg.start_timeout_s:.0f}s\n{self._log_tail('master')}")

    def alive_workers(self) -> dict[str, dict]:
        """Workers the master reports ALIVE, keyed by their web UI port."""
        return {str(w.get("webuiaddress", "")).rsplit(":", 1)[-1]: w
                for w in self.master_json().get("workers", []) if w.get("state") == "ALIVE"}

    def _wait_for_workers(self) -> None:
        names = [n for n in self.state.pids if n.startswith("worker-")]
        deadline = time.monotonic() + self.cfg.start_timeout_s
        missing = names
        while time.monotonic() < deadline:
            self._check_running(names)
            try:
                ports = self.alive_workers()
            except OSError:
                ports = {}
            missing = [n for n in names if str(self.worker_ui_ports[int(n.split("-")[1]) - 1]) not in ports]
            if not missing:
                return
            time.sleep(0.5)
        raise ClusterError(f"{', '.join(missing)} not ALIVE at the master after "
                           f"{self.cfg.start_timeout_s:.0f}s\n{self._log_tail(missing[0])}")

    # -- stopping -------------------------------------------------------------------------------
    def down(self) -> list[int]:
        """Stop every process this cluster started; return their pids. Raises if any survives."""
        state = self.state or self.load_state()
        hdfs = self.hdfs
        hdfs_pids = hdfs.down() if hdfs.load_state() else []
        self.removed_hosts = []
        if state is None:
            self.removed_hosts = self._sweep_hosts()
            return hdfs_pids
        import psutil
        started = []
        for name, pid in state.pids.items():
            if processes.alive(pid, state.create_times.get(name)):
                started.append(psutil.Process(pid))
        # Workers first so they stop their executors cleanly, then the master.
        started.sort(key=lambda p: p.pid == state.pids.get("master"))
        stopped = processes.stop(started)
        # Executors, Python workers and TFoS processes that outlived their parents.
        stopped += processes.stop(processes.tagged(state.run_id))
        left = processes.wait_gone(state.run_id, timeout_s=2)
        if left:
            raise ClusterError(f"processes of run {state.run_id} still alive: {left}")
        for name in state.pids:
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        if state.network:  # its processes are gone: now its hosts, then any a dead cluster left
            try:
                self.removed_hosts = host_net.HostNetwork.from_dict(state.network).remove()
            except host_net.HostsError as exc:
                raise ClusterError(f"could not remove the hosts of run {state.run_id}: {exc}") from None
        self.removed_hosts += self._sweep_hosts()
        # The logs stay for reading; the secret goes with the cluster.
        self.state_file.unlink(missing_ok=True)
        self.conf_file.unlink(missing_ok=True)
        return stopped + hdfs_pids

    def _sweep_hosts(self) -> list[str]:
        """Remove the hosts (namespaces, veth pairs, bridges) of clusters that are no longer alive."""
        try:
            return host_net.sweep()
        except host_net.HostsError as exc:
            if host_net.unavailable() is None:
                raise ClusterError(str(exc)) from None
            log.warning("%s", exc)  # not root: leftovers of a root run stay until root runs `down`
            return []

    def status(self) -> dict:
        state = self.state or self.load_state()
        if state is None:
            return {"running": False, "run_dir": str(self.run_dir)}
        procs = {n: processes.alive(p, state.create_times.get(n)) for n, p in state.pids.items()}
        try:
            workers = len(self.alive_workers())
        except OSError:
            workers = 0
        hdfs = self.hdfs
        network = self.network
        return {"running": all(procs.values()), "master_url": state.master_url, "master_ui": state.master_ui,
                "alive_workers": workers, "processes": procs, "run_dir": str(self.run_dir),
                "ui_header": f"Authorization: Bearer {ui_token(state.secret)}",
                **({"hdfs": hdfs.status()} if hdfs.load_state() else {}),
                **({"network": _network_status(network)} if network else {})}

    def __enter__(self) -> "MiniCluster":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()


def _network_status(network: host_net.HostNetwork) -> dict:
    """The bridge and each host with its address, what runs there, whether its namespace exists, and its
    figures since `up` (host_stats: bytes in and out of its interface, its cgroup's CPU seconds, RSS)."""
    from distributed import host_stats
    spaces = set(host_net.netns_names())
    hosts = []
    for h in network.hosts:
        row = {"host": h.netns, "address": h.address, "runs": h.roles, "exists": h.netns in spaces,
               **({"tf_address": h.tf_address} if h.tf_address else {})}
        try:
            figures = host_stats.sample_host(h)
            row.update({k: figures[k] for k in ("bytes_in", "bytes_out", "cpu_s", "rss_bytes", "n_procs")})
        except (OSError, host_stats.CgroupError) as exc:  # a host half gone: say so, keep the rest
            row["figures_error"] = str(exc)
        hosts.append(row)
    return {"bridge": network.bridge, "bridge_address": network.bridge_address, "subnet": network.subnet,
            **({"tf_bridge": network.tf_bridge, "tf_subnet": network.tf_subnet} if network.tf_bridge else {}),
            "hosts": hosts}


def free_ports(host: str, n: int) -> list[int]:
    """n distinct ports free right now (all held open together, so no two are the same)."""
    socks = [socket.create_server((host, 0)) for _ in range(n)]
    try:
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def host_of_worker(worker: int, hosts: int) -> int:
    """The host (1..hosts) that runs worker `worker` (1..): round robin."""
    return (worker - 1) % hosts + 1


def host_roles(workers: int, hosts: int, hdfs: bool) -> list[list[str]]:
    """What each host runs, host 1 first: its workers, then its DataNode."""
    return [[f"worker-{w}" for w in range(1, workers + 1) if host_of_worker(w, hosts) == h] +
            ([f"datanode-{h}"] if hdfs else []) for h in range(1, hosts + 1)]


def up_on_free_ports(cluster_cfg, run_dir: str | Path, workers: int, attempts: int = 3,
                     hosts: int = 0) -> MiniCluster:
    """A mini-cluster on ports that are free when it starts.

    The daemons are JVMs that bind their ports themselves, so a port cannot be held for them until
    they take it: between free_ports() and the bind, another process may take one. Spark then stops
    (spark.port.maxRetries=0: it never moves silently to another port), `up` cleans up, and this
    starts again on new ports, up to `attempts` times; any other failure is raised at once."""
    attempt = 1
    while True:
        master, master_ui, *worker_uis = free_ports(cluster_cfg.host, 2 + workers)
        cluster = MiniCluster(replace(cluster_cfg, master_port=master, master_ui_port=master_ui), run_dir,
                              workers=workers, hosts=hosts)
        cluster.worker_ui_ports = worker_uis
        logs = cluster.run_dir / "logs"
        before = {path: path.stat().st_size for path in logs.glob("*.log")}
        try:
            cluster.up()
            return cluster
        except ClusterError:
            said = "".join(path.read_bytes()[before.get(path, 0):].decode(errors="replace")
                           for path in logs.glob("*.log"))  # what this attempt's daemons logged
            if attempt >= attempts or not any(sign in said for sign in PORT_TAKEN):
                raise
            log.warning("a port of the mini-cluster was taken before it bound it (attempt %d of %d); "
                        "starting again on new ports", attempt, attempts)
        attempt += 1


def main(argv: list[str] | None = None) -> int:
    from conf import load_cluster
    from distributed.hdfs_cluster import HdfsError
    parser = argparse.ArgumentParser(prog="python -m distributed.minicluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "watch"],
                        help="watch: each host's bytes, CPU and memory as CSV, a row per host per interval")
    parser.add_argument("--workers", type=int, help="number of workers (default: conf/cluster.yaml)")
    parser.add_argument("--run-dir", help="pid files, logs and secret (default: conf/cluster.yaml run_dir)")
    parser.add_argument("--hosts", type=int, default=0, metavar="N",
                        help="`up`: N hosts on this machine, network namespaces with their own addresses "
                             "(198.18.0.0/15) on a bridge of the cluster's own, the workers spread over them "
                             "(one each by default; --workers for more); needs root. Without it everything "
                             "runs on loopback")
    parser.add_argument("--hdfs", action="store_true",
                        help="`up`: also start a NameNode and two DataNodes (Hadoop's jars, fetched by Maven)")
    parser.add_argument("--interval", type=float, default=1.0, help="`watch`: seconds between samples")
    parser.add_argument("--samples", type=int, default=60, help="`watch`: how many intervals")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a conf/cluster.yaml key, e.g. --set master_port=7078")
    args = parser.parse_args(argv)
    if args.hosts < 0:
        parser.error("--hosts must be 1 or more (leave it out for loopback)")
    cluster = MiniCluster(load_cluster(args.set), args.run_dir, args.workers, hdfs=args.hdfs, hosts=args.hosts)
    try:
        if args.command == "up":
            state = cluster.up()
            print(f"mini-cluster up: {state.master_url} with {cluster.workers} workers; "
                  f"status page {state.master_ui} (needs the bearer token that `status` prints); "
                  f"run folder {cluster.run_dir}")
            for host in cluster.network.hosts if cluster.network else []:
                card = f"; TF card {host.tf_address}" if host.tf_address else ""
                print(f"host {host.netns}: {host.address} ({', '.join(host.roles)}){card}")
            if args.hdfs:
                hdfs = cluster.hdfs.load_state()
                print(f"HDFS up: {hdfs.uri} (NameNode web UI {hdfs.web_ui}); e.g. --output {hdfs.uri}/outputs/redshift")
        elif args.command == "down":
            pids = cluster.down()
            print(f"stopped {len(pids)} processes: {' '.join(map(str, pids)) or '-'}")
            if cluster.removed_hosts:
                print(f"removed {' '.join(cluster.removed_hosts)}")
        elif args.command == "watch":
            if cluster.network is None:
                raise ClusterError("no mini-cluster with hosts runs from this run folder (`up --hosts N` starts one)")
            from distributed import host_stats
            host_stats.watch(cluster.network, args.interval, args.samples)
        else:
            print(json.dumps(cluster.status(), indent=2))
    except (ClusterError, HdfsError, JavaError, host_net.HostsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
