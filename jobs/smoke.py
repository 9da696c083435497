"""TensorFlowOnSpark smoke job: a ps and workers fed an RDD of integers (InputMode.SPARK).

The ps proves it owns the port TFoS reserved for it; each worker counts and sums what it was fed.
The job fails unless every record was consumed exactly once across the workers.
"""
from __future__ import annotations

from dataclasses import dataclass

from conf import ClusterConfig, ConfigError, Count, NonNegative, Seconds, to_json
from jobs.runner import Job, run_job
from jobs.smoke_roles import SmokeRun, role


@dataclass
class RolesConfig:
    ps: NonNegative
    workers: NonNegative
    fail: str  # a role that raises on purpose after its first batch, e.g. "worker:1"; "" for none


@dataclass
class FeedConfig:
    records: Count
    partitions: Count
    epochs: Count
    batch_size: Count
    feed_timeout_s: Seconds


@dataclass
class SmokeConfig:
    cluster: ClusterConfig
    roles: RolesConfig
    feed: FeedConfig

    def validate(self) -> None:
        if self.roles.ps < 1 or self.roles.workers < 1:
            raise ConfigError("roles: the smoke job needs at least one ps and one worker")

    def executors(self) -> int:
        return self.roles.ps + self.roles.workers


def expected(records: int, epochs: int) -> tuple[int, int]:
    return records * epochs, epochs * records * (records - 1) // 2


def run(job: Job) -> dict:
    from distributed import tfos
    cfg = job.cfg
    cluster = tfos.run(job.sc, role, {"spec": to_json(SmokeRun(cfg.feed.batch_size, cfg.roles.fail))},
                       tfos.Roles(ps=cfg.roles.ps, workers=cfg.roles.workers), input_mode="spark",
                       node_host=job.node_host, secret=job.secret,
                       reservation_timeout_s=cfg.cluster.reservation_timeout_s)
    try:
        data = job.sc.parallelize(range(cfg.feed.records), cfg.feed.partitions)
        cluster.train(data, epochs=cfg.feed.epochs, feed_timeout_s=cfg.feed.feed_timeout_s)
    except BaseException:
        cluster.abort()
        raise
    results = cluster.shutdown(timeout_s=cfg.cluster.shutdown_timeout_s)
    workers = {k: v for k, v in results.items() if not k.startswith("ps:")}
    count, total = expected(cfg.feed.records, cfg.feed.epochs)
    consumed = sum(r["count"] for r in workers.values())
    summed = sum(r["sum"] for r in workers.values())
    summary = {"records_fed": count, "records_consumed": consumed, "sum_fed": total, "sum_consumed": summed,
               "exactly_once": consumed == count and summed == total,
               "ps_addresses": cluster.addresses("ps"), "worker_addresses": cluster.addresses("worker"),
               "roles": results}
    if not summary["exactly_once"]:
        raise RuntimeError(f"fed {count} records (sum {total}) but workers consumed {consumed} (sum {summed})")
    return summary


if __name__ == "__main__":
    raise SystemExit(run_job("smoke", SmokeConfig, run, reuse_workers=True))
