"""The HTML report's pieces on hand-made inputs (the whole report is built from real tiny runs in
tests/cluster/test_outputs.py), and the notebook as stored."""
import base64
import json
from pathlib import Path

import nbformat
import pytest

from jobs import outputs_report as rep
from jobs import outputs_view as ov
from jobs.output_schema import CASES

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PNG = bytes.fromhex("89504e470d0a1a0a") + b"not a real image, only its bytes are embedded"


def test_difference_is_stated_in_words():
    assert rep.difference(12, 10, " epochs") == "+2 epochs (1.20x the published value)"
    assert rep.difference(3.0, 5.0, "x", at_least=True) == "-2x (0.60x the published value); bound not reached"
    assert rep.difference(50.0, 45.0, " points", at_most=True).endswith("; above the bound")
    assert rep.difference(None, 10) == "not measured in this run"
    assert rep.difference(1, None) == "no published number"


def test_markdown_with_tables_lists_and_embedded_figures(tmp_path):
    (tmp_path / "fig.png").write_bytes(PNG)
    text = ("# Title\n\nSome `code` text\ncontinued.\n\n| a | b |\n|---|---|\n| 1 | <2> |\n\n- one\n- two\n\n"
            "![a figure](fig.png)\n![gone](missing.png)\n")
    embedded = set()
    page = rep.markdown_html(text, tmp_path, embedded)
    assert "<h3>Title</h3>" in page and "<p>Some <code>code</code> text continued.</p>" in page
    assert "<th>a</th><th>b</th>" in page and "<td>&lt;2&gt;</td>" in page and "---" not in page
    assert "<ul><li>one</li><li>two</li></ul>" in page
    assert base64.b64encode(PNG).decode() in page and embedded == {"fig.png"}
    assert "figure missing.png is missing" in page


def test_an_empty_root_lists_every_case_study_as_absent(tmp_path):
    page = rep.build(tmp_path)
    assert page.count("Absent: no outputs under") == len(CASES) and "data:image/png" not in page


def test_a_failed_run_shows_its_error_and_figures_outside_report_md(tmp_path):
    folder = tmp_path / "domst"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"case": "domst", "status": "failed", "error": "bad input x.nc"}))
    (folder / "extra.png").write_bytes(PNG)
    page = rep.build(tmp_path)
    assert "The run failed: bad input x.nc" in page
    assert base64.b64encode(PNG).decode() in page  # every PNG of the folder, even without a report.md
    assert page.count("Absent: no outputs under") == len(CASES) - 1


def test_csv_values_keep_identifiers(tmp_path):
    (tmp_path / "t.csv").write_text("site_no,n,x,empty\n05412000,3,0.5,\n")
    assert ov.read_csv(tmp_path / "t.csv") == [{"site_no": "05412000", "n": 3, "x": 0.5, "empty": None}]


def test_the_notebook_is_stored_without_outputs():
    nb = nbformat.read(ROOT / "notebooks" / "inspect_outputs.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_main_writes_the_report_into_a_local_root_and_leaves_no_copy(tmp_path, monkeypatch, capsys):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    root = tmp_path / "outputs"
    root.mkdir()
    assert rep.main([str(root)]) == 0
    page = (root / "report.html").read_text(encoding="utf-8")
    assert f"Output root <code>{root}</code>" in page and "absent" in capsys.readouterr().out
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary folder for a remote root's copy is gone


def test_the_report_and_a_folder_made_for_it_are_readable_only_by_their_owner(tmp_path):
    import os
    import stat
    old = os.umask(0o022)  # a common default: without care, files 0644 and folders 0755
    try:
        assert rep.main([str(tmp_path / "outputs"), "--html", str(tmp_path / "new" / "report.html")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "report.html").stat().st_mode) == 0o600


def test_a_remote_root_is_copied_to_one_owner_only_folder_per_root_replaced_each_time(tmp_path, monkeypatch):
    import shutil
    import stat

    from jobs import outputs_view as ov
    from rdd_io import storage
    remote = tmp_path / "remote"  # stands in for hdfs://: storage's remote branch copies it
    (remote / "redshift").mkdir(parents=True)
    (remote / "redshift" / "summary.json").write_text("{}")
    (remote / "redshift" / "old.csv").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(storage, "is_local", lambda uri: not uri.startswith("hdfs://"))
    monkeypatch.setattr(storage, "download_tree", lambda uri, to: shutil.copytree(
        remote / uri.rsplit("/", 1)[1], to) if (remote / uri.rsplit("/", 1)[1]).exists() else None)
    first = ov.local_root("hdfs://nn:9000/outputs")
    assert (first / "redshift" / "old.csv").exists()
    (remote / "redshift" / "old.csv").unlink()
    second = ov.local_root("hdfs://nn:9000/outputs")
    assert second == first and not (second / "redshift" / "old.csv").exists()
    assert (second / "redshift" / "summary.json").exists()
    assert [p.name for p in (tmp_path / "cache" / "scidl-outputs").iterdir()] == [first.name]  # one copy
    assert stat.S_IMODE((tmp_path / "cache" / "scidl-outputs").stat().st_mode) == 0o700
    assert ov.local_root("hdfs://nn:9000/other") != first
