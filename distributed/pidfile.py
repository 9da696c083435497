"""Where each role's process is: one small JSON file per role under a folder URI.

    <folder>/<job>-<index>.pid    {"role": "worker:1", "pid": 12345, "host": "node-3"}

A role writes its own file when it starts (atomically: temporary name, then rename), so an operator,
or a test that kills a role on purpose, finds the process without matching on names. The colon of
'job:index' is not used in the file name: Hadoop paths do not allow it.
"""
from __future__ import annotations

import json
import os
import socket

from rdd_io import storage


def file_name(role: str) -> str:
    """'worker:1' -> 'worker-1.pid'."""
    job, _, index = role.partition(":")
    if not job or not index.isdigit():
        raise ValueError(f"pidfile: role must look like 'worker:1', got {role!r}")
    return f"{job}-{index}.pid"


def write(folder: str, role: str, pid: int | None = None) -> str:
    """Record this process (or `pid`) as `role`'s; returns the file's URI."""
    uri = storage.join(folder, file_name(role))
    storage.write_text(uri, json.dumps({"role": role, "pid": pid or os.getpid(), "host": socket.gethostname()}))
    return uri


def read(folder: str, role: str) -> dict:
    """The record `role` wrote: {'role', 'pid', 'host'}; FileNotFoundError naming the file if none."""
    uri = storage.join(folder, file_name(role))
    if not storage.exists(uri):
        raise FileNotFoundError(f"{uri}: {role} has not recorded its process (yet)")
    record = json.loads(storage.read_text(uri))
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        raise ValueError(f"{uri}: not a pid record: {record!r}")
    return record
