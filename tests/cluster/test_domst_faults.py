"""Dom-ST under a real fault: the node's process killed mid-watershed fails the run fast with a message
naming the node and the watershed it was training, leaving no process behind; --resume keeps the
finished watershed (not trained again) and continues the interrupted one from its last epoch."""
import json
import time

import pytest

from .conftest import leftovers
from .faults import finish, kill_role, start_job, summary, tail, wait_for

TIMEOUT_S = 300  # train.timeout_s: the bound the job would fall back on if nothing noticed the lost node


# Its own limit, above the sum of its waits (each fails with its own message first): 2 runs.
@pytest.mark.timeout(400 + TIMEOUT_S + 400 + 2 * 30 + 60)
def test_a_node_lost_mid_watershed_fails_fast_and_resume_skips_finished_watersheds(minicluster, tmp_path):
    out = tmp_path / "domst"
    # One node trains W01 then W02 (one approach, 3 epochs): the kill lands in W02 with W01 done.
    args = ["--preset", "tiny", "--master", minicluster.state.master_url, "--output", str(out),
            "--set", f"cluster.run_dir={minicluster.run_dir}", "--set", "data.watersheds=2",
            "--set", "experiments.nodes=1", "--set", "experiments.modes=[ipd]",
            "--set", "experiments.approaches=[domst]", "--set", "experiments.ablation=[]",
            "--set", "train.epochs=3", "--set", "train.patience=3",
            "--set", "train.checkpoint_every=1", "--set", f"train.timeout_s={TIMEOUT_S}"]
    ckpt = out / "checkpoints" / "ipd"

    log = tmp_path / "run1.log"
    proc = start_job("domst.py", *args, log=log)
    wait_for(ckpt / "W02" / "domst.h5", proc, log, timeout_s=400)
    kill_role(ckpt / "pids", "worker:0")
    killed = time.monotonic()
    assert finish(proc, log, timeout_s=TIMEOUT_S) == 1, tail(log)
    lost_after_s = time.monotonic() - killed
    assert lost_after_s < TIMEOUT_S / 2  # well inside the fallback bound
    print(f"job ended {lost_after_s:.1f}s after worker:0 was killed")
    result = summary(out)
    assert result["status"] == "failed" and result["error"].startswith(
        "RoleLost: ipd: worker:0 (node 0, watersheds W01, W02) was lost while training watershed W02 (domst)"), \
        result["error"]
    finished = (ckpt / "W01" / "domst.json").stat().st_mtime_ns
    assert not (ckpt / "W02" / "domst.json").exists()
    assert leftovers(minicluster) == []

    log = tmp_path / "run2.log"
    proc = start_job("domst.py", *args, "--resume", log=log)
    assert finish(proc, log, timeout_s=400) == 0, tail(log)
    result = summary(out)
    assert result["status"] == "ok" and result["resumed"] is True and result["watersheds"] == 2
    assert (ckpt / "W01" / "domst.json").stat().st_mtime_ns == finished  # W01 was not trained again
    w02 = json.loads((ckpt / "W02" / "domst.json").read_text())
    assert w02["resumed_from_epoch"] >= 1 and len(w02["val_loss"]) == w02["epochs"] == 3
    assert leftovers(minicluster) == []
