"""The outputs of real tiny runs (conftest's tiny_outputs: one root holding redshift/, landcover/, domst/)
read back: against the declared schema, by the notebook executed headless, and into the HTML report."""
import base64
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from jobs import outputs_report
from jobs.output_schema import CASES, check
from rdd_io import storage

from .conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "inspect_outputs.ipynb"


def pngs(root: Path) -> list[Path]:
    return sorted(p for case in CASES for p in (root / case).glob("*.png"))


@pytest.mark.parametrize("case", CASES)
def test_each_case_study_writes_what_the_schema_declares(tiny_outputs, case):
    assert check(case, tiny_outputs / case) == []


def test_the_notebook_runs_headless_and_shows_every_table_and_figure(tiny_outputs, tiny_uri_root, monkeypatch,
                                                                      tmp_path):
    """On the runs' own root: on HDFS in CI (the notebook copies it to a local folder), the local copies compared."""
    monkeypatch.setenv("SCIDL_OUTPUTS", tiny_uri_root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # where the copy of an hdfs:// root goes
    nb = nbformat.read(NOTEBOOK, as_version=4)
    km = KernelManager(kernel_name="python3", ip="127.0.0.1")  # the kernel's ports on loopback only
    # A failing cell raises CellExecutionError naming the cell and its traceback.
    NotebookClient(nb, km=km, timeout=180, resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    expected = pngs(tiny_outputs)
    assert len(expected) >= 5 and len(images) == len(expected)
    assert {base64.b64encode(p.read_bytes()).decode() for p in expected} == {i.replace("\n", "") for i in images}
    text = "\n".join(str(o.get("data", {}).get("text/html", "")) + str(o.get("data", {}).get("text/markdown", ""))
                     for o in outputs)
    assert "absent" not in text
    if not storage.is_local(tiny_uri_root):
        assert f"Output root: `{tiny_uri_root}` (read from a local copy in `{tmp_path}/scidl-outputs/" in text, \
            text[:2000]
    for shown in ("600-different-M2-staleness-aware-s1", "worker:1", "scheme4", "chief:0", "W03", "Singlehead(+P)",
                  "difference", "spacetime-P4"):
        assert shown in text, shown


def test_the_report_embeds_every_figure(tiny_outputs, tiny_uri_root, tmp_path):
    """`make report` on the runs' own root: on HDFS in CI (read from there), the local copies compared."""
    target = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "jobs.outputs_report", tiny_uri_root, "--html", str(target)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = target.read_text(encoding="utf-8")
    assert f"Output root <code>{tiny_uri_root}" in page or storage.is_local(tiny_uri_root)
    assert page.count("data:image/png;base64,") == len(pngs(tiny_outputs))
    for png in pngs(tiny_outputs):
        assert base64.b64encode(png.read_bytes()).decode() in page, png
    assert "Absent" not in page and page.count("The folder matches docs/OUTPUTS.md.") == len(CASES)
    assert 'src="http' not in page and "<link" not in page  # self-contained


def test_the_report_lists_a_case_study_not_run_as_absent(tiny_outputs, tmp_path):
    partial = tmp_path / "outputs"
    for case in ("redshift", "domst"):  # the run's own files, not its bundles and inputs
        shutil.copytree(tiny_outputs / case, partial / case,
                        ignore=lambda folder, names: [n for n in names if (Path(folder) / n).is_dir()])
    page = outputs_report.build(partial)
    assert f"Absent: no outputs under {partial / 'landcover'}" in page
    assert page.count("data:image/png;base64,") == len(list((partial / "redshift").glob("*.png"))) + \
        len(list((partial / "domst").glob("*.png")))
    assert "Table 1 speedup, " in page and "Epochs to stable (crit. 1)" in page
    # the copies lack their folders (bundles/, weights/, watersheds/): the output check says so
    assert "missing weights/&lt;run&gt;.weights.h5" in page
