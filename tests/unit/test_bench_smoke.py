"""The benches run end to end on tiny sizes and end with a parseable ratio that their printed measurements give."""
import os
import re
import subprocess
import sys
from math import prod
from pathlib import Path

import pytest

from bench import ps_load
from jobs.redshift_config import config_model
from models.redshift import count_params

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
RATIO = re.compile(r"^RATIO (\w+) = ([-+0-9.eE]+|nan|inf)$")


def run_bench(script: str, *args: str) -> tuple[str, float, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # a hang guard, not a bound
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    match = RATIO.match(last)
    assert match, f"last line is not 'RATIO name = value': {last!r}"
    return match.group(1), float(match.group(2)), proc.stdout


@pytest.mark.parametrize("bands,classes", [(1800, 800), (450, 40), (30, 3)])
def test_thesis_shapes_match_the_model_parameter_count(bands, classes):
    shapes = ps_load.thesis_shapes(bands, classes)
    assert sum(prod(s) for s in shapes) == count_params(config_model(bands, classes))
    assert ps_load.model_bytes(shapes) == 4 * sum(prod(s) for s in shapes)


def test_classes_for_params_inverts_the_parameter_count():
    for classes in (1, 7, 800):
        params = count_params(config_model(1800, classes))
        assert ps_load.classes_for_params(params, 1800) == classes


def test_ps_updates_prints_a_positive_ratio():
    seconds = 0.5
    name, value, out = run_bench("ps_updates.py", "--clients", "2", "--seconds", str(seconds), "--bands", "100",
                                 "--classes", "4")
    assert name == "ps_vs_loopback_updates_per_s"
    # Both sides measured in this run: the ratio is the printed server rate over the printed copy rate. A
    # side's rate sums its clients' rates over the steps each completed within the window (its last step
    # ends after it), so it lies between those steps over the window and all steps over the window; the
    # server applied every update the clients counted.
    window = (r"(\d+) {unit}, longest window ([0-9.]+) s: ([0-9.]+) {unit}/s "
              r"\(all steps / longest window ([0-9.]+)\), \d+ MiB/s, per \w+ \[([0-9, ]+)\]")
    plain = re.search(r"^plain loopback copy: 1 message\(s\) per step, " + window.format(unit="steps") + "$",
                      out, re.M)
    ps = re.search(r"^parameter server: +" + window.format(unit="updates") + r"; server applied (\d+)$", out, re.M)
    assert plain and ps, out
    for side in (plain, ps):
        count, longest, rate, over_longest = (int(side.group(1)), float(side.group(2)), float(side.group(3)),
                                              float(side.group(4)))
        assert count > 0 and sum(int(c) for c in side.group(5).split(",")) == count, out
        assert over_longest == pytest.approx(count / longest, rel=0.01), out  # the window is printed rounded
        assert rate >= (count - 2) / seconds * 0.999, out
    assert int(ps.group(6)) == int(ps.group(1)) + 2  # the window's updates and one warm-up push per client
    assert value == pytest.approx(float(ps.group(3)) / float(plain.group(3)), rel=0.01)
    assert "warning" not in out


def test_a_windows_rate_sums_each_clients_steps_within_it_over_when_the_last_of_them_ended():
    # A 1 s window. Client A steps every 0.25 s: steps end at 0.25, 0.5, 0.75 and, started at 0.75, at 1.0
    # (after the window: 4 steps, the last within at 0.75). Client B every 0.4 s: ends at 0.4, 0.8, 1.2.
    a, b = (4, 0.75), (3, 0.8)
    assert ps_load.clients_rate([a, b]) == pytest.approx(4.0 + 2.5)  # each client's own rate, exactly
    # (steps - 1) over the window would say 3 + 2 = 5, all steps over it 4 + 3 = 7
    assert ps_load.clients_rate([(1, 0.0)]) == 0  # no step ended within the window: nothing to count


def test_ps_memory_prints_a_positive_ratio():
    name, value, out = run_bench("ps_memory.py", "--clients", "2", "--seconds", "0.5", "--bands", "1800",
                                 "--classes", "40")
    assert name == "ps_peak_rss_over_analytic_model_bytes"
    assert value > 0
    # The server holds at least one copy of the weights: its RSS grows by about the model's bytes or more.
    net = float(re.search(r"^net of the interpreter: .* = ([0-9.]+)$", out, re.M).group(1))
    assert net >= 0.9, out
    peak = float(re.search(r"^peak RSS under load: +([0-9.]+) MiB", out, re.M).group(1))
    model = float(re.search(r"^model: +([0-9.]+) MiB$", out, re.M).group(1))
    assert value == pytest.approx(peak / model, rel=0.02)  # the printed MiB are rounded
    both = float(re.search(r"^measured both sides: peak RSS under load / RSS once the server holds weights = "
                           r"([0-9.]+)$", out, re.M).group(1))
    assert both >= 1.0, out  # a peak is at least the level it started from


def test_redshift_target_verdict_and_ratio_read_the_same_epoch():
    from bench.redshift_target import TARGET, verdict
    assert TARGET == 0.75  # the thesis's figure
    assert verdict([0.5, 0.8, 0.7]) == (0.7, False)  # past 0.75 at epoch 2 only: MISSED, and the ratio < 1
    assert verdict([0.5, 0.6, 0.76, 0.9]) == (0.76, True)  # epoch 3, not the best or the last epoch
    assert verdict([0.5, 0.6]) == (0.6, None)  # too few epochs: no verdict


def test_redshift_target_prints_the_epoch_3_accuracy_over_the_published_target():
    name, value, out = run_bench("redshift_target.py", "--n", "200", "--epochs", "3", "--preset", "tiny")
    assert name == "accuracy_epoch3_over_published_target"
    accuracy = {int(e): float(a) for e, a in re.findall(r"^epoch (\d+): accuracy ([0-9.]+)", out, re.M)}
    assert sorted(accuracy) == [1, 2, 3], out
    assert value == pytest.approx(accuracy[3] / 0.75, abs=1e-3), out  # the printed epoch-3 value, not the best
    verdict = "MET" if accuracy[3] >= 0.75 else "MISSED"
    assert f"at epoch 3: {verdict} ({accuracy[3]:.4f}" in out, out


def test_ps_scaling_prints_the_rate_at_each_client_count_and_their_ratio():
    name, value, out = run_bench("ps_scaling.py", "--clients", "1,3", "--seconds", "0.5", "--rounds", "3",
                                 "--bands", "100", "--classes", "4")
    assert name == "ps_updates_per_s_3_vs_1_clients"
    rounds = {n: [float(m) for m in re.findall(rf"^round \d, +{n} client\(s\): \d+ updates, longest window "
                                                rf"[0-9.]+ s: ([0-9.]+) updates/s", out, re.M)] for n in (1, 3)}
    medians = {n: float(re.search(rf"^ +{n} client\(s\): median ([0-9.]+) updates/s over 3 round", out, re.M)
                        .group(1)) for n in (1, 3)}
    for n in (1, 3):  # the median of the rounds' printed rates, which are rounded
        assert len(rounds[n]) == 3 and all(r > 0 for r in rounds[n]), out
        assert medians[n] == pytest.approx(sorted(rounds[n])[1], abs=0.02), out
    assert value == pytest.approx(medians[3] / medians[1], rel=1e-3)
    assert "warning" not in out  # at each count the server applied exactly the updates the clients counted


def test_landcover_learning_scores_both_sides_on_the_same_held_out_patches():
    name, value, out = run_bench("landcover_learning.py", "--quick")
    assert name == "landcover_cnn_over_nearest_signature_held_out_accuracy"
    n = int(re.search(r"training patches, (\d+) held-out patches", out).group(1))
    baseline = float(re.search(r"^nearest-signature baseline, held-out accuracy: ([0-9.]+)", out, re.M).group(1))
    cnn = float(re.search(r"held-out accuracy ([0-9.]+), held-out loss", out).group(1))
    for accuracy in (baseline, cnn):  # each a count of those n patches over n, printed to 3 decimals
        assert abs(accuracy * n - round(accuracy * n)) <= n * 0.0005 + 1e-9, (accuracy, n, out)
    assert value == pytest.approx(round(cnn * n) / round(baseline * n), rel=1e-3), out  # the two counts' ratio
    assert ("MET" if baseline <= 0.5 and value >= 1.5 else "NOT MET") in out.splitlines()[-2], out


def test_redshift_scaling_sums_each_workers_rate_after_its_warm_up_and_runs_one_cell_per_count():
    from bench.redshift_scaling import aggregate_rate, parse_args
    # worker 0: epochs 2-3 of 100 samples in 2 s; worker 1: in 4 s (it started later, ran slower)
    assert aggregate_rate([100, 100], [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]], skip=1) == pytest.approx(100 + 50)
    args = parse_args(["--workers", "3,1,2", "--epochs", "5"])
    assert args.counts == [1, 2, 3]
    assert {"experiments.workers=[1,2,3]", "experiments.data_modes=[same]", "train.max_epochs=5"} <= set(args.overrides)
