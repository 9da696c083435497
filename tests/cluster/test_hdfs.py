"""The HDFS daemons and the storage layer on them: real NameNode and DataNodes on their own addresses,
replication 2, permissions on, stopped by pid; every storage call against the real protocol."""
import json
import os
import subprocess
import sys

import psutil
import pytest

from rdd_io import storage

from .conftest import ROOT, minicluster_cli
from .conftest import listening as sockets_listening

pytestmark = pytest.mark.hdfs


def test_namenode_and_two_datanodes_are_separate_jvms_on_their_own_addresses(hdfs):
    """Loopback, or beside the session's cluster on hosts: the NameNode on the bridge's address, DataNode i
    on host i's (and its web server's internal port on its host's own loopback, which nothing outside
    the host reaches); nothing binds every interface."""
    pids = hdfs.state.pids
    assert sorted(pids) == ["datanode-1", "datanode-2", "namenode"]
    assert len(set(pids.values())) == 3
    for pid in pids.values():
        assert os.path.basename(psutil.Process(pid).exe()) == "java"
    own = {"namenode": {hdfs.host}, **{f"datanode-{i}": {address, "127.0.0.1"} for i, (address, _) in
                                       enumerate(hdfs.datanode_hosts or [(hdfs.host, None)] * 2, 1)}}
    listening = [(name, ip, port) for name, pid in pids.items() for ip, port in sockets_listening(pid)]
    assert len(listening) >= 2 + 3 * 2, listening  # NameNode rpc + http, each DataNode data + ipc + http
    assert all(ip in own[name] for name, ip, _ in listening), listening
    status = hdfs.status()
    assert status["running"] and status["live_datanodes"] == 2
    assert status["uri"].startswith(f"hdfs://{hdfs.host}:")


def test_storage_round_trip_on_hdfs(hdfs):
    root = f"{hdfs.state.uri}/storage-test"
    storage.write_bytes(storage.join(root, "a", "part-00001.h5"), b"\x00one")
    storage.write_text(storage.join(root, "a", "part-00000.h5"), "zero")
    storage.write_text(storage.join(root, "a", "notes.txt"), "n")
    storage.write_bytes(storage.join(root, "a", "part-00001.h5"), b"\x00ONE!")  # replaced atomically
    assert storage.read_bytes(storage.join(root, "a", "part-00001.h5")) == b"\x00ONE!"
    assert storage.read_range(storage.join(root, "a", "part-00001.h5"), 1, 3) == b"ONE"
    assert storage.list_names(storage.join(root, "a")) == ["notes.txt", "part-00000.h5", "part-00001.h5"]
    assert storage._names(storage.join(root, "a")) == storage.list_names(storage.join(root, "a"))  # no temporaries
    assert storage.glob(storage.join(root, "a"), "part-*.h5") == [storage.join(root, "a", "part-00000.h5"),
                                                                  storage.join(root, "a", "part-00001.h5")]
    assert [d for _, d in storage.read_parts(storage.join(root, "a"), "part-")] == [b"zero", b"\x00ONE!"]
    assert storage.exists(storage.join(root, "a", "notes.txt"))
    fs, path = storage._remote(storage.join(root, "a", "notes.txt"))
    assert fs.client.get_file_info(path).replication == 2
    with pytest.raises(FileNotFoundError, match=f"{root}/missing.json"):
        storage.read_text(storage.join(root, "missing.json"))
    assert storage.list_names(storage.join(root, "nothing-here")) == []
    storage.remove_tree(root)
    assert not storage.exists(root)


def test_private_output_folder_is_closed_to_another_hdfs_user(hdfs, monkeypatch):
    """Simple authentication: the client's claimed user name (HADOOP_USER_NAME) is who HDFS checks."""
    root = f"{hdfs.state.uri}/private-run"
    storage.makedirs(root, private=True)
    storage.write_text(storage.join(root, "summary.json"), "{}")
    fs, path = storage._remote(root)
    assert fs.client.get_file_info(path).permission == 0o700
    probe = ("import sys\nfrom rdd_io import storage\n"
             "for call in (lambda: storage.read_text(sys.argv[1] + '/summary.json'), "
             "lambda: storage.list_names(sys.argv[1]),"
             " lambda: storage.remove_tree(sys.argv[1]), lambda: storage.write_text(sys.argv[1] + '/x', 'x')):\n"
             "    try:\n        call(); print('ALLOWED')\n"
             "    except PermissionError as exc:\n        print('REFUSED', exc)\n")
    env = dict(os.environ, HADOOP_USER_NAME="mallory", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", probe, root], env=env, capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("REFUSED") for line in lines), out.stdout + out.stderr
    assert all(root in line for line in lines)
    assert "mallory" in lines[0]
    assert storage.read_text(storage.join(root, "summary.json")) == "{}"  # nothing was removed


def test_namenode_from_hadoop_conf_dir_for_hdfs_uris_without_a_host(hdfs):
    """hdfs:///path: the NameNode comes from fs.defaultFS in $HADOOP_CONF_DIR/core-site.xml."""
    probe = ("import sys\nfrom rdd_io import storage\n"
             "storage.write_text('hdfs:///defaultfs/probe.txt', 'via core-site.xml')\n"
             "print(storage.read_text('hdfs:///defaultfs/probe.txt'))\n")
    env = dict(os.environ, HADOOP_CONF_DIR=hdfs.state.conf_dir, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "via core-site.xml", out.stderr[-2000:]
    assert storage.read_text(f"{hdfs.state.uri}/defaultfs/probe.txt") == "via core-site.xml"


@pytest.mark.timeout(1200)
def test_minicluster_cli_up_hdfs_status_down(tmp_path):
    """`python -m distributed.minicluster up --hdfs`: Spark and HDFS up, `status` prints the hdfs:// URI and
    the web UI, `down` stops exactly those pids and leaves no process of the run."""
    cli, opts, env = minicluster_cli(tmp_path)
    up = subprocess.run([*cli, "up", "--workers", "1", "--hdfs", *opts], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "HDFS up: hdfs://127.0.0.1:" in up.stdout
        status = json.loads(subprocess.run([*cli, "status", *opts], cwd=ROOT, env=env, capture_output=True,
                                           text=True, timeout=120).stdout)
        assert status["hdfs"]["uri"].startswith("hdfs://127.0.0.1:") and status["hdfs"]["live_datanodes"] == 2
        assert status["hdfs"]["web_ui"].startswith("http://127.0.0.1:")
        pids = {**json.loads((tmp_path / "state.json").read_text())["pids"],
                **json.loads((tmp_path / "hdfs" / "state.json").read_text())["pids"]}
        run_id = json.loads((tmp_path / "state.json").read_text())["run_id"]
    finally:
        down = subprocess.run([*cli, "down", *opts], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]
    assert set(map(int, down.stdout.split(":", 1)[1].split())) >= set(pids.values())
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids.values())
    from distributed import processes
    assert processes.tagged(run_id) == []


FORK_AFTER_USE = """
import subprocess, sys
from rdd_io import storage
storage.exists(storage.join(sys.argv[1], "x"))
subprocess.run(["true"], preexec_fn=lambda: None, check=True)  # how pyspark starts its JVM: Python runs after fork
print("forked and exec'd")
"""


def test_a_process_that_used_hdfs_can_still_fork_and_exec(hdfs):
    """fsspec empties its instance cache in a forked child; freeing the HDFS client there used to hang forever."""
    proc = subprocess.run([sys.executable, "-c", FORK_AFTER_USE, hdfs.state.uri], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "forked and exec'd" in proc.stdout, proc.stderr[-2000:]
