"""The job command contract, shared by every case study (thin shell around Spark).

    python jobs/<case>.py [--config FILE] [--preset tiny|paper] [--set key=value ...]
                          [--output URI] [--master URL]

and the same arguments after `spark-submit [spark options] jobs/<case>.py`. Without a master (neither
--master nor spark-submit's), the job starts the embedded loopback mini-cluster for its lifetime and
stops it at the end, also on failure, Ctrl-C or SIGTERM. Every run writes config.yaml (the resolved
config) and summary.json (key figures, machine-readable) under the output URI.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shlex
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from conf import CONF_DIR, ConfigError, dump, load
from distributed import env_archive
from distributed.minicluster import free_ports  # noqa: F401 -- its old home; it lives below jobs now
from jobs.errors import user_message
from jobs.output_guard import check_output
from rdd_io import storage

log = logging.getLogger("jobs")


@dataclass
class Job:
    """What a case study's run function gets."""
    name: str
    cfg: Any
    spark: Any
    output: str            # output URI, no trailing slash
    secret: str            # this run's secret for TFoS roles and the parameter server
    node_host: str | None  # address TFoS nodes advertise (None: let each node find its own)
    resume: bool = False   # continue from the checkpoints under the output URI (--resume)
    hosts: Any = None      # on a mini-cluster with hosts: its host_stats.Sampler, sampling since the run began
    network: Any = None    # on a mini-cluster with hosts: its hosts.HostNetwork

    @property
    def sc(self):
        return self.spark.sparkContext

    def out(self, *parts: str) -> str:
        return storage.join(self.output, *parts)

    def run_roles(self, role: Callable, spec: Any, roles, **options) -> dict:
        """distributed.role_run.run_roles on this run's Spark context, node address and secret, with the
        run spec sent as JSON (conf.to_json): the roles' results by role name."""
        from conf import to_json
        from distributed.role_run import run_roles
        if options.get("tf_servers") and self.network is not None:  # TF on the hosts' own TF cards
            options.setdefault("tf_network", self.network.tf_network())
        return run_roles(self.sc, role, to_json(spec), roles, node_host=self.node_host, secret=self.secret,
                         reservation_timeout_s=self.cfg.cluster.reservation_timeout_s, **options)

    def publish(self, write: Callable[[str], list[str]]) -> list[str]:
        """Let `write(folder)` build output files in a local folder, then upload them (atomically,
        one by one) to the output URI; returns the names written."""
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            names = write(tmp)
            for name in names:
                storage.write_bytes(self.out(name), (Path(tmp) / name).read_bytes())
        return names


def parse_args(case: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"jobs/{case}.py", description=(sys.modules["__main__"].__doc__ or ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONF_DIR / f"{case}.yaml"), help="case-study YAML")
    parser.add_argument("--preset", help="a preset of the config file, e.g. tiny or paper")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--output", default=f"outputs/{case}", help="output URI (file://, hdfs://) or path")
    parser.add_argument("--master", help="Spark master URL; default: spark-submit's, else an embedded "
                                         "loopback mini-cluster started for this run")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output from its last checkpoints (same config required)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --output that is not an earlier run of this case study")
    return parser.parse_args(argv)


def _spark_submit_master() -> str | None:
    """The master spark-submit was given, if this driver was started by spark-submit."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    from pyspark import SparkConf, SparkContext
    SparkContext._ensure_initialized()  # connect to spark-submit's JVM, whose properties hold the master
    return SparkConf().get("spark.master", None)


def _is_loopback(host: str) -> bool:
    try:
        return socket.gethostbyname(host).startswith("127.")
    except OSError:
        return False


def _start_embedded(cfg, case: str, executors: int):
    """A mini-cluster on free ports (so it never collides with one started by hand)."""
    from distributed.minicluster import up_on_free_ports
    workers = max(executors, 1)
    run_dir = Path(cfg.cluster.run_dir).resolve() / f"{case}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    log.info("starting embedded mini-cluster with %d workers in %s", workers, run_dir)
    return up_on_free_ports(cfg.cluster, run_dir, workers)


def _known_cluster(cfg, master: str):
    """The state of the mini-cluster started with `python -m distributed.minicluster up`, if it is `master`."""
    from distributed.minicluster import MiniCluster
    state = MiniCluster(cfg.cluster).load_state()
    return state if state and state.master_url == master else None


def _start_host_sampler(cfg, network, summary: dict):
    """On a mini-cluster with hosts (`network`): a sampler of each host's figures (host_stats) for the run,
    else None."""
    if network is None:
        return None
    from distributed import host_stats
    try:
        return host_stats.Sampler(network, cfg.cluster.host_sample_interval_s).start()
    except (OSError, host_stats.CgroupError) as exc:
        summary["hosts_error"] = f"no figures per host: {exc}"
        log.warning("%s", summary["hosts_error"])
        return None


def _host_network(state):
    """The hosts (hosts.HostNetwork) of a known mini-cluster started with --hosts, else None."""
    if state is None or not state.network:
        return None
    from distributed.hosts import HostNetwork
    return HostNetwork.from_dict(state.network)


def _write_host_figures(sampler, work: str, summary: dict) -> None:
    """hosts.csv (each host's series) beside the outputs, and each host's totals in the summary."""
    from distributed import host_stats
    rows = sampler.stop()
    roles = {name: r["address"].rsplit(":", 1)[0] for name, r in (summary.get("roles") or {}).items()
             if isinstance(r, dict) and isinstance(r.get("address"), str)}
    summary["hosts"] = host_stats.summarise(rows, sampler.cores, roles)
    storage.write_text(storage.join(work, "hosts.csv"), host_stats.to_csv(rows))


def _master_host(master: str) -> str:
    return master.split("//")[-1].rsplit(":", 1)[0]


def own_address(host: str) -> str | None:
    """`host`'s IPv4 address when it is one of this machine's own (binding to it succeeds), else None."""
    try:
        address = socket.gethostbyname(host)
        if ipaddress.ip_address(address).is_unspecified:
            return None
        with socket.socket() as sock:
            sock.bind((address, 0))
    except OSError:
        return None
    return address


def spark_settings(cfg, executors: int, host: str | None, reuse_workers: bool) -> dict[str, str]:
    """The Spark conf every job sets (secrets aside)."""
    settings = {
        # TFoS: one task per executor and every executor registered before roles are placed.
        "spark.executor.cores": "1",
        "spark.task.cpus": "1",
        "spark.cores.max": str(executors),
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": f"{int(cfg.cluster.start_timeout_s)}s",
        "spark.python.worker.reuse": "true" if reuse_workers else "false",
        "spark.executor.memory": cfg.cluster.executor_memory,
        "spark.ui.showConsoleProgress": "false",
    }
    if cfg.cluster.jvm_options:  # read when the driver's JVM starts: ignored under spark-submit
        settings.update({"spark.driver.extraJavaOptions": cfg.cluster.jvm_options,
                         "spark.executor.extraJavaOptions": cfg.cluster.jvm_options})
    if host:
        settings.update({"spark.driver.host": host, "spark.driver.bindAddress": host})
    if cfg.cluster.python_archive:
        settings.update(env_archive.spark_conf(cfg.cluster.python_archive))
    return settings


def _spark_session(case: str, cfg, master: str, host: str | None, cluster_secret: str | None, executors: int,
                   reuse_workers: bool):
    from pyspark.sql import SparkSession
    from distributed.minicluster import security_conf
    builder = SparkSession.builder.appName(f"scidl-{case}").master(master)
    for key, value in spark_settings(cfg, executors, host, reuse_workers).items():
        builder = builder.config(key, value)
    if not cluster_secret:
        return builder.getOrCreate()
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # spark-submit's JVM runs already: set in memory, over py4j
        for key, value in security_conf(cluster_secret).items():
            builder = builder.config(key, value)
        return builder.getOrCreate()
    with _secret_properties(security_conf(cluster_secret)):
        return builder.getOrCreate()


@contextlib.contextmanager
def _secret_properties(settings: dict[str, str]):
    """Start the driver's JVM with `settings` in an owner-only properties file, not as --conf
    arguments (any local user reads a command line in `ps`). The JVM reads the file at start; it is
    deleted right after. (Spark's spark.authenticate.secret.file is refused outside Kubernetes.)"""
    import tempfile
    from distributed.minicluster import properties, write_private
    with tempfile.TemporaryDirectory(prefix="scidl-driver-") as tmp:  # created 0700
        conf = write_private(Path(tmp) / "secret.conf", properties(settings))
        before = os.environ.get("PYSPARK_SUBMIT_ARGS")
        os.environ["PYSPARK_SUBMIT_ARGS"] = f"--properties-file {shlex.quote(str(conf))} " + (before or "pyspark-shell")
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("PYSPARK_SUBMIT_ARGS", None)
            else:
                os.environ["PYSPARK_SUBMIT_ARGS"] = before


def check_embedded_hdfs(cfg, output: str, master: str | None, resume: bool) -> None:
    """cluster.hdfs=embedded: an HDFS lives as long as the job beside its embedded mini-cluster; the run
    writes its whole tree there (input, bundles, checkpoints, outputs) and it is copied to --output at the
    end. Refuses what that cannot do, before anything starts."""
    if cfg.cluster.hdfs != "embedded":
        return
    if master:
        raise ConfigError("cluster.hdfs=embedded starts an HDFS beside the embedded mini-cluster: run without "
                          "--master (and not under spark-submit), or give a standing cluster's hdfs:// as --output")
    if not storage.is_local(output):
        raise ConfigError(f"cluster.hdfs=embedded: --output must be a local folder (the run's tree is copied there "
                          f"from the job's own HDFS, which stops with the job), got {output}")
    if resume:
        raise ConfigError("cluster.hdfs=embedded: --resume is not possible (the job's HDFS is a new one each run)")


def _start_embedded_hdfs(run_dir: Path):
    from distributed.hdfs_cluster import HdfsCluster
    hdfs = HdfsCluster(Path(run_dir) / "hdfs")
    log.info("starting an embedded HDFS (NameNode + 2 DataNodes) in %s", hdfs.run_dir)
    hdfs.up()  # stops what it started if it fails
    log.info("embedded HDFS up at %s (web UI %s)", hdfs.state.uri, hdfs.state.web_ui)
    return hdfs


def _copy_and_stop_hdfs(hdfs, work: str, output: str, case: str) -> None:
    """The run's tree from the job's HDFS into --output (also after a failure: nothing written is lost),
    then the HDFS daemons stopped by pid."""
    try:
        storage.makedirs(output, private=True)
        copied = storage.download_tree(work, storage.local_path(output))
        log.info("copied %d files from %s to %s", len(copied), work, output)
    except Exception as exc:
        print(f"{case}: could not copy {work} to {output}: {exc}", file=sys.stderr)
    finally:
        stopped = hdfs.down()
        log.info("embedded HDFS stopped (%d processes)", len(stopped))


def _quiet_spark_shutdown(spark) -> None:
    """After a failure, Spark's own shutdown warnings (executors still registering, dropped messages) would
    come after the job's error line: keep its errors only from here on."""
    try:
        spark.sparkContext.setLogLevel("ERROR")
    except Exception:  # a session that is already gone has nothing left to say
        pass


def check_resumable(output: str, resolved: str) -> None:
    """--resume continues the run whose config.yaml is in `output`, with the same config, or refuses."""
    import difflib
    previous_uri = storage.join(output, "config.yaml")
    if not storage.exists(previous_uri):
        raise ConfigError(f"--resume: {previous_uri} does not exist; there is no run to resume in {output}")
    previous = storage.read_text(previous_uri)
    if previous != resolved:
        diff = "".join(list(difflib.unified_diff(previous.splitlines(True), resolved.splitlines(True),
                                                 "config of the run", "config now", n=0))[:20])
        raise ConfigError(f"--resume: the config differs from the run in {output}; resume with the same "
                          f"--preset/--set, or start a new run without --resume:\n{diff}")


def _install_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the finally-block stops the cluster."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def _process_settings():
    """A run's changes to its process (log lines on stdout when nothing else logs, the SIGTERM handler,
    Spark's environment variables) last as long as the run: a second run_job in the same process, or
    the code that called it, finds the process as it was."""
    root, handler = logging.getLogger(), None
    level = root.level
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    env = {key: os.environ.get(key) for key in ("SPARK_LOCAL_IP", "TFOS_SERVER_HOST", "PYSPARK_PYTHON")}
    try:
        yield
    finally:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if sigterm is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGTERM, sigterm)
        if handler is not None:
            root.removeHandler(handler)
            root.setLevel(level)


def run_job(case: str, schema: type, run: Callable[[Job], dict], argv: list[str] | None = None, *,
            reuse_workers: bool | Callable[[Any], bool] = False) -> int:
    """Parse the contract's arguments, run `run(job)` on a cluster, write config.yaml and summary.json.

    reuse_workers: keep Spark's Python workers across tasks, which TFoS's InputMode.SPARK requires (a bool, or
    a function of the loaded config for a job whose feed mode is a config choice). Off
    otherwise: a worker that used the HDFS client must never fork a role (hdfs-native's runtime does not
    survive fork()), and a fresh worker per task comes from pyspark.daemon, which never touches HDFS."""
    with _process_settings():
        return _run_job(case, schema, run, argv, reuse_workers)


def _run_job(case: str, schema: type, run: Callable[[Job], dict], argv: list[str] | None,
             reuse_workers: bool | Callable[[Any], bool] = False) -> int:
    args = parse_args(case, argv)
    try:
        cfg = load(schema, args.config, args.preset, args.set)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output = storage.to_uri(args.output)
    resolved = dump(cfg, case=case, preset=args.preset)
    master = args.master or _spark_submit_master()
    try:  # before anything is started or written: a refused run leaves what is in --output as it is
        if args.resume:
            check_resumable(output, resolved)
        notice = check_output(output, case, args.resume, args.overwrite)
        check_embedded_hdfs(cfg, output, master, args.resume)
        if cfg.cluster.python_archive:
            env_archive.spark_conf(cfg.cluster.python_archive)  # a missing archive is named before Spark starts
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if notice:
        print(f"{case}: {notice}")
    executors = cfg.executors()
    embedded = master is None
    _install_sigterm()
    cluster = spark = hdfs = host_sampler = network = None
    work = output  # where the run writes: --output, or the same tree on the job's embedded HDFS
    started = time.time()
    summary: dict[str, Any] = {"case": case, "preset": args.preset, "status": "failed", "resumed": args.resume}
    try:
        if embedded:
            from distributed.java import require_java
            require_java()
            cluster = _start_embedded(cfg, case, executors)
            master, cluster_secret = cluster.state.master_url, cluster.state.secret
            if cfg.cluster.hdfs == "embedded":
                hdfs = _start_embedded_hdfs(cluster.run_dir)
                work = f"{hdfs.state.uri}/{case}"
        else:
            known = _known_cluster(cfg, master)
            cluster_secret = known.secret if known else None
            network = _host_network(known)
            host_sampler = _start_host_sampler(cfg, network, summary)
        # A cluster on this machine: everything binds and advertises the configured host, and
        # executors run this interpreter (pyspark reads the variable, not the conf).
        host = cfg.cluster.host if _is_loopback(_master_host(master)) else None
        if host:
            os.environ["SPARK_LOCAL_IP"] = host
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        elif bridge := own_address(_master_host(master)):
            # A master on another address of this machine (the bridge of the mini-cluster's hosts): the
            # driver and the reservation server bind it, as the only one the hosts reach; roles keep
            # advertising their own hosts' addresses. What the user set wins.
            os.environ.setdefault("SPARK_LOCAL_IP", bridge)
            os.environ.setdefault("TFOS_SERVER_HOST", bridge)
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the hosts share this machine's files
        if cfg.cluster.python_archive:  # the executors' Python comes from the archive Spark ships them
            os.environ["PYSPARK_PYTHON"] = env_archive.EXECUTOR_PYTHON
        reuse = reuse_workers(cfg) if callable(reuse_workers) else reuse_workers
        spark = _spark_session(case, cfg, master, host, cluster_secret, executors, reuse)
        summary["master"] = spark.sparkContext.master
        job = Job(case, cfg, spark, work, secrets.token_hex(32), host, resume=args.resume, hosts=host_sampler,
                  network=network)
        storage.makedirs(work, private=True)
        storage.write_text(job.out("config.yaml"), resolved)
        log.info("running %s (preset %s) on %s; outputs under %s", case, args.preset, summary["master"], work)
        summary.update(run(job) or {})
        summary["status"] = "ok"
        return 0
    except KeyboardInterrupt as exc:
        summary["error"] = f"interrupted ({exc or 'Ctrl-C'})"
        print(f"\n{case}: interrupted; stopping everything this run started", file=sys.stderr)
        return 130
    except Exception as exc:
        # A failed Spark task's message is a page of traces; the summary and the last line of
        # stderr carry the task's own error line, the full text stays in the traceback above it.
        summary["error"] = user_message(exc)
        traceback.print_exc()
        return 1
    finally:
        summary["wall_time_s"] = round(time.time() - started, 2)
        unwritten = None
        if host_sampler is not None:
            try:
                _write_host_figures(host_sampler, work, summary)
            except Exception as exc:  # noqa: BLE001 -- the summary says so; it and the job's error come first
                summary["hosts_error"] = f"figures per host not written: {exc}"
        try:
            storage.write_text(storage.join(work, "summary.json"), json.dumps(summary, indent=2, default=str))
        except Exception as exc:  # never hide the job's own error behind this one
            unwritten = f"{case}: could not write summary.json: {exc}"
        failed = bool(summary.get("error")) and not summary["error"].startswith("interrupted")

        def stop_spark():
            if failed:
                _quiet_spark_shutdown(spark)
            spark.stop()

        def stop_cluster():
            log.info("embedded mini-cluster stopped (%d processes)", len(cluster.down()))
        # Each step runs even if one before it raised (no daemon left behind), and the job's own error
        # line still comes last; the first cleanup error is raised after it.
        cleanup_error = None
        for needed, stop in ((spark, stop_spark), (hdfs, lambda: _copy_and_stop_hdfs(hdfs, work, output, case)),
                             (cluster, stop_cluster)):
            try:
                if needed is not None:
                    stop()
            except Exception as exc:  # noqa: BLE001 -- reported below, after the rest is stopped
                traceback.print_exc()
                cleanup_error = cleanup_error or exc
        if failed:
            print(f"\n{case}: failed: {summary['error']}", file=sys.stderr)  # the last line, after the shutdown
        if unwritten:
            print(unwritten, file=sys.stderr)
        if cleanup_error is not None:
            raise cleanup_error
        if summary["status"] == "ok":
            report = ("report.md" in summary.get("outputs", [])) and f"\n  report:  {storage.join(output, 'report.md')}"
            print(f"\n{case}: done in {summary['wall_time_s']:.0f}s. Outputs: {output}{report or ''}\n"
                  f"  summary: {storage.join(output, 'summary.json')}\n"
                  f"  config:  {storage.join(output, 'config.yaml')}")
