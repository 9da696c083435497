"""The run spec of the asynchronous data-parallel roles (distributed/async_training.py: one staleness-aware
ps and M workers), which the redshift study and land cover's data-parallel comparison both start. It
travels to the executors as JSON (conf.to_json) and is checked again there (conf.from_json); model_name
and data are read by the study's hooks (jobs/redshift_roles.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from conf import ConfigError, Count, NonNegative, Range, Seconds, Seed


@dataclass(frozen=True)
class AsyncRun:
    model_name: Literal["redshift", "landcover"]  # the registered model (models.registry)
    model: dict[str, Any]         # its parameters (the builder's resolve() checks them)
    data: Literal["redshift-share", "landcover-patches"]  # how a worker finds its samples
    feed: Literal["tensorflow", "spark"]  # spark: TensorFlowOnSpark feeds each epoch's share
    shares: list[str] | None      # redshift-share, feed tensorflow: one share URI per worker
    share_sizes: list[Annotated[int, Range(0)]] | None  # samples per worker, for progress when fed
    data_uri: str | None          # landcover-patches: the patch set (worker i takes every M-th patch)
    seed: Seed
    workers: Count
    s: Count                      # the ps applies updates in groups of s (staleness-aware rule)
    schedule: Literal["inverse", "constant", "exponential"]  # distributed.staleness.SCHEDULES
    max_epochs: Count
    batch_size: Count
    update: Literal["epoch", "batch"]
    stop_on: Annotated[int, Range(1, 2)] | None  # a criterion of distributed.early_stopping.CRITERIA
    stopping_rule: Literal["keras2.0", "keras3"]
    tf_threads: NonNegative
    push_timeout_s: Seconds
    ps_secret: str                # hex
    weights_uri: str | None       # where the ps writes the final weights
    checkpoint_dir: str | None
    checkpoint_every: NonNegative  # applied updates between the ps's checkpoints (0: only at the end)
    resume: bool
    tensorboard_uri: str | None
    sample_interval_s: Annotated[float, Range(0, 1e9)]  # each role samples its process tree (0: no sampling)

    def validate(self) -> None:
        if self.data == "redshift-share" and self.feed == "tensorflow" and len(self.shares or []) != self.workers:
            raise ConfigError(f"AsyncRun.shares: one share per worker ({self.workers}), got {self.shares!r}")
        if self.feed == "spark" and len(self.share_sizes or []) != self.workers:
            raise ConfigError(f"AsyncRun.share_sizes: one size per worker ({self.workers}), got {self.share_sizes!r}")
        if self.data == "landcover-patches" and not self.data_uri:
            raise ConfigError("AsyncRun.data_uri: the patch set's URI is needed for landcover-patches")
