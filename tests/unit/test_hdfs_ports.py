"""HdfsCluster.up starts again on new ports when a daemon finds its port taken, and only then."""
import pytest

from distributed.hdfs_cluster import HdfsCluster, HdfsError

pytestmark = pytest.mark.unit

TAKEN = "HDFS datanode-1 exited during start-up\njava.net.BindException: Address already in use"


def _cluster(tmp_path, monkeypatch, errors):
    cluster = HdfsCluster(tmp_path / "hdfs")
    calls = []

    def once(run_id):
        calls.append(run_id)
        if errors:
            raise HdfsError(errors.pop(0))
        return "state"
    monkeypatch.setattr(cluster, "_up_once", once)
    return cluster, calls


def test_a_port_taken_before_a_daemon_binds_it_is_retried(tmp_path, monkeypatch):
    cluster, calls = _cluster(tmp_path, monkeypatch, [TAKEN, TAKEN])
    assert cluster.up("r") == "state" and calls == ["r", "r", "r"]


def test_retries_are_bounded_and_other_errors_are_not_retried(tmp_path, monkeypatch):
    cluster, calls = _cluster(tmp_path, monkeypatch, [TAKEN, TAKEN, TAKEN])
    with pytest.raises(HdfsError, match="Address already in use"):
        cluster.up("r")
    assert len(calls) == 3
    cluster, calls = _cluster(tmp_path, monkeypatch, ["HDFS namenode exited during start-up\nOutOfMemoryError"])
    with pytest.raises(HdfsError, match="OutOfMemoryError"):
        cluster.up("r")
    assert len(calls) == 1
