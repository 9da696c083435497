"""The executors' packed Python environment (distributed/env_archive.py): the Spark setting that ships it,
the errors for an archive that cannot work (before Spark starts), and the archive itself."""
import os
import re
import stat
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from conf import ConfigError, load_cluster
from distributed import env_archive
from jobs.runner import spark_settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_a_local_archive_is_shipped_by_its_absolute_uri_under_the_alias(tmp_path, monkeypatch):
    (tmp_path / "env.tar.gz").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert env_archive.spark_conf("env.tar.gz") == {"spark.archives": f"file://{tmp_path}/env.tar.gz#environment"}
    assert env_archive.EXECUTOR_PYTHON == "./environment/bin/python"
    # a URI every node reads is passed on as it is (its existence is the cluster's to check)
    assert env_archive.spark_conf("hdfs://nn:9000/envs/e.tgz") == {"spark.archives": "hdfs://nn:9000/envs/e.tgz#environment"}


@pytest.mark.parametrize("archive, said", [
    ("missing.tar.gz", "does not exist; build it with `make env-archive`"),
    ("env.whl", "is not an archive Spark unpacks (.tar.gz, .tgz, .tar, .zip)"),
])
def test_an_archive_that_cannot_work_is_a_config_error_naming_it(tmp_path, monkeypatch, archive, said):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "env.whl").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"cluster\.python_archive: .*" + re.escape(said)):
        env_archive.spark_conf(archive)


def test_the_job_settings_ship_the_archive_only_when_one_is_configured(tmp_path):
    (tmp_path / "e.tar").write_bytes(b"x")
    cluster = load_cluster()
    assert cluster.python_archive == ""  # conf/cluster.yaml's default: the driver's interpreter
    assert "spark.archives" not in spark_settings(SimpleNamespace(cluster=cluster), 3, None, False)
    shipped = spark_settings(SimpleNamespace(cluster=replace(cluster, python_archive=str(tmp_path / "e.tar"))),
                             3, None, False)
    assert shipped["spark.archives"] == f"file://{tmp_path}/e.tar#environment"


def test_a_job_with_a_missing_archive_exits_2_before_anything_starts(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "smoke.py"), "--master", "spark://127.0.0.1:1",
                           "--output", str(out), "--set", f"cluster.python_archive={tmp_path}/none.tar.gz"],
                          cwd=ROOT, text=True, capture_output=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: cluster.python_archive: {tmp_path}/none.tar.gz does not "
                                                    "exist; build it with `make env-archive`")
    assert not out.exists()


def test_build_packs_a_venv_of_the_base_interpreter_owner_only_and_leaves_nothing_half_written(tmp_path):
    out = env_archive.build(tmp_path / "dist" / "env.tar.gz", [], work_dir=tmp_path)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert {"pyvenv.cfg", "bin/python", f"bin/{version}"} <= set(members)
    # The interpreter is a link to the base one, which every node must have: not into the driver's venv.
    assert members[f"bin/{version}"].linkname == env_archive.base_python()
    assert not env_archive.base_python().startswith(sys.prefix + "/") or sys.prefix == sys.base_prefix
    assert sorted(p.name for p in out.parent.iterdir()) == ["env.tar.gz"]
    # A failed install leaves neither the archive nor a partial one, and no temporary venv.
    with pytest.raises(subprocess.CalledProcessError):
        env_archive.build(tmp_path / "dist" / "bad.tar.gz", [["--no-index", "no-such-package-xyz"]], work_dir=tmp_path)
    assert sorted(p.name for p in out.parent.iterdir()) == ["env.tar.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]
