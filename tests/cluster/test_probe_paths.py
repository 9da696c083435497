"""Probe: a watershed id from the input that would lead a path out of --output (`../../ESCAPED`). The Dom-ST
job on the real mini-cluster must fail with an error naming the file and the record, and write nothing
outside its output folder."""
import json

from .conftest import leftovers, run_job


def test_domst_watershed_id_that_escapes_the_output_is_refused(minicluster, tmp_path):
    from rdd_io.domst_sim import WATERSHEDS_FILE, simulate_region, write_region
    region = simulate_region(seed=1, years=1, n_watersheds=2)
    write_region(str(tmp_path / "input"), region)
    meta_path = tmp_path / "input" / WATERSHEDS_FILE
    meta = json.loads(meta_path.read_text())
    meta["watersheds"][1]["id"] = "../../ESCAPED"
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "run" / "domst"
    before = sorted(p for p in tmp_path.rglob("*") if "run" not in p.relative_to(tmp_path).parts)
    proc = run_job("domst.py", "--preset", "tiny", "--master", minicluster.state.master_url,
                   "--set", f"cluster.run_dir={minicluster.run_dir}", "--output", str(out),
                   "--set", "data.source=files", "--set", f"data.input={tmp_path / 'input'}")
    assert proc.returncode == 1, proc.stdout[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith(f"SchemaError: {WATERSHEDS_FILE}: watershed record 1: id '../../ESCAPED' "
                                       f"is not a safe name"), summary["error"]
    after = sorted(p for p in tmp_path.rglob("*") if "run" not in p.relative_to(tmp_path).parts)
    assert after == before and not list(tmp_path.parent.rglob("ESCAPED*"))
    assert leftovers(minicluster) == []
