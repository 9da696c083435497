"""The redshift job's config and experiment grid (no cluster)."""
import pytest

from conf import CONF_DIR, ConfigError, load
from jobs.redshift import experiment_grid, stable_epochs
from jobs.redshift_config import RedshiftConfig

pytestmark = pytest.mark.unit


def _cfg(preset="paper", *sets):
    return load(RedshiftConfig, CONF_DIR / "redshift.yaml", preset, list(sets))


def test_paper_grid_is_the_thesis_grid_plus_ablation():
    cfg = _cfg("paper")
    grid = experiment_grid(cfg)
    main = [r for r in grid if r["grid"]]
    # 2 data sets x 3 worker counts x 2 data modes x 2 criteria (workers stop on it), each once
    assert sorted((r["dataset"], r["workers"], r["data_mode"], r["stop_on"]) for r in main) == sorted(
        (n, m, d, c) for n in (5000, 15000) for m in (1, 2, 3) for d in ("same", "different") for c in (1, 2))
    assert all(r["mode"] == "staleness-aware" and r["s"] == 1 and r["id"].endswith(f"-c{r['stop_on']}")
               for r in main)
    assert cfg.train.stopping_rule == "keras2.0"
    ablation = [r for r in grid if r["ablation"]]
    modes = sorted((r["workers"], r["mode"], r["s"]) for r in ablation)
    assert modes == [(2, "async", 1), (2, "staleness-aware", 1), (2, "sync", 2),
                     (3, "async", 1), (3, "staleness-aware", 1), (3, "staleness-aware", 2), (3, "sync", 3)]
    assert all(r["dataset"] == 15000 and r["data_mode"] == "different" and r["stop_on"] is None
               for r in ablation)  # the ablation trains max_epochs and scores both criteria afterwards
    assert len({r["id"] for r in grid}) == len(grid) == 24 + 7
    # without stopping, the grid cells train max_epochs and two ablation cells are grid cells
    assert len(experiment_grid(_cfg("paper", "train.stop_on=[]"))) == 12 + 5
    assert cfg.executors() == 4


def test_tiny_preset_is_small():
    cfg = _cfg("tiny")
    assert cfg.data.sizes == [1200] and cfg.train.max_epochs <= 10
    assert cfg.executors() == 3
    assert len(experiment_grid(cfg)) == 4 + 2


def test_sync_schedule_and_bad_values_rejected():
    with pytest.raises(ConfigError, match="train.s"):
        _cfg("paper", "train.s=3")  # 1 worker runs cannot wait for 3 updates
    with pytest.raises(ConfigError, match="stop_on"):
        _cfg("paper", "train.stop_on=[5]")
    with pytest.raises(ConfigError, match="stop_on"):
        _cfg("paper", "train.stop_on=[1, 1]")
    with pytest.raises(ConfigError, match="stopping_rule"):
        _cfg("paper", "train.stopping_rule=keras1")
    with pytest.raises(ConfigError, match="update"):
        _cfg("paper", "train.update=sometimes")


def test_stable_epochs_scores_both_criteria():
    history = [0.1, 0.3, 0.5, 0.5, 0.7, 0.7, 0.7, 0.7, 0.7]
    # Keras 3, criterion 1 (patience 1): epoch 4 does not improve -> stops after epoch 4
    # criterion 2 (patience 3): epoch 5 improves, 6, 7 and 8 do not -> stops after epoch 8
    assert stable_epochs(history, "keras3", 20) == {"1": 4, "2": 8}
    # Keras 2.0.x: e4 no (wait 0 -> 1), e5 improves, e6 no (wait 0 -> 1), e7 no (1 >= 1): 7;
    # criterion 2: e6, e7, e8 raise wait to 3, e9 (3 >= 3) stops: 9
    assert stable_epochs(history, "keras2.0", 20) == {"1": 7, "2": 9}
    assert stable_epochs(history[:8], "keras2.0", 8) == {"1": 7, "2": ">8"}
    assert stable_epochs(history, "keras2.0", 20, stop_on=2) == {"2": 9}  # a cell that stopped on criterion 2


def test_describe_stops_orders_leaves_and_counts_s_eff():
    from jobs.redshift import describe_stops
    acc = lambda n: [0.5] * n  # noqa: E731
    results = {"worker:0": {"accuracy": acc(20), "stopped": False, "left_at": 130.0},
               "worker:1": {"accuracy": acc(6), "stopped": True, "left_at": 112.5},
               "worker:2": {"accuracy": acc(9), "stopped": True, "left_at": 120.0}}
    # worker 1 leaves first (2 still active, s_eff = min(2, 2)), then worker 2 (1 active, s_eff 1);
    # worker 0 trained max_epochs: it left at the end, not on its criterion
    assert describe_stops(results, 3, 2, 100.0) == [
        {"worker": "worker:1", "epochs": 6, "left_at_s": 12.5, "s_eff_after": 2, "workers_still_active": 2},
        {"worker": "worker:2", "epochs": 9, "left_at_s": 20.0, "s_eff_after": 1, "workers_still_active": 1}]
