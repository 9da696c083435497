"""The redshift job's config and experiment grid (no cluster)."""
import pytest

from conf import CONF_DIR, ConfigError, load
from jobs.redshift import RedshiftConfig, experiment_grid, stable_epochs

pytestmark = pytest.mark.unit


def _cfg(preset="paper", *sets):
    return load(RedshiftConfig, CONF_DIR / "redshift.yaml", preset, list(sets))


def test_paper_grid_is_the_thesis_grid_plus_ablation():
    cfg = _cfg("paper")
    grid = experiment_grid(cfg)
    main = [r for r in grid if r["mode"] == "staleness-aware" and r["s"] == 1]
    # 2 data sets x 3 worker counts x 2 data modes, each once
    assert sorted((r["dataset"], r["workers"], r["data_mode"]) for r in main) == sorted(
        (n, m, d) for n in (5000, 15000) for m in (1, 2, 3) for d in ("same", "different"))
    ablation = [r for r in grid if r["ablation"]]
    modes = sorted((r["workers"], r["mode"], r["s"]) for r in ablation)
    assert modes == [(2, "async", 1), (2, "staleness-aware", 1), (2, "sync", 2),
                     (3, "async", 1), (3, "staleness-aware", 1), (3, "staleness-aware", 2), (3, "sync", 3)]
    assert all(r["dataset"] == 15000 and r["data_mode"] == "different" for r in ablation)
    assert len({r["id"] for r in grid}) == len(grid) == 12 + 5  # two ablation cells are grid cells
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
        _cfg("paper", "train.stop_on=5")
    with pytest.raises(ConfigError, match="update"):
        _cfg("paper", "train.update=sometimes")


def test_stable_epochs_scores_both_criteria():
    history = [0.1, 0.3, 0.5, 0.5, 0.7, 0.7, 0.7, 0.7, 0.7]
    # criterion 1 (patience 1): epoch 4 does not improve -> stops after epoch 4
    # criterion 2 (patience 3): epoch 5 improves, 6, 7 and 8 do not -> stops after epoch 8
    assert stable_epochs(history) == {"1": 4, "2": 8}
