"""The mini-cluster on hosts (`up --hosts`, distributed/hosts.py): two network-namespace hosts on the
cluster's own bridge, a real Spark job whose executors report where the kernel says they run, and
`down`, after which nothing of the cluster is left. Its own small cluster, not the session's."""
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import psutil
import pytest

from conf import load_cluster
from distributed import env_archive, host_stats, hosts, processes
from distributed.minicluster import up_on_free_ports

from rdd_io import storage

from .conftest import ROOT, hdfs_possible, minicluster_cli
from .faults import finish, start_job, summary, tail, wait_for
from .test_smoke_job import consumed_exactly_once

HOSTS = 2


def needs_hosts() -> None:
    """Hosts need root; on a laptop without it the test is skipped, under CI (CI=true) it fails."""
    reason = hosts.unavailable()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI runs as root and must test on hosts: {reason}")
    if reason:
        pytest.skip(reason)


def what_is_left(cid: str, run_id: str) -> dict:
    """Namespaces, cgroups, links, the record and processes of cluster `cid` still on the machine."""
    return {"namespaces": [n for n in hosts.netns_names() if hosts.owner(n) == cid],
            "cgroups": [n for n in host_stats.names(hosts.NETNS_PREFIX) if hosts.owner(n) == cid],
            "links": [n for n in hosts.link_names() if hosts.owner(n) == cid],
            "record": (hosts.RECORD_DIR / f"{cid}.json").exists(),
            "processes": [p.pid for p in processes.tagged(run_id)]}


NOTHING = {"namespaces": [], "cgroups": [], "links": [], "record": False, "processes": []}


@contextlib.contextmanager
def cluster_on_hosts(run_dir, n: int):
    """A mini-cluster of n hosts on free ports; stopped and its hosts removed also when the test fails."""
    needs_hosts()
    cluster = up_on_free_ports(replace(load_cluster(), start_timeout_s=300), run_dir, workers=n, hosts=n)
    cid, run_id = cluster.network.cid, cluster.state.run_id
    try:
        yield cluster
    finally:  # stop by pid, remove the hosts
        cluster.down()
        assert what_is_left(cid, run_id) == NOTHING


@pytest.fixture
def host_cluster(tmp_path):
    with cluster_on_hosts(tmp_path / "run", HOSTS) as cluster:
        yield cluster


def listening_addresses(netns: str) -> set[str]:
    """The local addresses of every listening TCP socket in namespace `netns` (`ss`, run inside it)."""
    enter, close = hosts.in_netns(netns)
    try:
        out = subprocess.run(["ss", "-Htln"], capture_output=True, text=True, check=True, preexec_fn=enter).stdout
    finally:
        close()
    return {line.split()[3].rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:") for line in out.splitlines()}


def ip_json(*args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout)


def test_each_executor_runs_in_its_own_host_with_its_address_and_down_leaves_nothing(host_cluster, tmp_path):
    network, state = host_cluster.network, host_cluster.state
    addresses = [h.address for h in network.hosts]
    inodes = {h.address: hosts.netns_inode(h.netns) for h in network.hosts}
    root_inode = os.stat("/proc/self/ns/net").st_ino
    assert len(set(addresses)) == HOSTS and all(hosts.address(a) for a in addresses + [network.bridge_address])
    assert len(set(inodes.values()) | {root_inode}) == HOSTS + 1

    # `status` shows each host, its address and what runs there.
    shown = host_cluster.status()
    assert shown["alive_workers"] == HOSTS and shown["running"] is True
    assert [(h["host"], h["address"], h["runs"], h["exists"]) for h in shown["network"]["hosts"]] == \
        [(h.netns, h.address, [f"worker-{h.number}"], True) for h in network.hosts]
    assert state.master_url.startswith(f"spark://{network.bridge_address}:")

    # Each host: loopback up, its own address only, no route but its /24 (nothing leads off the machine).
    for host in network.hosts:
        links = {link["ifname"]: link for link in ip_json("-n", host.netns, "addr", "show")}
        assert set(links) == {"lo", hosts.INNER_IFACE}
        assert "UP" in links["lo"]["flags"]
        assert [(a["local"], a["prefixlen"]) for a in links[hosts.INNER_IFACE]["addr_info"]] == [(host.address, 24)]
        routes = ip_json("-n", host.netns, "-4", "route", "show", "table", "all")
        assert [r["dst"] for r in routes if r.get("table", "main") == "main"] == [network.subnet], routes
        assert not any(r["dst"] == "default" for r in routes)

    # The worker JVMs run in their hosts, and the master knows them by their hosts' addresses.
    for host in network.hosts:
        pid = state.pids[f"worker-{host.number}"]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == inodes[host.address]
        assert pid in host_stats.pids(host.netns)  # and in their hosts' cgroups, counted per host
    assert sorted(w["host"] for w in host_cluster.master_json()["workers"]) == sorted(addresses)
    # Nothing binds every interface: each worker listens on its host's address only, the master on the bridge's.
    for host in network.hosts:
        assert listening_addresses(host.netns) == {host.address}
    master = psutil.Process(state.pids["master"])
    assert {c.laddr.ip.removeprefix("::ffff:") for c in master.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN} == {network.bridge_address}

    # A real Spark job: each task says where the kernel puts its socket and which namespace it is in, and
    # which Python runs it: the executors get theirs from the archive the driver ships (a bare venv here;
    # `make env-archive` packs the package and its dependencies the same way).
    archive = env_archive.build(tmp_path / "env.tar.gz", [], work_dir=tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "cluster" / "host_facts.py"),
                           str(host_cluster.run_dir), str(HOSTS), str(archive)],
                          env=dict(os.environ, SPARK_LOCAL_IP=network.bridge_address, PYSPARK_PYTHON=sys.executable),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    tasks = facts["tasks"]
    assert sorted(t["address"] for t in tasks) == sorted(addresses), tasks  # one task on each host
    for task in tasks:
        assert task["netns_inode"] == inodes[task["address"]], task        # in that host's namespace
        assert task["spark_local_ip"] == task["address"], task
        # the archive unpacked in the executor's own folder under the worker's work dir, not the driver's venv
        assert Path(task["cwd"]).is_relative_to(host_cluster.run_dir), task
        assert task["executable"] == os.path.join(task["cwd"], "environment", "bin", "python"), task
        assert os.path.realpath(task["prefix"]) == os.path.realpath(os.path.join(task["cwd"], "environment")), task
        assert task["has_yaml"] is False, task  # the driver's packages are not there
    assert facts["driver_host"] == network.bridge_address
    assert facts["driver_netns_inode"] == root_inode
    executors = sorted(e.rsplit(":", 1)[0] for e in facts["executors"])
    assert executors == sorted([network.bridge_address, *addresses])  # the driver and one executor per host

    # down: every process of the run stopped, every namespace, veth, bridge and the record removed.
    run_id, cid = state.run_id, network.cid
    assert processes.tagged(run_id)
    host_cluster.down()
    assert what_is_left(cid, run_id) == NOTHING
    # (a veth pair goes with its namespace; the kernel may remove it before `down` gets to it)
    assert set(host_cluster.removed_hosts) >= {*(h.netns for h in network.hosts), network.bridge}


@pytest.fixture(scope="module")
def five_hosts(minicluster):
    """A cluster of 5 hosts for the jobs below (land cover has 5 roles): the session's, which runs on hosts
    wherever these tests can run (conftest.on_hosts)."""
    needs_hosts()
    assert minicluster.network and len(minicluster.network.hosts) == 5, "the session's cluster is not on 5 hosts"
    return minicluster


def user_env() -> dict:
    """This environment as a user's: no address or interpreter set by hand (the runner finds the bridge's
    address and the hosts run its interpreter)."""
    return {k: v for k, v in os.environ.items() if k not in ("SPARK_LOCAL_IP", "TFOS_SERVER_HOST", "PYSPARK_PYTHON")}


def run_job_on(cluster, case: str, out: Path, *sets: str) -> tuple[dict, str]:
    """jobs/<case>.py --preset tiny on the cluster, as a user runs it (user_env). Its summary and log."""
    env = dict(user_env(), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{case}.py"), "--preset", "tiny",
                           "--master", cluster.state.master_url, "--set", f"cluster.run_dir={cluster.run_dir}",
                           *[arg for s in sets for arg in ("--set", s)], "--output", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads((out / "summary.json").read_text()), proc.stdout + proc.stderr


def test_the_smoke_jobs_roles_run_on_three_hosts_and_reach_each_other(five_hosts, tmp_path):
    """jobs/smoke.py (1 ps + 2 workers, 10,000 records fed through Spark) on the hosts: each role on a
    host of its own, advertising that host's address, every record consumed once. The driver and the
    reservation server bind the bridge's address, the master's, with no variable set by hand."""
    network, out = five_hosts.network, tmp_path / "smoke"
    summary, _ = run_job_on(five_hosts, "smoke", out)
    consumed_exactly_once(summary, storage.to_uri(out), 10_000)
    role_hosts = {role: r["address"].rsplit(":", 1)[0] for role, r in summary["roles"].items()}
    assert sorted(role_hosts) == ["ps:0", "worker:0", "worker:1"]
    assert len(set(role_hosts.values())) == 3 and set(role_hosts.values()) <= {h.address for h in network.hosts}
    # Each host's own figures (host_stats, sampled by the driver) saw its role: the executor's CPU in the
    # host's cgroup, the job's bytes on its link; the series is in hosts.csv, readable by its owner only.
    figures = summary["hosts"]
    assert sorted(figures) == sorted(h.netns for h in network.hosts), figures
    assert sorted(r for f in figures.values() for r in f["roles"]) == ["ps:0", "worker:0", "worker:1"]
    for f in figures.values():
        if f["roles"]:
            assert len(f["roles"]) == 1 and f["cpu_s"] > 1, f
            assert f["bytes_in"] > 10_000 and f["bytes_out"] > 10_000, f
    series = (out / "hosts.csv").read_text().splitlines()
    assert series[0].startswith("t_s,host,address,bytes_in,bytes_out,") and len(series) > 1 + 2 * len(figures)
    assert (out / "hosts.csv").stat().st_mode & 0o077 == 0


def test_land_cover_on_five_hosts_reports_each_plan_per_host_and_its_bytes_match_the_roles(five_hosts, tmp_path):
    """Two placement plans of the land-cover study with each of its 5 roles (ps, chief, 3 workers) on a host
    of its own: per plan and host, traffic, CPU and memory (plans_per_host.csv, the report, hosts.png); and
    over each cell's steady window the bytes out of the hosts' links are those of the roles' sockets, plus
    frame headers (within 5%), the TF servers' traffic included: it crossed the hosts' TF cards, whose
    servers nothing outside them reaches."""
    network, out = five_hosts.network, tmp_path / "landcover"
    summary, log = run_job_on(five_hosts, "landcover", out, "experiments.plans=[default,scheme2]",
                         "experiments.batch_sizes=[20]", "experiments.data_parallel=false",
                         "experiments.single_machine=false")
    assert f"their TF servers on the hosts' TF cards ({network.tf_subnet})" in log, log[-3000:]
    assert "no authentication" not in log, log[-3000:]  # no TF server left exposed, none warned of
    cells = {c["plan"]: cid for cid, c in summary["cells"].items()}
    assert sorted(cells) == ["default", "scheme2"], summary["cells"].keys()
    addresses = {h.netns: h.address for h in network.hosts}
    for plan, cid in cells.items():
        per_host = summary["cells"][cid]["hosts"]
        assert sorted(per_host) == sorted(addresses), per_host
        assert sorted(r for h in per_host.values() for r in h["roles"]) == \
            ["chief:0", "ps:0", "worker:0", "worker:1", "worker:2"]
        for name, h in per_host.items():
            assert h["address"] == addresses[name] and len(h["roles"]) == 1, (plan, name, h)
            assert h["bytes_in"] > 10_000 and h["bytes_out"] > 10_000 and h["cpu_s"] > 0.1, (plan, name, h)
        check = summary["hosts_check"][cid]
        assert check["comparable"] and check["exact"] and check["steps"] >= 1, check
        assert 0.995 <= check["ratio"] <= 1.05, check  # the links carry the payload and headers (acks, frames)
    rows = (out / "plans_per_host.csv").read_text().splitlines()
    assert rows[0].startswith("cell,plan,host,address,roles,seconds,in MiB,out MiB,") and len(rows) == 1 + 2 * 5
    report = (out / "report.md").read_text()
    assert "## Placement plans per host" in report and "| within |" in report and "(hosts.png)" in report
    assert (out / "hosts.png").read_bytes()[:4] == b"\x89PNG"
    assert all((out / name).stat().st_mode & 0o077 == 0 for name in ("plans_per_host.csv", "hosts.png"))


def host_of_role(network, pids: Path, role: str):
    """(pid, host) of the process `role` recorded under `pids` (distributed.pidfile): the host whose
    namespace the kernel has its main thread in (the host's own, or its TF card's while it runs TF)."""
    from distributed import pidfile
    pid = pidfile.read(str(pids), role)["pid"]
    inode = os.stat(f"/proc/{pid}/ns/net").st_ino
    (host,) = [h for h in network.hosts if inode in (hosts.netns_inode(h.netns), hosts.netns_inode(h.tf_netns))]
    return pid, host


CUT_S = 35  # the ps finds a cut worker within (1 + KEEPALIVE_PROBES) heartbeats of 5 s: 20 s, and slack


@pytest.mark.timeout(900)
def test_redshift_goes_on_without_a_worker_whose_host_is_cut_off_and_the_summary_says_which_when_and_its_share(
        five_hosts, tmp_path):
    """The asynchronous redshift run (ps + 2 workers, s = 2, each on a host) with worker 1's host cut off
    the network for 35 s after its second epoch: the ps loses it by TCP keepalive while worker 0 goes on
    alone (s shrinks); once the link is back the same worker process connects again and rejoins from its
    checkpoint; the run ends ok, every epoch of both shares trained, and the summary names the worker,
    its host, that the host stopped answering, when, and that its share was trained after all."""
    from distributed import pidfile
    network, out, log_path = five_hosts.network, tmp_path / "cut", tmp_path / "cut.log"
    cell, epochs = "300-different-M2-staleness-aware-s2", 8
    sets = ["data.sizes=[300]", "experiments.baseline=false", "experiments.ablation=false",
            "experiments.data_modes=[different]", "experiments.workers=[2]", "train.s=2", "train.update=epoch",
            f"train.max_epochs={epochs}", "train.checkpoint_every=1", "train.tf_threads=1"]
    proc = start_job("redshift.py", "--preset", "tiny", "--master", five_hosts.state.master_url,
                     "--set", f"cluster.run_dir={five_hosts.run_dir}", *[a for kv in sets for a in ("--set", kv)],
                     "--output", str(out), log=log_path, env=user_env())
    folder = out / "checkpoints" / cell
    try:
        wait_for(folder / "worker-1.epoch-2.h5", proc, log_path, timeout_s=400)
        pid, host = host_of_role(network, folder / "pids", "worker:1")
        with network.cut_off(host.number):
            time.sleep(CUT_S)
        assert proc.wait(timeout=400) == 0, log_path.read_text()[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = summary(out)
    assert result["status"] == "ok"
    (fault,) = result["faults"][cell]
    assert fault["worker"] == "worker:1" and fault["address"] == host.address, fault
    assert fault["cause"].startswith("its host stopped answering"), fault
    assert fault["message"] == "worker 1 lost; s shrinks from 2 to 1" and fault["lost_at_s"] > 0, fault
    assert fault["epochs_completed"] >= 1 and fault["rejoined_at_epoch"] is not None, fault
    assert fault["samples_not_seen"] == "none: the share was retrained after the retry", fault
    # the same process rejoined (no task retried): it connected again once the link was back
    assert pidfile.read(str(folder / "pids"), "worker:1")["pid"] == pid
    with h5py.File(out / "redshift.h5", "r") as h5:
        for worker in ("worker_0", "worker_1"):
            assert len(h5[cell]["workers"][worker]["accuracy"][()]) == epochs
            assert h5[cell]["workers"][worker].attrs["samples"] == 150
    assert f"worker 1 lost; s shrinks from 2 to 1 ({host.address}: its host stopped answering" in log_path.read_text()


@pytest.mark.timeout(900)
def test_land_cover_fails_fast_naming_a_cut_off_host_and_the_units_it_held_and_resume_finishes(five_hosts, tmp_path):
    """Model-parallel land cover (one plan, 2 epochs) with the host of worker:1, the HSI branch's TF server,
    cut off after the first epoch's checkpoint: the chief's TF step would wait on it until TCP gives up
    (minutes), but its watch of the TF servers finds the host silent, and the run fails within a minute,
    naming the role, its host and the units it held, long before train.timeout_s. With the link back,
    --resume continues from the checkpoint and finishes."""
    network, out = five_hosts.network, tmp_path / "landcover"
    timeout_s, cell = 300, "240-default-b20-e2"
    args = ["--preset", "tiny", "--master", five_hosts.state.master_url, "--output", str(out),
            "--set", f"cluster.run_dir={five_hosts.run_dir}", "--set", "experiments.plans=[default]",
            "--set", "experiments.batch_sizes=[]", "--set", "experiments.data_parallel=false",
            "--set", "experiments.single_machine=false", "--set", "experiments.plan_window_s=0",
            "--set", "train.epochs=2", "--set", "train.checkpoint_every=1", "--set", f"train.timeout_s={timeout_s}",
            "--set", "train.tensorboard=false"]
    log = tmp_path / "cut.log"
    proc = start_job("landcover.py", *args, log=log, env=user_env())
    try:
        wait_for(out / "checkpoints" / cell / "chief.h5", proc, log, timeout_s=400)
        _, host = host_of_role(network, out / "checkpoints" / "pids", "worker:1")
        with network.cut_off(host.number):
            cut = time.monotonic()
            assert finish(proc, log, timeout_s=timeout_s) == 1, tail(log)
            failed_after_s = time.monotonic() - cut
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"the job failed {failed_after_s:.1f} s after worker:1's host was cut off")
    assert failed_after_s < 60, failed_after_s  # train.timeout_s (300 s) is the bound nothing noticed would hit
    error = summary(out)["error"]
    assert error.startswith(f"RoleLost: worker:1 (the TF server holding units hsi_* under plan default) was lost "
                            f"during cell {cell}: its host {host.address} stopped answering"), error
    assert error.endswith("continue with --resume"), error

    log = tmp_path / "resume.log"
    proc = start_job("landcover.py", *args, "--resume", log=log, env=user_env())
    assert finish(proc, log, timeout_s=400) == 0, tail(log)
    result = summary(out)
    assert result["status"] == "ok" and result["resumed"] is True, result.get("error")
    assert json.loads((out / "checkpoints" / cell / "result.json").read_text())["resumed_from_epoch"] >= 1
    assert len(result["cells"][cell]["loss"]) == 2


@pytest.mark.hdfs
@pytest.mark.timeout(1200)
def test_cli_up_hosts_hdfs_puts_each_datanode_on_its_host_and_down_removes_everything(tmp_path):
    """`up --hosts 2 --workers 3 --hdfs` from the command line: DataNode i on host i, the workers round robin
    (host 1 runs workers 1 and 3), the NameNode on the bridge; `status` says so, a file written from the
    bridge side reads back (also with either DataNode's host cut off), the NameNode knows the DataNodes by
    their hosts' addresses; `down` leaves no process, namespace, link or record."""
    needs_hosts()
    if not hdfs_possible():
        pytest.skip("Maven (mvn) is needed to fetch Hadoop's jars for the HDFS daemons")
    from distributed.hdfs_cluster import HdfsCluster
    cli, opts, env = minicluster_cli(tmp_path)
    up = subprocess.run([*cli, "up", "--hosts", "2", "--workers", "3", "--hdfs", *opts], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
    state = json.loads((tmp_path / "state.json").read_text()) if (tmp_path / "state.json").exists() else {}
    runs = {1: ["worker-1", "worker-3", "datanode-1"], 2: ["worker-2", "datanode-2"]}  # workers round robin
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        network = hosts.HostNetwork.from_dict(state["network"])
        for host in network.hosts:
            assert f"host {host.netns}: {host.address} ({', '.join(runs[host.number])}); " \
                   f"TF card {host.tf_address}" in up.stdout
        shown = json.loads(subprocess.run([*cli, "status", *opts], cwd=ROOT, env=env, capture_output=True,
                                          text=True, timeout=120).stdout)
        assert [(h["address"], h["runs"], h["tf_address"]) for h in shown["network"]["hosts"]] == \
            [(h.address, runs[h.number], h.tf_address) for h in network.hosts]
        assert shown["alive_workers"] == 3
        for worker, number in (("worker-1", 1), ("worker-2", 2), ("worker-3", 1)):  # each JVM in its host
            inode = os.stat(f"/proc/{state['pids'][worker]}/ns/net").st_ino
            assert inode == hosts.netns_inode(network.host(number).netns), worker
        assert shown["network"]["tf_subnet"] == network.tf_subnet != network.subnet
        for host in shown["network"]["hosts"]:  # each host's cgroup holds its worker's and DataNode's JVMs
            assert host["n_procs"] >= 2 and host["cpu_s"] > 1 and host["rss_bytes"] > 100e6, host
            assert host["bytes_in"] > 0 and host["bytes_out"] > 0, host  # registration crossed its link
        watched = subprocess.run([*cli, "watch", "--interval", "0.2", "--samples", "1", *opts], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert watched.returncode == 0, watched.stderr[-2000:]
        assert [line.split(",")[1] for line in watched.stdout.splitlines()[1:]] == [h.netns for h in network.hosts] * 2
        assert shown["hdfs"]["uri"].startswith(f"hdfs://{network.bridge_address}:")
        assert shown["hdfs"]["live_datanodes"] == 2
        assert shown["hdfs"]["hosts"] == {f"datanode-{h.number}": h.netns for h in network.hosts}

        hdfs = HdfsCluster(tmp_path / "hdfs")
        daemons = hdfs.load_state().pids
        for host in network.hosts:
            assert os.stat(f"/proc/{daemons[f'datanode-{host.number}']}/ns/net").st_ino == hosts.netns_inode(host.netns)
        assert os.stat(f"/proc/{daemons['namenode']}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
        live = json.loads(hdfs.jmx("NameNodeInfo")["LiveNodes"])
        assert sorted(n["xferaddr"].rsplit(":", 1)[0] for n in live.values()) == [h.address for h in network.hosts]
        uri = f"{hdfs.state.uri}/hosts-test/part-0"
        storage.write_bytes(uri, b"across the bridge")
        assert storage.read_bytes(uri) == b"across the bridge"
        # Either DataNode's host cut off: the file reads back from the other replica (replication 2). A read
        # that picks the silent replica first waits dfs.client.socket-timeout (storage.HDFS_OPTIONS) on it, once
        # or twice (measured, 10 reads: 0.00-0.28 s six times, 10.0 s three times, 20.0 s once).
        timeout_s = int(storage.HDFS_OPTIONS["dfs.client.socket-timeout"]) / 1000
        for host in network.hosts:
            with network.cut_off(host.number):
                began = time.monotonic()
                assert storage.read_bytes(uri) == b"across the bridge"
                waited_s = time.monotonic() - began
            print(f"read with {host.netns} cut off: {waited_s:.2f} s")
            assert waited_s < 2 * timeout_s + 5, waited_s
    finally:
        down = subprocess.run([*cli, "down", *opts], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]
    assert what_is_left(network.cid, state["run_id"]) == NOTHING
