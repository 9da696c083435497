"""The one module that knows TensorFlowOnSpark 2.2.5's quirks; nothing else imports tensorflowonspark.

What it fixes or adds, so a future replacement of TFoS touches this file only:
- TFoS imports pkg_resources at import time (a warning on setuptools >= 70, gone in 81): imported
  here with that warning silenced; setup.py keeps setuptools below 81.
- `TFCluster.run` crashes when its args are None: role functions always get a dict.
- The reservation server speaks length-prefixed pickle with no authentication on an open port:
  it is replaced by one that speaks JSON frames behind the job's secret (reservation.py), on every
  executor as well as on the driver.
- TFoS finds a node's address by asking the routing table for the default interface: on the
  loopback mini-cluster that is wrong, so the node address is the configured host.
- The ps manager listens on all interfaces: it binds the node address instead.
- TFoS logs the managers' authkeys at INFO, on the driver and into the executor logs: its loggers
  keep warnings and errors only, on both sides.
- TensorFlow's gRPC servers (roles started with tf_servers=True) have no authentication and bind
  every interface: on a cluster of this machine the roles run them in a private network of the run's
  own (netns.py), made before the roles start and deleted by name when they end or fail; on the
  mini-cluster's hosts, on the hosts' TF cards (hosts.py), which nothing else reaches.
- "waiting for N reservations" forever: a timeout that names the roles that never registered.
- Roles that outlive the job: each process TFoS forks dies with the process its life depends on, and
  shutdown is bounded, even when a role returned early or raised. A ps (whose task waits for it) dies
  with that task's Python worker (PR_SET_PDEATHSIG). A worker fed by Spark (InputMode.SPARK) and its
  manager outlive the task that started them, so they die with their executor's JVM instead: Spark
  stops a Python worker after a minute without tasks, and feeding tasks may all run elsewhere. The
  price: such a manager stays, idle, until its executor ends (one per Spark-fed worker and cluster).
- Roles return a JSON result to the driver over the same authenticated channel, and may send it
  small progress records on the way (RoleContext.progress, Cluster.progress).
- TFoS feeds a partition to the worker on whichever executor Spark runs the task on, so no worker is
  sure to get a given share: `Cluster.feed_workers` feeds partition w into worker w's own queue (its
  TFoS manager, found by its reservation), wherever the task runs. The manager of a worker listens on
  a local socket, so this needs the feeding executor on the worker's host (one machine, as on the
  mini-cluster); elsewhere the task fails naming the worker.
- A role may be given a credential of its own (RoleContext.credential): it travels in the element of
  the node RDD's partition that becomes that role, so Spark ships it only to that role's task, never
  in the arguments every role receives.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from distributed import netns, processes, reservation
from distributed.reservation import ReservationTimeout

__all__ = ["Cluster", "ReservationTimeout", "RoleContext", "RoleFailed", "Roles", "run"]

log = logging.getLogger(__name__)


class RoleFailed(RuntimeError):
    """A role's function raised, or a role never reported back."""


@dataclass(frozen=True)
class Roles:
    """How many of each TFoS role to start: executors 0..ps-1 are ps, then the chief, then workers."""
    ps: int = 1
    workers: int = 2
    chief: bool = False

    @property
    def total(self) -> int:
        return self.ps + int(self.chief) + self.workers

    def template(self) -> dict[str, list[int]]:
        """Executor ids per job name, in the order TFCluster.run assigns them."""
        ids = iter(range(self.total))
        out = {"ps": [next(ids) for _ in range(self.ps)]}
        if self.chief:
            out["chief"] = [next(ids)]
        out["worker"] = [next(ids) for _ in range(self.workers)]
        return {job: execs for job, execs in out.items() if execs}

    def names(self) -> dict[int, str]:
        """executor id -> 'job:index'."""
        return {e: f"{job}:{i}" for job, execs in self.template().items() for i, e in enumerate(execs)}


def missing_roles(roles: Roles, registered_executor_ids: Iterable[int]) -> list[str]:
    seen = set(registered_executor_ids)
    return [f"{name} (executor {e})" for e, name in sorted(roles.names().items()) if e not in seen]


def check_assignment(roles: Roles, cluster_info: list[dict]) -> None:
    """The roles TFoS handed out must be exactly the roles asked for."""
    got = sorted((n["job_name"], n["task_index"]) for n in cluster_info)
    want = sorted((job, i) for job, execs in roles.template().items() for i in range(len(execs)))
    if got != want:
        raise RoleFailed(f"asked for roles {want}, TensorFlowOnSpark assigned {got}")
    nodes = [(n["host"], n["port"]) for n in cluster_info]
    if len(set(nodes)) != len(nodes):
        raise RoleFailed(f"two roles share one host:port: {nodes}")


def quiet_tfos_logging() -> None:
    """TFoS logs every node record at INFO, the manager's authkey included (TFCluster on the driver,
    TFSparkNode on the executors, into the executor logs): only its warnings and errors are kept."""
    logging.getLogger("tensorflowonspark").setLevel(logging.WARNING)


def _tfos():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation, TFoS's own DeprecationWarnings
        from tensorflowonspark import TFCluster, TFManager, TFNode, TFSparkNode, util
        from tensorflowonspark import reservation as tfos_reservation
    return TFCluster, TFManager, TFNode, TFSparkNode, util, tfos_reservation


# ---------------------------------------------------------------------------------- executor side
def _die_with_parent() -> None:
    """Ask Linux to kill this process when the process that forked it exits."""
    import ctypes
    import signal
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: Spark's own teardown is all there is


def _die_with_executor() -> None:
    """Ask to be killed when this process's Spark executor (the nearest JVM above it) exits; without
    one above (not under Spark), when the parent exits."""
    executor = processes.nearest_ancestor("java")
    if executor is None:
        _die_with_parent()
    else:
        processes.exit_with(executor)


def node_address(node_host: str | None) -> str | None:
    """The address this node's roles advertise: the driver's choice (the configured host of a loopback
    cluster); without one (a master elsewhere), the address this node's Spark worker binds, which
    executors inherit as SPARK_LOCAL_IP (each host's own on the mini-cluster's hosts); else None, and
    TFoS asks the routing table (which, on a host without a default route, answers 127.0.0.1)."""
    return node_host or os.environ.get("SPARK_LOCAL_IP") or None


def _patch_executor(node_host: str | None, secret: str, background: bool = False) -> None:
    """Install the workarounds in this Python worker (idempotent; runs before any TFoS code).
    background: this task starts a node whose worker role runs on after the task (InputMode.SPARK)."""
    import multiprocessing
    _, TFManager, _, _, util, tfos_reservation = _tfos()
    quiet_tfos_logging()
    reservation.install_client(tfos_reservation, secret)
    node_host = node_address(node_host)
    if node_host:
        util.get_ip_address = lambda: node_host

    def start_manager(authkey, queues, mode="local"):
        TFManager.qdict.clear()
        TFManager.kdict.clear()
        for q in queues:
            TFManager.qdict[q] = multiprocessing.JoinableQueue()
        TFManager.TFManager.register("get_queue", callable=lambda qname: TFManager._get_queue(qname))
        TFManager.TFManager.register("get", callable=lambda key: TFManager._get(key))
        TFManager.TFManager.register("set", callable=lambda key, value: TFManager._set(key, value))
        address = (node_host or util.get_ip_address(), 0) if mode == "remote" else None
        TFManager.mgr = TFManager.TFManager(address=address, authkey=authkey)
        # a ps's manager ("remote") serves a task that waits for its role; a background worker's, the
        # feeding tasks that come after this one
        TFManager.mgr.start(initializer=_die_with_executor if background and mode != "remote" else _die_with_parent)
        return TFManager.mgr

    TFManager.start = start_manager


def _keep_credential(fn: Callable) -> Callable:
    """Wrap TFoS's node function: the partition holds (executor id, credential); TFoS sees the id, the
    role this task becomes finds the credential in this module (a forked role process inherits it)."""
    def run(iterator):
        import distributed.tfos as node  # this process's module, not a copy shipped with the closure
        items = list(iterator)
        node._ROLE_CREDENTIAL = items[0][1] if items else None
        return fn(iter([executor_id for executor_id, _ in items]))
    return run


class _NodeContext:
    """The SparkContext as TFCluster.run sees it: the node RDD it makes from range(n) carries each
    executor's credential beside its id, so each one travels in its own task only."""

    def __init__(self, sc, by_executor: dict[int, str | None]):
        self._sc, self._by_executor = sc, by_executor

    def parallelize(self, data, numSlices=None):
        return self._sc.parallelize([(i, self._by_executor.get(i)) for i in data], numSlices)

    def __getattr__(self, name):
        return getattr(self._sc, name)


_ROLE_CREDENTIAL: str | None = None


def _on_executor(fn: Callable, node_host: str | None, secret: str, background: bool = False) -> Callable:
    """Wrap a TFoS partition function so the patches are in place in whichever worker runs it."""
    def run(*args):  # (iterator) or (partition index, iterator)
        _patch_executor(node_host, secret, background)
        return fn(*args)
    return run


def _feed_pinned(workers: dict[int, dict], feed_timeout_s: float, qname: str = "input") -> Callable:
    """Partition function: feed partition w into worker w's queue, as TFSparkNode.train feeds the local
    one (wait until the worker consumed it, fail on its error, skip once it terminated its feed)."""
    def feed(index, iterator):
        from queue import Empty
        _, TFManager, _, _, _, _ = _tfos()
        node = workers[index]
        addr = tuple(node["addr"]) if isinstance(node["addr"], list) else node["addr"]
        try:
            mgr = TFManager.connect(addr, node["authkey"])
            queue, equeue = mgr.get_queue(qname), mgr.get_queue("error")
        except (OSError, EOFError) as exc:
            raise RuntimeError(f"partition {index}: cannot reach the queue of worker:{index} at {addr} "
                               f"(host {node['host']}): {exc}") from exc
        started, items, skipped = time.monotonic(), 0, str(mgr.get("state")) == "'terminating'"
        for item in iterator:
            items += 1
            if not skipped:
                queue.put(item, block=True)
        put_s = time.monotonic() - started
        lost: list[BaseException] = []

        def join():
            try:
                queue.join()
            except (OSError, EOFError) as exc:  # the manager is gone, and the worker with it
                lost.append(exc)

        waited = threading.Thread(target=join, daemon=True)
        waited.start()
        deadline = time.monotonic() + feed_timeout_s
        while waited.is_alive():
            try:
                error = equeue.get(block=False)
            except Empty:
                error = None
            except (OSError, EOFError) as exc:  # the manager is gone: the same as a failed join below
                lost.append(exc)
                break
            if error is not None:
                raise RuntimeError(f"worker:{index} failed while fed:\n{error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker:{index} did not consume partition {index} within {feed_timeout_s:.0f}s")
            waited.join(0.2)
        if lost:
            raise RuntimeError(f"worker:{index} (host {node['host']}) went away before it consumed partition "
                               f"{index}: its queue's manager closed the connection ({lost[0]!r})")
        return [{"worker": index, "items": items, "skipped": skipped, "put_s": round(put_s, 4),
                 "consumed_s": round(time.monotonic() - started, 4)}]
    return feed


PROGRESS_INTERVAL_S = 0.5   # between two progress records of one role, unless one is forced
PROGRESS_TIMEOUT_S = 2.0    # connect + handshake + reply of one progress record
PROGRESS_BACKOFF_S = 30.0   # no progress records after one failed, for this long


class RoleContext:
    """What a role function sees: its name, the cluster's addresses, its data feed, stop signals."""

    def __init__(self, tfos_ctx, args: dict, secret: str = "", server_addr=None, network: str | dict | None = None,
                 credential: str | None = None):
        self._ctx = tfos_ctx
        self._secret, self._server_addr = secret, server_addr
        self._network = network
        self.args = args
        self.credential = credential  # this role's own (run(credentials=...)), or None
        self.job_name: str = tfos_ctx.job_name
        self.task_index: int = tfos_ctx.task_index
        self.executor_id: int = tfos_ctx.executor_id
        self.cluster_spec: dict[str, list[str]] = tfos_ctx.cluster_spec
        self._progress_sent, self._progress_quiet_until = float("-inf"), 0.0  # the first record always goes

    @property
    def name(self) -> str:
        return f"{self.job_name}:{self.task_index}"

    def private_network(self):
        """Context: run TensorFlow's servers and clients in the run's private network, if the run has
        one (netns.py; on hosts, this role's host's TF card); wrap what must reach the driver or storage
        in netns.outside()."""
        if isinstance(self._network, dict):
            return netns.entered(self._network["netns"][_host_of(self.address)])
        return netns.entered(self._network)

    @property
    def tf_cluster_spec(self) -> dict[str, list[str]]:
        """The cluster spec TensorFlow gets: on hosts each address is its host's TF card's, else as TFoS
        gave it (cluster_spec keeps the hosts' own addresses, for the figures per host)."""
        return tf_cluster_spec(self.cluster_spec, self._network)

    def progress(self, force: bool = False, **fields) -> bool:
        """Tell the driver's display how this role is doing (flat JSON scalars: epoch, accuracy, ...).

        Fire and forget: sends at most one record per PROGRESS_INTERVAL_S unless `force` (an epoch
        end), never raises, and after a failed send stays quiet for a while, so a slow or gone driver
        cannot slow training down. True if the record was sent."""
        now = time.monotonic()
        if now < self._progress_quiet_until or (not force and now - self._progress_sent < PROGRESS_INTERVAL_S):
            return False
        self._progress_sent = now
        try:
            record = {k: v.item() if hasattr(v, "item") else v for k, v in fields.items()}  # numpy scalars
            with netns.outside():
                reservation.send_progress(self._server_addr, self._secret, self.name, record,
                                          timeout_s=PROGRESS_TIMEOUT_S)
            return True
        except Exception as exc:  # noqa: BLE001 -- progress is best effort by design
            self._progress_quiet_until = now + PROGRESS_BACKOFF_S
            log.debug("progress from %s not sent: %s", self.name, exc)
            return False

    def fail(self, error: BaseException) -> None:
        """Hand in this role's error now, from any thread, as if the role had raised it: for a watchdog
        whose role's own thread is blocked in a call that will not return (a TF step waiting on a host
        that stopped answering). The driver fails the run on it."""
        with netns.outside():
            reservation.send_result(self._server_addr, self._secret, self.name,
                                    {"error": "".join(traceback.format_exception_only(error))})

    @property
    def address(self) -> str:
        return self.cluster_spec[self.job_name][self.task_index]

    def addresses(self, job: str) -> list[str]:
        return list(self.cluster_spec.get(job, []))

    def data_feed(self, train_mode: bool = True):
        """TFoS's DataFeed (InputMode.SPARK): next_batch(n) and should_stop()."""
        return self._ctx.get_data_feed(train_mode=train_mode)

    def should_stop(self) -> bool:
        """True once the driver has stopped this node (ps) or its manager is gone."""
        try:
            with netns.outside():
                return str(self._ctx.mgr.get("state")).strip("'") in ("stopped", "terminating")
        except Exception:  # the manager died with its executor
            return True

    def wait_for_roles(self, roles: list[str], timeout_s: float, poll_s: float = 1.0) -> bool:
        """Block until every role in `roles` (e.g. ['chief:0']) handed in its result, or one failed.

        For server roles that serve another role (TF servers a chief drives): their executor core
        is busy, so TFoS cannot reach them with a shutdown task. False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with netns.outside():
                    reported = reservation.reported_roles(self._server_addr, self._secret)
                if set(roles) <= set(reported):
                    return True
            except OSError:  # the driver closed the server: the job is over
                return True
            if self.should_stop():
                return True
            time.sleep(poll_s)
        return False


def _host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


def tf_cluster_spec(spec: dict[str, list[str]], network: str | dict | None) -> dict[str, list[str]]:
    """`spec` with each host's address replaced by its TF card's (network: hosts.HostNetwork.tf_network());
    unchanged for a private network of one namespace (str) or none."""
    if not isinstance(network, dict):
        return spec
    unknown = sorted({_host_of(a) for listed in spec.values() for a in listed} - set(network["address"]))
    if unknown:
        raise ValueError(f"roles on {', '.join(unknown)}: not hosts of the mini-cluster whose TF cards the run uses")
    return {job: [f"{network['address'][_host_of(a)]}:{a.rsplit(':', 1)[1]}" for a in listed]
            for job, listed in spec.items()}


def _role_main(role_fn: Callable, secret: str, server_addr, network: str | dict | None,
               background: bool) -> Callable:
    def main(args, tfos_ctx):
        if background and tfos_ctx.job_name not in ("ps", "evaluator"):
            _die_with_executor()  # TFoS returned its task at once: that Python worker may be stopped when idle
        else:
            _die_with_parent()
        import distributed.tfos as node  # where this node's task left the role's credential
        ctx = RoleContext(tfos_ctx, dict(args), secret, server_addr, network, node._ROLE_CREDENTIAL)
        name = f"{ctx.job_name}:{ctx.task_index}"
        try:
            result = role_fn(ctx.args, ctx)
        except BaseException:
            reservation.send_result(server_addr, secret, name, {"error": traceback.format_exc()})
            raise
        reservation.send_result(server_addr, secret, name, result if result is not None else {})
    return main


# ------------------------------------------------------------------------------------ driver side
class Cluster:
    """A running TFoS cluster: its roles' addresses, data feeding, results, and a bounded shutdown."""

    def __init__(self, sc, tfos_cluster, server, roles: Roles, node_host, secret, input_mode,
                 network: str | dict | None = None):
        self.sc = sc
        self.network = network  # the roles' private network: one of the run's own (netns.py, deleted when
        # they end), or the hosts' TF cards (hosts.py, the cluster's)
        self._cluster = tfos_cluster
        self._server = server
        self.roles = roles
        self._node_host = node_host
        self._secret = secret
        self._input_mode = input_mode
        self.info: list[dict] = sorted(tfos_cluster.cluster_info, key=lambda n: n["executor_id"])

    def addresses(self, job: str) -> list[str]:
        return [f"{n['host']}:{n['port']}" for n in self.info if n["job_name"] == job]

    def results(self) -> dict[str, Any]:
        return self._server.results()

    def progress(self) -> dict[str, dict]:
        """The latest progress record of each role that sent one ('job:index' -> record)."""
        return self._server.progress()

    def progress_since(self, seq: int) -> tuple[int, list[tuple[str, dict]]]:
        """Every progress record received after record number `seq`, in arrival order (a display that
        polls now and then sees each epoch end): (newest number, [(role, record)])."""
        return self._server.progress_since(seq)

    def feed_workers(self, rdd, feed_timeout_s: float = 600) -> list[dict]:
        """One epoch in InputMode.SPARK with partition w of `rdd` fed to worker w, whichever executor runs it.

        Returns, per partition, {worker, items, skipped (the worker had ended its feed), put_s (seconds
        to put the items into its queue), consumed_s (until the worker had read them all)}."""
        workers = {n["task_index"]: n for n in self.info if n["job_name"] == "worker"}
        if rdd.getNumPartitions() != len(workers):
            raise ValueError(f"{rdd.getNumPartitions()} partitions for {len(workers)} workers")
        fn = _on_executor(_feed_pinned(workers, feed_timeout_s), self._node_host, self._secret)
        stats: list[dict] = []
        self._watched(lambda: stats.extend(rdd.mapPartitionsWithIndex(fn).collect()))
        return sorted(stats, key=lambda r: r["worker"])

    def await_roles(self, roles: set[str], timeout_s: float) -> bool:
        """Wait until `roles` handed in their results; False at the timeout or once any role failed."""
        return self._await(roles, time.monotonic() + timeout_s)

    def _watched(self, job: Callable[[], None]) -> None:
        """Run a feeding Spark job; a role that raises meanwhile cancels it and surfaces as RoleFailed."""
        outcome: list[BaseException] = []

        def run_feed():
            try:
                job()
            except BaseException as exc:  # re-raised in the caller's thread below
                outcome.append(exc)

        feeder = threading.Thread(target=run_feed, name="tfos-feed", daemon=True)
        feeder.start()
        while feeder.is_alive():
            feeder.join(1.0)
            if self.failures():
                self.sc.cancelAllJobs()
                raise RoleFailed(self._describe(self.failures()))
        if outcome:
            raise outcome[0]

    def train(self, rdd, epochs: int = 1, feed_timeout_s: float = 600) -> None:
        """Feed `rdd` to the workers (InputMode.SPARK), `epochs` times; returns when all was consumed.

        A role that raises stops the feeding at once (TFoS would retry the feeding tasks until their
        timeout) and surfaces as RoleFailed naming the role."""
        _, _, _, TFSparkNode, _, _ = _tfos()
        union = self.sc.union([rdd] * epochs)
        feed = TFSparkNode.train(self.info, self._cluster.cluster_meta, feed_timeout=int(feed_timeout_s))
        self._watched(lambda: union.foreachPartition(_on_executor(feed, self._node_host, self._secret)))

    def failures(self) -> dict[str, str]:
        """Roles that raised (their tracebacks), and the node job's own error if Spark gave up on it."""
        TFCluster = _tfos()[0]
        out = {k: v["error"] for k, v in self.results().items() if isinstance(v, dict) and "error" in v}
        if "error" in TFCluster.tf_status:
            out["spark"] = TFCluster.tf_status["error"]
        return out

    @staticmethod
    def _describe(failed: dict[str, str]) -> str:
        """'ps:0 failed (its error line); ...' on the first line, each role's whole traceback below it."""
        def last_line(text: str) -> str:
            return next((line.strip() for line in reversed(str(text).splitlines()) if line.strip()), "?")[:400]
        return "; ".join(f"{k} failed ({last_line(v)})" for k, v in failed.items()) + \
            "".join(f"\n--- {k} ---\n{v}" for k, v in failed.items())

    def shutdown(self, timeout_s: float = 60, grace_s: float = 0) -> dict[str, Any]:
        """Stop every role within timeout_s and return their results keyed 'job:index'.

        Raises RoleFailed naming the roles that raised or never reported; it never hangs."""
        done = threading.Event()
        errors: list[str] = []

        def stop_roles():
            try:
                self._stop_roles(grace_s, deadline=time.monotonic() + timeout_s)
            except Exception as exc:  # reported below, together with what the roles said
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                done.set()

        threading.Thread(target=stop_roles, name="tfos-shutdown", daemon=True).start()
        if not done.wait(timeout_s):
            errors.append(f"roles still running after {timeout_s:.0f}s")
        failed = self.failures()
        silent = sorted(set(self.roles.names().values()) - set(self.results()))
        if failed or silent or errors:
            self.abort()
            raise RoleFailed("; ".join(errors + ([f"no result from {', '.join(silent)}"] if silent else []))
                             + ("; " if failed and (errors or silent) else "")
                             + (self._describe(failed) if failed else ""))
        self._close()
        return self.results()

    def abort(self) -> None:
        """Give up on the roles at once (after an error or Ctrl-C): cancel their Spark jobs.

        Their processes end with their executors when the application stops."""
        try:
            self.sc.cancelAllJobs()
        finally:
            self._close()

    def _close(self) -> None:
        try:
            self._server.close()
        finally:
            _remove_network(self.network)

    def _workers(self) -> list[dict]:
        return [n for n in self.info if n["job_name"] not in ("ps", "evaluator")]

    def _await(self, roles: set[str], deadline: float) -> bool:
        """Wait until `roles` reported; give up at the deadline or as soon as any role failed."""
        while not self._server.wait_for(roles, timeout_s=min(1.0, max(0.0, deadline - time.monotonic()))):
            if self.failures() or time.monotonic() >= deadline:
                return False
        return True

    def _stop_roles(self, grace_s: float, deadline: float) -> None:
        TFCluster, TFManager, _, TFSparkNode, _, _ = _tfos()
        workers = self._workers()
        worker_names = {f"{n['job_name']}:{n['task_index']}" for n in workers}
        if self._input_mode == TFCluster.InputMode.SPARK:
            # End-of-feed markers. A task may land twice on one executor, so repeat until every
            # worker has reported (a second marker to a finished worker is harmless).
            while not worker_names <= set(self.results()) and time.monotonic() < deadline:
                if self.failures():
                    return
                stop = TFSparkNode.shutdown(self.info, grace_s, self._cluster.queues)
                self.sc.parallelize(range(len(workers)), len(workers)).foreachPartition(
                    _on_executor(stop, self._node_host, self._secret))
                self._await(worker_names, min(deadline, time.monotonic() + 10.0))
        elif not self._await(worker_names, deadline):
            return
        if self.failures():  # a worker's result is its error: stop here, the caller aborts the rest
            return
        # The ps/evaluator roles run in a process forked from their task, which dies with it, and TFoS
        # ends that task as soon as its control queue gets None. So: first the stop signal their
        # should_stop() reads, then their results (a ps may still be writing its last checkpoint), and
        # only then the control message that ends their tasks.
        servers = [TFManager.connect(tuple(n["addr"]), n["authkey"]) for n in self.info
                   if n["job_name"] in ("ps", "evaluator")]
        for manager in servers:
            manager.set("state", "stopped")
        self._await(set(self.roles.names().values()), deadline)
        for manager in servers:
            control = manager.get_queue("control")
            control.put(None)
            control.join()
        while self.sc.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
            time.sleep(0.5)


def run(sc, role_fn: Callable[[dict, RoleContext], Any], args: dict, roles: Roles, *,
        input_mode: str = "spark", node_host: str | None = None, secret: str,
        reservation_timeout_s: float = 120, tf_servers: bool = False, tf_network: dict | None = None,
        credentials: dict[str, str] | None = None) -> Cluster:
    """Start `roles` on the executors of `sc`, each running role_fn(args, ctx) in its TFoS role.

    role_fn returns a JSON-serialisable result (or None); Cluster.shutdown() collects them.
    tf_servers: the roles run TensorFlow's gRPC servers (no authentication): on a cluster of this
    machine they get a private network (RoleContext.private_network), deleted when they end; on the
    mini-cluster's hosts pass `tf_network` (hosts.HostNetwork.tf_network()): the hosts' TF cards.
    `credentials` ('job:index' -> text) reach only their own role, as ctx.credential."""
    TFCluster, _, _, TFSparkNode, _, tfos_reservation = _tfos()
    mode = {"spark": TFCluster.InputMode.SPARK, "tensorflow": TFCluster.InputMode.TENSORFLOW}[input_mode]
    TFCluster.tf_status.clear()  # module-level in TFoS: would leak an old error into this run
    quiet_tfos_logging()  # the roles are logged below without their authkeys
    network = (tf_network or _private_network(node_host)) if tf_servers else None
    try:
        server = reservation.Server(roles.total, secret=secret, host=node_host, sc=sc, describe=roles,
                                    missing=missing_roles)
    except BaseException:
        _remove_network(network)
        raise
    original_server, original_run = tfos_reservation.Server, TFSparkNode.run
    tfos_reservation.Server = lambda count: server

    def node_run(fn, tf_args, cluster_meta, *rest, **kw):
        background = mode == TFCluster.InputMode.SPARK
        inner = original_run(_role_main(role_fn, secret, cluster_meta["server_addr"], network, background),
                             tf_args, cluster_meta, *rest, **kw)
        return _on_executor(_keep_credential(inner), node_host, secret, background)

    TFSparkNode.run = node_run
    try:
        by_executor = {e: (credentials or {}).get(name) for e, name in roles.names().items()}
        tfos_cluster = TFCluster.run(_NodeContext(sc, by_executor), None, dict(args), roles.total, roles.ps,
                                     input_mode=mode, master_node="chief" if roles.chief else None,
                                     reservation_timeout=int(reservation_timeout_s))
    except BaseException:
        sc.cancelAllJobs()
        server.close()
        _remove_network(network)
        raise
    finally:
        tfos_reservation.Server, TFSparkNode.run = original_server, original_run
    cluster = Cluster(sc, tfos_cluster, server, roles, node_host, secret, mode, network)
    try:
        check_assignment(roles, cluster.info)
    except RoleFailed:
        cluster.abort()
        raise
    log.info("TFoS roles up: %s%s", ", ".join(f"{n['job_name']}:{n['task_index']}@{n['host']}:{n['port']}"
                                              for n in cluster.info),
             f"; their TF servers in private network {network}" if isinstance(network, str) else
             f"; their TF servers on the hosts' TF cards ({network['subnet']})" if network else "")
    if tf_servers and not network:
        _warn_exposed(cluster.info)
    return cluster


def _private_network(node_host: str | None) -> str | None:
    """A private network for TF servers when every role runs on this machine, else None (warned)."""
    if node_host is None:
        return None  # roles on several machines: the cluster's own network must be private (README)
    reason = netns.unavailable()
    if reason is None:
        try:
            return netns.create()
        except netns.NetnsError as exc:
            reason = str(exc)
    log.warning("no private network for this run's TensorFlow servers (%s): they listen on every "
                "interface of this machine without authentication while the run lasts", reason)
    return None


def _remove_network(network: str | dict | None) -> None:
    if isinstance(network, str):  # the run's own; the hosts' TF cards are the cluster's
        try:
            netns.remove(network)
        except netns.NetnsError as exc:  # the next run's sweep deletes it
            log.warning("could not delete private network %s: %s", network, exc)


def _warn_exposed(info: list[dict]) -> None:
    """TF servers bind every interface: say so, naming any role whose address is public."""
    import ipaddress
    public = []
    for n in info:
        try:
            if ipaddress.ip_address(n["host"]).is_global:
                public.append(f"{n['job_name']}:{n['task_index']}@{n['host']}")
        except ValueError:  # a host name: cannot tell
            continue
    log.warning("TensorFlow's servers have no authentication and listen on every interface of their "
                "machines: the cluster's network must admit only its own machines (README, Security)%s",
                f"; public addresses: {', '.join(public)}" if public else "")
