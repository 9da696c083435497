"""Executor side of the smoke job (jobs/smoke.py), in a module of its own: Spark sends the role by reference,
and the executor imports it with its spec class (a class defined in the driver's script would travel by value
without the names its annotations refer to)."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from conf import Count, from_json


@dataclass(frozen=True)
class SmokeRun:
    """What each smoke role receives (JSON, checked again on the executor)."""
    batch_size: Count
    fail: str


def role(args: dict, ctx) -> dict:
    """Runs on the executors, in the TFoS role ctx.job_name; args["spec"]: the SmokeRun as JSON."""
    run = from_json(SmokeRun, args["spec"])
    if ctx.job_name == "ps":
        host, port = ctx.address.rsplit(":", 1)
        with socket.socket() as sock:
            sock.bind((host, int(port)))  # bound, never listening: proves the reserved port is ours
            while not ctx.should_stop():
                time.sleep(0.2)
        return {"address": ctx.address, "bound_port": int(port)}
    feed = ctx.data_feed()
    count = total = 0
    while not feed.should_stop():
        batch = feed.next_batch(run.batch_size)
        count += len(batch)
        total += sum(batch)
        if run.fail == f"{ctx.job_name}:{ctx.task_index}":
            raise RuntimeError(f"failure injected into {run.fail} (roles.fail) after {count} records")
    return {"address": ctx.address, "count": count, "sum": total}
