"""Probe: a watershed id from the input that would lead a path out of --output (`../../ESCAPED`). The Dom-ST
job on the real mini-cluster must fail with an error naming the file and the record, and write nothing
outside its output folder."""
import json

from .conftest import failed_on_input, leftovers


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
    summary = failed_on_input(minicluster, "domst", out, str(tmp_path / "input"))
    assert summary["error"].startswith(f"SchemaError: {WATERSHEDS_FILE}: watershed record 1: id '../../ESCAPED' "
                                       f"is not a safe name"), summary["error"]
    after = sorted(p for p in tmp_path.rglob("*") if "run" not in p.relative_to(tmp_path).parts)
    assert after == before and not list(tmp_path.parent.rglob("ESCAPED*"))
    assert leftovers(minicluster) == []
