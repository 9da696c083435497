import os

import pytest

from distributed import pidfile

pytestmark = pytest.mark.unit


def test_a_role_records_its_process_and_it_is_read_back(tmp_path):
    uri = pidfile.write(str(tmp_path / "pids"), "worker:1")
    assert uri.endswith("worker-1.pid") and ":" not in uri.rsplit("/", 1)[-1]
    record = pidfile.read(str(tmp_path / "pids"), "worker:1")
    assert record["pid"] == os.getpid() and record["role"] == "worker:1"


def test_a_missing_record_names_the_file_and_a_bad_role_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="chief-0.pid"):
        pidfile.read(str(tmp_path), "chief:0")
    with pytest.raises(ValueError, match="worker:1"):
        pidfile.file_name("worker1")
