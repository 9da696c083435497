"""A real HDFS on loopback: Apache Hadoop's own NameNode and DataNodes, each a separate JVM.

    python -m distributed.minicluster up --hdfs      (with the Spark mini-cluster)

The jars come from Maven Central through hdfs/pom.xml, at the Hadoop version of the client pyspark
bundles, and are cached under hdfs/jars/<version>/ (ignored by git), so a second start needs no network.
Every daemon binds 127.0.0.1 (on the mini-cluster's hosts: the NameNode the bridge's address, DataNode i
host i's address, inside that host's network namespace), HDFS permissions are on (the user who starts
the daemons is HDFS's superuser; any other client user is checked), replication is 2. Pid files, logs, configuration and
block storage live in the run folder; `down` stops exactly the pids `up` started.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from distributed import processes
from distributed.java import require_java

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
POM = ROOT / "hdfs" / "pom.xml"
JARS_DIR = ROOT / "hdfs" / "jars"
NAMENODE_CLASS = "org.apache.hadoop.hdfs.server.namenode.NameNode"
DATANODE_CLASS = "org.apache.hadoop.hdfs.server.datanode.DataNode"
LOG4J = """log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.out
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.http.requests=WARN
"""


class HdfsError(RuntimeError):
    """The HDFS daemons could not be fetched, started, reached or stopped."""


def hadoop_version() -> str:
    """The Hadoop client version pyspark bundles (pyspark/jars/hadoop-client-api-<v>.jar)."""
    import pyspark
    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    if not jars:
        raise HdfsError(f"no hadoop-client-api-*.jar in {Path(pyspark.__file__).parent / 'jars'}")
    return jars[-1].name[len("hadoop-client-api-"):-len(".jar")]


def jars(version: str | None = None) -> Path:
    """The folder of Hadoop's jars at `version`, fetched by Maven on first use."""
    version = version or hadoop_version()
    folder = JARS_DIR / version
    if (folder / ".complete").exists():
        return folder
    mvn = shutil.which("mvn")
    if not mvn:
        raise HdfsError("Maven (`mvn`) was not found; it fetches Apache Hadoop's jars for the HDFS daemons "
                        f"(hdfs/pom.xml, Hadoop {version}). Install it (Debian/Ubuntu: "
                        "`sudo apt-get install maven`; macOS: `brew install maven`) or run on file:// only.")
    tmp = folder.with_name(f".{version}-{uuid.uuid4().hex[:8]}")
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-Dhadoop.version={version}", f"-DoutputDirectory={tmp}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not any(tmp.glob("hadoop-hdfs-*.jar")):
        shutil.rmtree(tmp, ignore_errors=True)
        raise HdfsError(f"Maven could not fetch Hadoop {version} ({' '.join(cmd)}):\n"
                        f"{(proc.stdout + proc.stderr)[-3000:]}")
    (tmp / ".complete").touch()
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def _free_ports(host: str, n: int) -> list[int]:
    """n distinct ports free now (held open together so none repeats)."""
    import socket
    socks = [socket.create_server((host, 0)) for _ in range(n)]
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def site_xml(props: dict[str, str]) -> str:
    body = "".join(f"  <property><name>{escape(k)}</name><value>{escape(str(v))}</value></property>\n"
                   for k, v in props.items())
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


@dataclass
class HdfsState:
    """What `up` leaves in <run_dir>/state.json for `status`, `down` and the tests."""
    run_id: str
    uri: str                 # hdfs://127.0.0.1:<rpc port>
    web_ui: str              # NameNode web UI
    conf_dir: str            # a client HADOOP_CONF_DIR (core-site.xml with fs.defaultFS)
    pids: dict[str, int] = field(default_factory=dict)
    create_times: dict[str, float] = field(default_factory=dict)
    netns: dict[str, str] = field(default_factory=dict)  # daemon -> the host (network namespace) it runs in


class HdfsCluster:
    """A NameNode and `datanodes` DataNodes on `host`, ports given or free ones. datanode_hosts: for
    each DataNode, (address, network namespace) of the host it runs in and binds (hosts.py)."""

    def __init__(self, run_dir: str | Path, host: str = "127.0.0.1", datanodes: int = 2,
                 ports: list[int] | None = None, start_timeout_s: float = 300, heap: str = "256m",
                 datanode_hosts: list[tuple[str, str]] | None = None):
        self.run_dir = Path(run_dir).resolve()
        self.host = host
        self.datanodes = datanodes
        if datanode_hosts is not None and len(datanode_hosts) != datanodes:
            raise HdfsError(f"{datanodes} DataNodes but {len(datanode_hosts)} hosts for them")
        self.datanode_hosts = datanode_hosts
        self.start_timeout_s = start_timeout_s
        self.heap = heap
        self.ports = ports
        self.state: HdfsState | None = None

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    def load_state(self) -> HdfsState | None:
        if not self.state_file.exists():
            return None
        self.state = HdfsState(**json.loads(self.state_file.read_text()))
        return self.state

    # -- starting -------------------------------------------------------------------------------
    def up(self, run_id: str | None = None, attempts: int = 3) -> HdfsState:
        """Start the NameNode and DataNodes. The daemons are JVMs that bind their ports themselves, so a
        port free when chosen can be taken before they bind it (another cluster starting on this machine):
        then everything is stopped and started again on new ports, up to `attempts` times."""
        for _ in range(attempts - 1):
            try:
                return self._up_once(run_id)
            except HdfsError as exc:
                if self.ports or "Address already in use" not in str(exc):
                    raise
                log.warning("HDFS: a port was taken before a daemon bound it; starting again on new ports")
        return self._up_once(run_id)

    def _up_once(self, run_id: str | None) -> HdfsState:
        require_java()
        lib = jars()
        previous = self.load_state()
        if previous and any(processes.alive(p, previous.create_times.get(n)) for n, p in previous.pids.items()):
            raise HdfsError(f"an HDFS from {self.run_dir} is already running ({previous.uri}); run `down` first")
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            # A fresh file system each time (old metadata would not match new blocks), but only ever
            # over a folder an earlier `up` made.
            if not (self.run_dir / "conf-namenode").is_dir() or self.run_dir.is_symlink():
                raise HdfsError(f"{self.run_dir} is not empty and not an earlier HDFS run folder; not deleting it")
            shutil.rmtree(self.run_dir)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        ports = self.ports or _free_ports(self.host, 2 + 3 * self.datanodes)
        rpc, http, dn_ports = ports[0], ports[1], ports[2:]
        uri = f"hdfs://{self.host}:{rpc}"
        common = {
            "fs.defaultFS": uri,
            "hadoop.tmp.dir": str(self.run_dir / "tmp"),
            "dfs.permissions.enabled": "true",
            "dfs.replication": str(min(2, self.datanodes)),
            "dfs.namenode.rpc-address": f"{self.host}:{rpc}",
            "dfs.namenode.http-address": f"{self.host}:{http}",
            "dfs.namenode.https-address": f"{self.host}:0",
            "dfs.namenode.name.dir": str(self.run_dir / "name"),
            "dfs.namenode.datanode.registration.ip-hostname-check": "false",
            "dfs.namenode.safemode.extension": "0",
            "dfs.namenode.safemode.min.datanodes": str(self.datanodes),
            # A killed DataNode is declared dead after about 30 s instead of 10.5 min.
            "dfs.namenode.heartbeat.recheck-interval": "10000",
            "dfs.heartbeat.interval": "1",
            "hadoop.security.authentication": "simple",
        }
        self._conf("client", {"fs.defaultFS": uri})
        self.state = HdfsState(run_id or uuid.uuid4().hex, uri, f"http://{self.host}:{http}",
                               str(self.run_dir / "conf-client"))
        try:
            nn_conf = self._conf("namenode", common)
            self._format(lib, nn_conf)
            self._spawn("namenode", NAMENODE_CLASS, lib, nn_conf)
            for i in range(1, self.datanodes + 1):
                data, ipc, dn_http = dn_ports[3 * (i - 1):3 * i]
                host, netns = self.datanode_hosts[i - 1] if self.datanode_hosts else (self.host, None)
                conf = self._conf(f"datanode-{i}", {
                    **common,
                    "dfs.datanode.data.dir": str(self.run_dir / f"data-{i}"),
                    "dfs.datanode.address": f"{host}:{data}",
                    "dfs.datanode.ipc.address": f"{host}:{ipc}",
                    "dfs.datanode.http.address": f"{host}:{dn_http}",
                    "dfs.datanode.hostname": host,
                    "dfs.datanode.data.dir.perm": "700",
                })
                self._spawn(f"datanode-{i}", DATANODE_CLASS, lib, conf, netns)
            self._wait_ready()
        except BaseException:
            self.down()
            raise
        return self.state

    def _conf(self, name: str, props: dict[str, str]) -> Path:
        folder = self.run_dir / f"conf-{name}"
        folder.mkdir(exist_ok=True)
        (folder / "core-site.xml").write_text(site_xml({"fs.defaultFS": props["fs.defaultFS"]}))
        (folder / "hdfs-site.xml").write_text(site_xml({k: v for k, v in props.items() if k != "fs.defaultFS"}))
        (folder / "log4j.properties").write_text(LOG4J)
        return folder

    def _java(self, lib: Path, conf: Path, main: str, *args: str) -> list[str]:
        java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) \
            if os.environ.get("JAVA_HOME") else shutil.which("java")
        return [java, f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.net.preferIPv4Stack=true",
                f"-Dhadoop.log.dir={self.run_dir / 'logs'}", "-cp", f"{conf}:{lib}/*", main, *args]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("HADOOP_CONF_DIR", "HADOOP_USER_NAME")}
        env[processes.RUN_TAG] = self.state.run_id
        return env

    def _format(self, lib: Path, conf: Path) -> None:
        cmd = self._java(lib, conf, NAMENODE_CLASS, "-format", "-force", "-nonInteractive",
                         "-clusterid", f"scidl-{self.state.run_id[:12]}")
        log = self.run_dir / "logs" / "format.log"
        with open(log, "wb") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self._env(), timeout=self.start_timeout_s).returncode
        if rc != 0:
            raise HdfsError(f"formatting the NameNode failed (exit {rc})\n{self._log_tail('format')}")

    def _spawn(self, name: str, main: str, lib: Path, conf: Path, netns: str | None = None) -> None:
        import psutil
        from distributed.hosts import in_netns
        enter, close = in_netns(netns)  # the child enters its host before it execs
        try:
            with open(self.run_dir / "logs" / f"{name}.log", "ab") as log:
                proc = subprocess.Popen(self._java(lib, conf, main), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=self._env(), start_new_session=True,
                                        preexec_fn=enter)
        finally:
            close()
        if netns:
            self.state.netns[name] = netns
        self.state.pids[name] = proc.pid
        self.state.create_times[name] = psutil.Process(proc.pid).create_time()
        (self.run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
        self._save()

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state.__dict__, indent=2))
        os.replace(tmp, self.state_file)

    def _log_tail(self, name: str, lines: int = 25) -> str:
        path = self.run_dir / "logs" / f"{name}.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
        return f"--- last lines of {path} ---\n" + "\n".join(text)

    def jmx(self, bean: str, timeout_s: float = 3) -> dict:
        """One NameNode JMX bean, e.g. 'FSNamesystemState' (live DataNodes) or 'NameNodeInfo' (safe mode)."""
        url = f"{self.state.web_ui}/jmx?qry=Hadoop:service=NameNode,name={bean}"
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            beans = json.load(resp).get("beans", [])
        return beans[0] if beans else {}

    def live_datanodes(self) -> int:
        return int(self.jmx("FSNamesystemState").get("NumLiveDataNodes", 0))

    def _wait_ready(self) -> None:
        """NameNode out of safe mode and every DataNode live, or an error naming the daemon."""
        deadline = time.monotonic() + self.start_timeout_s
        waiting = "namenode"
        while time.monotonic() < deadline:
            for name, pid in self.state.pids.items():
                if not processes.alive(pid):
                    raise HdfsError(f"HDFS {name} exited during start-up\n{self._log_tail(name)}")
            try:
                live = self.live_datanodes()
                safe = self.jmx("NameNodeInfo").get("Safemode", "?")
            except (OSError, ValueError):
                live, safe = 0, "?"
            if live >= self.datanodes and safe == "":
                return
            waiting = "namenode" if safe == "?" else f"datanode-{live + 1}" if live < self.datanodes else "namenode"
            time.sleep(1)
        raise HdfsError(f"HDFS not ready at {self.state.uri} within {self.start_timeout_s:.0f}s "
                        f"(waiting for {waiting})\n{self._log_tail(waiting)}")

    # -- stopping -------------------------------------------------------------------------------
    def stop_daemon(self, name: str) -> None:
        """Stop one daemon by its pid (a fault test's NameNode or DataNode), leaving the others."""
        import psutil
        state = self.state or self.load_state()
        pid = state.pids[name]
        if processes.alive(pid, state.create_times.get(name)):
            processes.stop([psutil.Process(pid)])

    def restart_daemon(self, name: str) -> None:
        """Start a stopped daemon again on its own configuration and storage; wait until HDFS is ready."""
        state = self.state or self.load_state()
        if processes.alive(state.pids[name], state.create_times.get(name)):
            raise HdfsError(f"HDFS {name} is still running (pid {state.pids[name]})")
        main = NAMENODE_CLASS if name == "namenode" else DATANODE_CLASS
        self._spawn(name, main, jars(), self.run_dir / f"conf-{name}", state.netns.get(name))
        self._wait_ready()

    def down(self) -> list[int]:
        """Stop every daemon this HDFS started (DataNodes first); return their pids. Raises if any survives."""
        import psutil
        state = self.state or self.load_state()
        if state is None:
            return []
        started = [psutil.Process(p) for n, p in state.pids.items() if processes.alive(p, state.create_times.get(n))]
        started.sort(key=lambda p: p.pid == state.pids.get("namenode"))
        stopped = processes.stop(started)
        left = [p for n, p in state.pids.items() if processes.alive(p, state.create_times.get(n))]
        if left:
            raise HdfsError(f"HDFS daemons still alive: {left}")
        for name in state.pids:
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> dict:
        state = self.state or self.load_state()
        if state is None:
            return {"running": False, "run_dir": str(self.run_dir)}
        procs = {n: processes.alive(p, state.create_times.get(n)) for n, p in state.pids.items()}
        try:
            live = self.live_datanodes()
        except (OSError, ValueError):
            live = 0
        return {"running": all(procs.values()), "uri": state.uri, "web_ui": state.web_ui,
                "live_datanodes": live, "processes": procs, "conf_dir": state.conf_dir,
                **({"hosts": dict(state.netns)} if state.netns else {})}

    def __enter__(self) -> "HdfsCluster":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()


if __name__ == "__main__":  # `python -m distributed.hdfs_cluster fetch`: the jars, before any test needs them
    import sys
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m distributed.hdfs_cluster fetch")
    try:
        print(f"Hadoop {hadoop_version()} jars in {jars()}")
    except HdfsError as exc:
        sys.exit(f"error: {exc}")
