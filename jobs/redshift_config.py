"""The redshift study's typed config (conf/redshift.yaml): data, model, training and the experiment grid."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Literal

from conf import CONF_DIR, ClusterConfig, ConfigError, Count, NonNegative, Positive, Range, Rate, Seconds, Seed
from distributed.early_stopping import CRITERIA, RULES


@dataclass
class DataConfig:
    source: Literal["simulate", "hdf5", "npy"]
    feed: Literal["spark", "tensorflow"]
    input: str
    npy_spectra: str
    npy_labels: str
    sizes: list[Count]
    shard_size: Count
    seed: Seed
    bands: Count
    z_min: Annotated[float, Range(0, 20)]
    z_max: Annotated[float, Range(0, 20, min_open=True)]
    n_classes: Annotated[int, Range(2)]
    snr: Positive


@dataclass
class ModelConfig:
    variant: Literal["thesis", "paper"]
    filters: list[Count]
    kernel_size: Count
    dropout: Rate
    dense_units: list[Count]
    optimizer: Literal["adam", "sgd"]
    learning_rate: Positive


@dataclass
class TrainConfig:
    max_epochs: Count
    batch_size: Count
    update: Literal["epoch", "batch"]
    s: Count
    schedule: Literal["inverse", "constant", "exponential"]
    stopping_rule: Literal["keras2.0", "keras3"]
    stop_on: list[Annotated[int, Range(1, 2)]]  # criteria of distributed.early_stopping.CRITERIA, one cell each
    seed: Seed
    tf_threads: NonNegative
    push_timeout_s: Seconds
    checkpoint_every: NonNegative
    tensorboard: bool


@dataclass
class ExperimentsConfig:
    baseline: bool
    workers: list[Count]
    data_modes: list[Literal["same", "different"]]
    ablation: bool
    ablation_workers: list[Count]


@dataclass
class RedshiftConfig:
    cluster: ClusterConfig
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    experiments: ExperimentsConfig

    def validate(self) -> None:
        if any(m < 1 for m in self.experiments.workers + self.experiments.ablation_workers):
            raise ConfigError("experiments: worker counts must be >= 1")
        stop_on = self.train.stop_on
        if any(c not in CRITERIA for c in stop_on) or len(set(stop_on)) < len(stop_on):
            raise ConfigError(f"train.stop_on: {self.train.stop_on!r} must list distinct criteria of {list(CRITERIA)} "
                              "(or be [] to train max_epochs and score both afterwards)")
        if self.train.stopping_rule not in RULES:
            raise ConfigError(f"train.stopping_rule: {self.train.stopping_rule!r} is not one of {list(RULES)}")
        if not 1 <= self.train.s <= min(self.experiments.workers):
            raise ConfigError(f"train.s={self.train.s} must be between 1 and the smallest worker count")
        if not self.data.sizes or min(self.data.sizes) < 1:
            raise ConfigError("data.sizes: at least one positive size")
        if self.train.checkpoint_every < 0:
            raise ConfigError("train.checkpoint_every: 0 (only when the ps stops) or a number of updates")

    def executors(self) -> int:
        return 1 + max(self.experiments.workers
                       + (self.experiments.ablation_workers if self.experiments.ablation else []))


def model_args(cfg: RedshiftConfig, bands: int | None = None, n_classes: int | None = None) -> dict:
    """What models/redshift.py builds from: the model section, with the spectra's bands and classes."""
    return {**asdict(cfg.model), "bands": bands or cfg.data.bands, "n_classes": n_classes or cfg.data.n_classes}


def config_model(bands: int, n_classes: int, preset: str | None = None) -> dict:
    """The model of conf/redshift.yaml (or one of its presets) for other spectra: what the benches build."""
    from conf import load
    return model_args(load(RedshiftConfig, CONF_DIR / "redshift.yaml", preset), bands, n_classes)
