"""Probes: a run never writes or deletes through a symbolic link, never deletes what it did not make,
and never replaces a config.yaml without saying so. Each probe plants a real link or a real user file."""
import pytest

from conf import ConfigError
from jobs.output_guard import check_output
from jobs.runner import run_job
from rdd_io import storage

pytestmark = pytest.mark.unit


def test_remove_tree_refuses_a_symlinked_folder_and_leaves_its_target(tmp_path):
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoints").symlink_to(victim)
    with pytest.raises(storage.StorageError, match=f"{out / 'checkpoints'}.*symbolic link"):
        storage.remove_tree(str(out / "checkpoints"))
    assert (victim / "thesis.tex").read_text() == "years of work"


def test_write_bytes_refuses_a_symlinked_file_and_a_symlinked_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "summary.json").symlink_to(victim)
    with pytest.raises(storage.StorageError, match="summary.json.*symbolic link"):
        storage.write_text(str(tmp_path / "summary.json"), "{}")
    assert victim.read_text() == "keep"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "ckpt").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(storage.StorageError, match="ckpt/ps.h5.*symbolic link"):
        storage.write_bytes(str(tmp_path / "ckpt" / "ps.h5"), b"w")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_output_with_a_user_file_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "mine.txt").write_text("user data")
    with pytest.raises(ConfigError, match="not empty.*--overwrite"):
        check_output(storage.to_uri(tmp_path), "redshift", resume=False, overwrite=False)
    assert "--overwrite" in check_output(storage.to_uri(tmp_path), "redshift", resume=False, overwrite=True)


def test_output_of_another_case_study_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("case: domst\npreset: tiny\n")
    with pytest.raises(ConfigError, match="a domst run"):
        check_output(storage.to_uri(tmp_path), "redshift", resume=False, overwrite=False)


def test_earlier_run_of_the_same_case_is_replaced_out_loud(tmp_path):
    (tmp_path / "config.yaml").write_text("case: redshift\npreset: tiny\n")
    notice = check_output(storage.to_uri(tmp_path), "redshift", resume=False, overwrite=False)
    assert "earlier redshift run" in notice and "config.yaml" in notice
    assert check_output(storage.to_uri(tmp_path), "redshift", resume=True, overwrite=False) is None
    assert check_output(storage.to_uri(tmp_path / "new"), "redshift", resume=False, overwrite=False) is None


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_symlink_under_output_is_refused_even_with_overwrite(tmp_path, overwrite):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.yaml").write_text("case: redshift\n")
    (tmp_path / "out" / "deep").mkdir()
    (tmp_path / "out" / "deep" / "link").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="deep/link is a symbolic link"):
        check_output(storage.to_uri(tmp_path / "out"), "redshift", resume=False, overwrite=overwrite)
    (tmp_path / "linked-out").symlink_to(tmp_path / "out")
    with pytest.raises(ConfigError, match="linked-out is a symbolic link"):
        check_output(storage.to_uri(tmp_path / "linked-out"), "redshift", resume=False, overwrite=overwrite)


def test_job_refuses_a_user_folder_before_starting_anything(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("my own notes, not a run\n")
    from jobs.redshift_config import RedshiftConfig
    code = run_job("redshift", RedshiftConfig, lambda job: pytest.fail("the job must not start"),
                   ["--preset", "tiny", "--output", str(tmp_path), "--master", "spark://127.0.0.1:9"])
    assert code == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "config.yaml").read_text() == "my own notes, not a run\n"  # not overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_unreachable_hdfs_output_fails_before_anything_starts(capsys):
    """HDFS not reachable at start: a clear error naming the URI, before a cluster or executor starts."""
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        uri = f"hdfs://127.0.0.1:{s.getsockname()[1]}/outputs/redshift"
    from jobs.redshift_config import RedshiftConfig
    code = run_job("redshift", RedshiftConfig, lambda job: pytest.fail("the job must not start"),
                   ["--preset", "tiny", "--output", uri])  # no --master: it would start the embedded cluster
    assert code == 2
    err = capsys.readouterr().err
    assert f"error: {uri}: listing failed" in err and "Connection refused" in err


def test_a_run_that_failed_before_its_config_was_written_counts_as_an_earlier_run(tmp_path):
    (tmp_path / "summary.json").write_text('{"case": "redshift", "status": "failed", "error": "no Java"}')
    assert "earlier redshift run" in check_output(storage.to_uri(tmp_path), "redshift", resume=False, overwrite=False)
    with pytest.raises(ConfigError, match="a redshift run"):
        check_output(storage.to_uri(tmp_path), "domst", resume=False, overwrite=False)
