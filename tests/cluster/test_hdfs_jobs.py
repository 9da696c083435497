"""A case study with its input and --output on a real HDFS (NameNode + 2 DataNodes), at a tiny size: the
executors write the simulated input there and TFoS roles forked from fresh Python workers write the outputs."""
import json

import pytest

from rdd_io import storage

from .conftest import run_job

pytestmark = [pytest.mark.hdfs, pytest.mark.timeout(1200)]

REDSHIFT = ("data.sizes=[600]", "train.max_epochs=3", "experiments.workers=[2]",
            "experiments.data_modes=[different]", "experiments.ablation=false")


@pytest.fixture(scope="session")
def hdfs_root(hdfs) -> str:
    return f"{hdfs.state.uri}/outputs"


def _run_on_hdfs(cluster, root: str, case: str, sets, *extra: str, timeout: float = 600):
    args = [a for key_value in sets for a in ("--set", key_value)]
    proc = run_job(f"{case}.py", "--preset", "tiny", "--master", cluster.state.master_url,
                   "--set", f"cluster.run_dir={cluster.run_dir}", "--output", storage.join(root, case),
                   *args, *extra, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    return json.loads(storage.read_text(storage.join(root, case, "summary.json")))


@pytest.fixture(scope="session")
def hdfs_redshift(minicluster, hdfs_root):
    return _run_on_hdfs(minicluster, hdfs_root, "redshift", REDSHIFT)


def test_redshift_on_hdfs_finishes_in_a_private_output_folder(hdfs_root, hdfs_redshift):
    assert hdfs_redshift["status"] == "ok"
    fs, path = storage._remote(storage.join(hdfs_root, "redshift"))
    assert fs.client.get_file_info(path).permission & 0o077 == 0
