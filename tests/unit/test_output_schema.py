"""The output schema: docs/OUTPUTS.md is its current rendering, and the checker finds each kind of mismatch
(on small declared schemas and hand-made files; the real schemas are checked against real tiny runs in
tests/cluster/test_outputs.py)."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from jobs import output_schema as osch
from jobs.output_schema import Dataset, Group, Key, Output, When

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]

DECLARED = (
    Output("config.yaml", "yaml", "config", keys=(Key("case", "case"), Key("train", "train"))),
    Output("summary.json", "json", "summary", keys=(Key("status", "status"), Key("extra", "sometimes",
                                                                                  When("never required")))),
    Output("table_<N>.csv", "csv", "a table",
           keys=(Key("a", "a"), Key("b", "b", When("flag", lambda c: c["train"]["flag"])))),
    Output("curves.h5", "hdf5", "curves", keys=(Key("ids", "ids"),),
           groups=(Group("<run>", "a run", (Key("workers", "M"),)),),
           datasets=(Dataset("<run>/<worker>/accuracy", "float32", ("epochs",), "acc"),
                     Dataset("<run>/<worker>/loss", "float32", ("epochs",), "loss"))),
    Output("fig.png", "png", "a figure"),
    Output("ablation.csv", "csv", "only with the ablation", When("ablation", lambda c: c["train"]["ablation"]),
           keys=(Key("id", "id"),)),
    Output("bundles/<set>/part-<k>.h5", "hdf5", "records", records="rdd_io.redshift_bundle:BUNDLE"),
)


def write_complete(folder: Path, flag=True, ablation=False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"case": "t", "train": {"flag": flag, "ablation": ablation}}))
    (folder / "summary.json").write_text(json.dumps({"status": "ok"}))
    (folder / "table_600.csv").write_text("a,b\n1,2\n" if flag else "a\n1\n")
    with h5py.File(folder / "curves.h5", "w") as h5:
        h5.attrs["ids"] = "[]"
        for run in ("r1", "r2"):
            h5.create_group(run).attrs["workers"] = 2
            for worker in ("w0", "w1"):
                for metric in ("accuracy", "loss"):
                    h5.create_dataset(f"{run}/{worker}/{metric}", data=np.zeros(3, np.float32))
    (folder / "fig.png").write_bytes(osch.PNG_SIGNATURE + b"rest")
    from rdd_io.redshift_bundle import BUNDLE
    (folder / "bundles" / "600-all").mkdir(parents=True)
    BUNDLE.write_h5(str(folder / "bundles" / "600-all" / "part-00000.h5"),
                    {"spectra": np.zeros((2, 4), np.float32), "label": np.zeros(2, np.int32),
                     "index": np.arange(2, dtype=np.int64)})
    return folder


def check(folder):
    return osch.check_outputs(DECLARED, folder, "t")


def test_docs_outputs_md_is_the_current_rendering():
    text = (ROOT / "docs" / "OUTPUTS.md").read_text(encoding="utf-8")
    assert text == osch.render(), "docs/OUTPUTS.md is out of date: python -m jobs.output_schema > docs/OUTPUTS.md"


def test_every_case_is_rendered_with_its_files():
    text = osch.render()
    for case, outputs in osch.SCHEMA.items():
        assert f"## {osch.TITLES[case]}" in text
        assert all(f"`{o.path}`" in text for o in outputs)
    assert "| `<run>/updates/tau` | int32 | (updates,) |" in text


def test_a_complete_folder_has_no_problems(tmp_path):
    assert check(write_complete(tmp_path / "ok")) == []
    assert check(write_complete(tmp_path / "off", flag=False)) == []  # column b required only with the flag


def test_missing_and_undeclared_files_are_named(tmp_path):
    folder = write_complete(tmp_path / "f")
    (folder / "fig.png").unlink()
    (folder / ".table_600.csv.abc.tmp").write_text("x")
    problems = check(folder)
    assert any("missing fig.png" in p for p in problems), problems
    assert any(".table_600.csv.abc.tmp: not declared" in p for p in problems), problems


def test_a_file_required_by_the_config_is_missing(tmp_path):
    problems = check(write_complete(tmp_path / "f", ablation=True))
    assert problems == [f"{tmp_path / 'f'}: missing ablation.csv (only with the ablation)"]


def test_keys_and_columns(tmp_path):
    folder = write_complete(tmp_path / "f")
    (folder / "summary.json").write_text(json.dumps({"status": "failed", "error": "boom", "surprise": 1}))
    (folder / "table_600.csv").write_text("a,c\n1,2\n")
    problems = check(folder)
    assert any("status 'failed' (boom)" in p for p in problems), problems
    assert any("summary.json: key 'surprise' is not declared" in p for p in problems), problems
    assert any("table_600.csv: missing column 'b'" in p for p in problems), problems
    assert any("table_600.csv: column 'c' is not declared" in p for p in problems), problems
    (folder / "table_600.csv").write_text("a,b\n")
    assert any("header only" in p for p in check(folder))


def test_hdf5_dtype_rank_missing_and_undeclared(tmp_path):
    folder = write_complete(tmp_path / "f")
    with h5py.File(folder / "curves.h5", "a") as h5:
        del h5["r1/w0/accuracy"]
        h5.create_dataset("r1/w0/accuracy", data=np.zeros(3, np.float64))
        del h5["r1/w1/loss"]
        h5.create_dataset("r1/w1/loss", data=np.zeros((3, 2), np.float32))
        del h5["r2/w1/accuracy"]
        h5.create_dataset("r2/w1/grad", data=np.zeros(3, np.float32))
        del h5["r2"].attrs["workers"]
    problems = check(folder)
    name = folder / "curves.h5"
    assert f"{name}: dataset 'r1/w0/accuracy' has dtype float64, expected float32" in problems
    assert any(p.startswith(f"{name}: dataset 'r1/w1/loss' has rank 2") for p in problems), problems
    assert f"{name}: '/r2/w1/accuracy' is missing" in problems
    assert f"{name}: dataset 'r2/w1/grad' is not declared in jobs/output_schema.py" in problems
    assert f"{name}:/r2: missing attribute 'workers'" in problems


def test_records_png_and_unreadable_files(tmp_path):
    folder = write_complete(tmp_path / "f")
    with h5py.File(folder / "bundles" / "600-all" / "part-00000.h5", "a") as h5:
        del h5["label"]
    (folder / "fig.png").write_bytes(b"GIF89a")
    (folder / "curves.h5").write_bytes(b"not hdf5")
    problems = check(folder)
    assert any("part-00000.h5: missing dataset 'label'" in p for p in problems), problems
    assert any("fig.png: not a PNG file" in p for p in problems), problems
    assert any("curves.h5: not a readable HDF5 file" in p for p in problems), problems


def test_unknown_case_and_absent_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown case"):
        osch.check("nope", tmp_path)
    assert osch.check("redshift", tmp_path / "absent") == [f"{tmp_path / 'absent'}: no such folder"]
