"""The land-cover study's typed config (conf/landcover.yaml) and the run spec its model-parallel roles receive."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from conf import ClusterConfig, ConfigError, Count, NonNegative, Positive, Range, Rate, Seconds, Seed, TrainLoop

ROLES = ("ps:0", "chief:0", "worker:0", "worker:1", "worker:2")
Plan = dict[str, str | list[str]]  # {"variables": role, role: [unit name globs]} (models.landcover)


@dataclass
class DataConfig:
    source: Literal["simulate", "dfc2018"]
    input: str
    scene_seed: Seed
    scene_size: Count
    hsi_bands_in: Count
    bands: list[NonNegative]
    patch: Count
    per_class: Count
    sizes: list[Count]
    test_fraction: Annotated[float, Range(0, 1, max_open=True)]  # 0: no held-out region
    test_per_class: NonNegative
    shard_size: Count
    seed: Seed


@dataclass
class ModelConfig:
    rgb_filters: list[Count]
    hsi_filters: list[Count]
    dropout: Rate
    dense_units: list[Count]
    learning_rate: Positive


@dataclass
class ExperimentsConfig:
    single_machine: bool
    batch_sizes: list[Count]
    batch_window_s: Annotated[float, Range(0, 1e9)]  # 0: off
    plans: list[str]
    plan_window_s: Annotated[float, Range(0, 1e9)]  # 0: off
    data_parallel: bool
    sample_interval_s: Seconds
    warmup_steps: NonNegative


@dataclass
class LandcoverConfig:
    cluster: ClusterConfig
    data: DataConfig
    model: ModelConfig
    train: TrainLoop
    experiments: ExperimentsConfig
    # plan name -> {"variables": role, role: [unit name globs]} (conf/landcover_plans.yaml, included)
    placement: dict[str, Plan]

    def validate(self) -> None:
        from models.landcover import check_plans
        try:
            check_plans(self.placement, "placement")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        unknown = sorted(set(self.experiments.plans + ["default"]) - set(self.placement))
        if unknown:
            raise ConfigError(f"experiments.plans: {unknown} not in placement ({sorted(self.placement)})")
        if any(n % 20 for n in self.data.sizes):
            raise ConfigError(f"data.sizes: each set is drawn per class, so sizes must be multiples of 20, "
                              f"got {self.data.sizes}")
        if self.train.checkpoint_every < 0:
            raise ConfigError("train.checkpoint_every: 0 (no checkpoints) or a number of epochs")
        if self.experiments.sample_interval_s > 0.5:
            raise ConfigError("experiments.sample_interval_s: at most 0.5 s, so a cell's figures show a series")

    def executors(self) -> int:
        return len(ROLES)


@dataclass(frozen=True)
class LandcoverRun:
    """What the model-parallel roles receive (JSON, checked again on the executor)."""
    model: dict[str, Any]   # models.landcover's parameters (jobs.landcover.model_args; resolve() checks them)
    seed: Seed
    tf_threads: NonNegative
    timeout_s: Seconds
    sample_interval_s: Seconds
    plans: dict[str, Plan]  # the plans the cells use
    cells: list[dict[str, Any]]  # jobs.landcover.experiment_cells
    tensorboard_uri: str | None
    checkpoints: str        # URI of the run's checkpoints folder
    checkpoint_every: NonNegative
    resume: bool
    gap_s: Annotated[float, Range(0, 1e9)]  # the chief's pauses around each cell's steady window (0: none)

    def validate(self) -> None:
        from models.landcover import check_plans
        try:
            check_plans(self.plans, "LandcoverRun.plans")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        unplanned = sorted({c["plan"] for c in self.cells} - set(self.plans))
        if unplanned:
            raise ConfigError(f"LandcoverRun.cells: plans {unplanned} are not in plans ({sorted(self.plans)})")

    @classmethod
    def of(cls, cfg: LandcoverConfig, model: dict, cells: list[dict], checkpoints: str,
           tensorboard_uri: str | None, resume: bool) -> LandcoverRun:
        return cls(model=model, seed=cfg.train.seed, tf_threads=cfg.train.tf_threads, timeout_s=cfg.train.timeout_s,
                   sample_interval_s=cfg.experiments.sample_interval_s,
                   plans={c["plan"]: cfg.placement[c["plan"]] for c in cells}, cells=cells,
                   tensorboard_uri=tensorboard_uri, checkpoints=checkpoints,
                   checkpoint_every=cfg.train.checkpoint_every, resume=resume,
                   gap_s=4 * cfg.experiments.sample_interval_s)
