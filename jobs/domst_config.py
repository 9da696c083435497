"""The Dom-ST study's typed config (conf/domst.yaml) and the run spec its worker roles receive."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from conf import ClusterConfig, ConfigError, Count, Positive, Range, Rate, Seed, TrainLoop
from rdd_io import storage

APPROACHES = ("singlehead", "singlehead_p", "domst")
ABLATION = ("singlehead_p_wide", "singlehead_p_means", "domst_projection", "domst_uniform", "domst_k1")


@dataclass
class DataConfig:
    source: Literal["simulate", "files"]
    input: str
    seed: Seed
    years: Count
    start_year: Annotated[int, Range(1800, 2200)]
    watersheds: Count
    lookback: Count
    train_frac: Annotated[float, Range(0, 1, min_open=True, max_open=True)]
    val_frac: Annotated[float, Range(0, 1, min_open=True, max_open=True)]


@dataclass
class ModelConfig:
    filters: list[Count]
    kernel_size: Count
    lstm_units: list[Count]
    dense_units: list[Count]
    k_groups: Count
    dropout: Rate
    learning_rate: Positive
    target_units: Count
    head_input: Literal["pixels", "weighted_sum"]
    partition: Literal["distance", "dynamic"]
    pixel_weights: Literal["per_pixel", "distance"]


@dataclass
class TrainConfig(TrainLoop):
    patience: Count  # early stopping: epochs without a better validation loss (best weights restored)


@dataclass
class ExperimentsConfig:
    approaches: list[Literal["singlehead", "singlehead_p", "domst"]]
    modes: list[Literal["ipd", "s"]]
    nodes: Count | None
    assignment: Literal["balanced", "round_robin"]
    ablation: list[Literal["singlehead_p_wide", "singlehead_p_means", "domst_projection", "domst_uniform",
                           "domst_k1"]]


@dataclass
class PlacementConfig:
    use_gpus: bool
    cpu_devices: Count | None


@dataclass
class DomstConfig:
    cluster: ClusterConfig
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    experiments: ExperimentsConfig
    placement: PlacementConfig

    def validate(self) -> None:
        ex, d = self.experiments, self.data
        if ex.nodes is not None and ex.nodes < 1:
            raise ConfigError(f"experiments.nodes: {ex.nodes} must be >= 1 (or null: one node per watershed)")
        for key, values in (("approaches", ex.approaches), ("modes", ex.modes)):
            if not values or len(set(values)) != len(values):
                raise ConfigError(f"experiments.{key}: a non-empty list without repeats, got {values}")
        if len(set(ex.ablation)) != len(ex.ablation):
            raise ConfigError(f"experiments.ablation: a list without repeats, got {ex.ablation}")
        if not (0 < d.train_frac and 0 < d.val_frac and d.train_frac + d.val_frac < 1):
            raise ConfigError(f"data.train_frac={d.train_frac}, val_frac={d.val_frac}: both positive, sum below 1")
        if d.lookback - len(self.model.filters) * (self.model.kernel_size - 1) < 1:
            raise ConfigError(f"data.lookback={d.lookback} is too short for the convolutions in model")
        if self.train.epochs < 1 or self.train.patience < 1:
            raise ConfigError("train.epochs and train.patience must be >= 1")
        if self.train.checkpoint_every < 0:
            raise ConfigError("train.checkpoint_every: 0 (no checkpoints) or a number of epochs")
        if self.model.partition == "dynamic" and self.model.head_input != "weighted_sum":
            raise ConfigError("model.partition: dynamic re-cuts the groups, which needs model.head_input: "
                              "weighted_sum (with pixels, a head's channels are its pixels)")
        if self.placement.cpu_devices is not None and self.placement.cpu_devices < 1:
            raise ConfigError("placement.cpu_devices: null or >= 1")

    def executors(self) -> int:
        """IP-D nodes: experiments.nodes, at most one per watershed (null: one per watershed)."""
        if "ipd" not in self.experiments.modes:
            return 1
        n = self.watershed_count()
        return n if self.experiments.nodes is None else max(1, min(self.experiments.nodes, n))

    def watershed_count(self) -> int:
        """Watersheds of the region: simulated, or listed in the input's region file."""
        if self.data.source == "simulate":
            return self.data.watersheds
        from rdd_io.domst_read import read_watersheds
        from rdd_io.domst_sim import WATERSHEDS_FILE
        try:
            uri = storage.join(storage.to_uri(self.data.input), WATERSHEDS_FILE)
            return max(1, len(read_watersheds(storage.read_bytes(uri), uri)["watersheds"]))
        except Exception:  # unreadable here: the job's own read reports it, naming the file
            return self.data.watersheds


Approach = Literal["singlehead", "singlehead_p", "domst", "singlehead_p_wide", "singlehead_p_means",
                   "domst_projection", "domst_uniform", "domst_k1"]  # APPROACHES + ABLATION


@dataclass(frozen=True)
class DomstRun:
    """What every Dom-ST worker receives (JSON, checked again on the executor)."""
    model: ModelConfig
    train: TrainConfig
    placement: PlacementConfig
    approaches: list[Approach]
    assignment: list[list[str]]   # watershed ids per node
    bundles: str                  # URI of the watershed bundles
    lookback: Count
    train_frac: Annotated[float, Range(0, 1, min_open=True, max_open=True)]
    val_frac: Annotated[float, Range(0, 1, min_open=True, max_open=True)]
    index: dict[str, Annotated[int, Range(0)]]  # a watershed's place in the region: its seed offset
    tensorboard_uri: str | None
    checkpoints: str              # URI of this mode's checkpoints folder
    resume: bool

    def validate(self) -> None:
        unknown = sorted({w for node in self.assignment for w in node} - set(self.index))
        if unknown:
            raise ConfigError(f"DomstRun.assignment: watersheds {unknown} have no index")
