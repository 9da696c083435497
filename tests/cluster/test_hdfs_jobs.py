"""Every case study with its input and --output on a real HDFS (NameNode + 2 DataNodes), at a tiny size:
the session's tiny runs (conftest) write there, executors the simulated input, TFoS roles and the driver
the outputs. Here: each run's folder on HDFS is private and holds what was copied back for the other tests."""
import os

import pytest

from rdd_io import storage

pytestmark = pytest.mark.hdfs
CASES = ["redshift", "landcover", "domst", "spacetime"]


@pytest.mark.parametrize("case", CASES)
def test_each_case_study_ran_on_hdfs_into_a_private_output_folder(request, tiny_uri_root, case):
    local = request.getfixturevalue(f"tiny_{case}")
    uri = storage.join(tiny_uri_root, case)
    if os.environ.get("CI"):
        assert uri.startswith("hdfs://"), uri
    if storage.is_local(uri):
        pytest.skip("no HDFS in this session (Maven missing)")
    fs, path = storage._remote(uri)
    assert fs.client.get_file_info(path).permission & 0o077 == 0
    names = storage.list_tree(uri)
    assert "summary.json" in names and any(n.startswith("input/") or n.startswith("scene/") for n in names) \
        or case == "spacetime", names[:20]
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == names
