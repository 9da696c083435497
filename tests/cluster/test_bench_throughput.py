"""bench/redshift_throughput.py end to end on the mini-cluster, at its smallest: both sides measured, and
the ratio it prints is the one its measurements give."""
import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT, leftovers


def test_redshift_throughput_measures_both_sides_and_prints_their_ratio(minicluster, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "redshift_throughput.py"), "--epochs", "2",
                           "--skip", "1", "--master", minicluster.state.master_url, "--keep", str(tmp_path),
                           "--set", f"cluster.run_dir={minicluster.run_dir}", "--set", "data.sizes=[200]",
                           "--timeout", "400"],
                          cwd=ROOT, capture_output=True, text=True, timeout=500,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    last = re.fullmatch(r"RATIO redshift_worker_vs_in_process_samples_per_s = ([0-9.]+)", out.strip().splitlines()[-1])
    sides = {side: float(rate) for side, rate in
             re.findall(r"^(distributed|in-process): +([0-9.]+) samples/s \(1 epochs in [0-9.]+ s\)$", out, re.M)}
    assert last and set(sides) == {"distributed", "in-process"}, out
    assert all(rate > 0 for rate in sides.values())
    # the printed rates are rounded to 0.1 samples/s
    assert float(last.group(1)) == pytest.approx(sides["distributed"] / sides["in-process"], rel=1e-2), out
    assert re.search(r"^distributed \(\S+\): 200 samples per epoch", out, re.M), out  # the worker read all 200
    assert leftovers(minicluster) == []
