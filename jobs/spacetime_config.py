"""The space-time study's typed config (conf/spacetime.yaml) and the run spec its roles receive."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from conf import ClusterConfig, ConfigError, Count, NonNegative, Positive, Range, Seconds, Seed


@dataclass
class DataConfig:
    seed: Seed
    batch: Count
    blobs: NonNegative
    noise: Annotated[float, Range(0, 1e9)]


@dataclass
class ModelConfig:
    channels: Count
    kernel: Count                  # odd (validate)
    t_final: Positive
    learning_rate: Positive
    seed: Seed


@dataclass
class MgritConfig:
    coarsening: Annotated[int, Range(2)]
    levels: Annotated[int, Range(1, 32)]
    iterations: Count
    fcf: bool


@dataclass
class ExperimentsConfig:
    modes: list[Literal["space", "depth", "spacetime"]]
    processes: list[Count]         # distinct powers of two (validate)
    side: Count
    layers_per_process: Count
    steps: Count
    check_iterations: Count
    serial_training: bool


@dataclass
class ModelledConfig:
    max_exponent: Annotated[int, Range(0, 40)]   # rows for 2^0 .. 2^max_exponent processes
    cores_per_node: Count
    side: Count
    layers_per_process: Count
    latency_s: Annotated[float, Range(0, 1e9)]
    bandwidth_Bps: Annotated[float, Range(0, 1e15, min_open=True)]


@dataclass
class TrainConfig:
    tf_threads: Count
    timeout_s: Seconds
    mesh_timeout_s: Seconds


@dataclass
class SpacetimeConfig:
    cluster: ClusterConfig
    data: DataConfig
    model: ModelConfig
    mgrit: MgritConfig
    experiments: ExperimentsConfig
    modelled: ModelledConfig
    train: TrainConfig

    def validate(self) -> None:
        ex, m, mg = self.experiments, self.model, self.mgrit
        if m.kernel < 1 or m.kernel % 2 == 0:
            raise ConfigError(f"model.kernel: an odd size >= 1, got {m.kernel}")
        if not ex.processes or any(p < 1 or p & (p - 1) for p in ex.processes) \
                or len(set(ex.processes)) != len(ex.processes):
            raise ConfigError(f"experiments.processes: distinct powers of two, got {ex.processes}")
        if not ex.modes or len(set(ex.modes)) != len(ex.modes):
            raise ConfigError(f"experiments.modes: a non-empty list without repeats, got {ex.modes}")
        if ex.side < max(1, (m.kernel - 1) // 2):
            raise ConfigError(f"experiments.side={ex.side} is thinner than the halo {(m.kernel - 1) // 2}")
        step = mg.coarsening ** (mg.levels - 1)
        if ex.layers_per_process < 1 or ex.layers_per_process % step:
            raise ConfigError(f"experiments.layers_per_process={ex.layers_per_process} must be a multiple of "
                              f"coarsening^(levels - 1) = {step} (MGRIT coarsens each process's layers)")

    def executors(self) -> int:
        return max(self.experiments.processes)


@dataclass(frozen=True)
class SpacetimeRun:
    """What every space-time role receives (JSON, checked again on the executor): the cells, the config
    sections the roles read, and the mesh's secret."""
    cells: list[dict[str, Any]]  # jobs.spacetime_model.cell
    data: DataConfig
    model: ModelConfig
    mgrit: MgritConfig
    steps: Count
    check_iterations: Count
    serial_training: bool
    tf_threads: Count
    mesh_timeout_s: Seconds
    mesh_secret: str

    @classmethod
    def of(cls, cfg: SpacetimeConfig, cells: list[dict], mesh_secret: str) -> SpacetimeRun:
        ex = cfg.experiments
        return cls(cells, cfg.data, cfg.model, cfg.mgrit, ex.steps, ex.check_iterations, ex.serial_training,
                   cfg.train.tf_threads, cfg.train.mesh_timeout_s, mesh_secret)
