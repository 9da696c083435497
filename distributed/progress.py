"""What the driver shows while the roles train: one line per role and an overall bar.

Roles send small records (distributed.tfos.RoleContext.progress); the driver polls
Cluster.progress() about once a second while it waits for the roles, and renders them. On a terminal
the block is redrawn in place; otherwise (CI, a log file) a plain log line is written each time a
role completes a unit of work (an epoch, a model), so the log stays readable.

Record fields, all optional: what (the current piece of work: a cell, a watershed and model),
epoch/epochs (completed / planned epochs of it), step/steps (batches within the epoch), accuracy,
loss, val_loss, nse, ups (updates per second), tau (staleness of the last update), done/total (units
of the overall bar this role completed / will do; total defaults to what the driver expected).
"""
from __future__ import annotations

import logging
import sys
import threading
from contextlib import contextmanager
from typing import Callable, TextIO

log = logging.getLogger("distributed.progress")

POLL_S = 1.0


# ------------------------------------------------------------------------------------- formatting
def _number(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def role_line(role: str, record: dict, unit: str = "epochs") -> str:
    """One role's line, e.g. 'worker:1  epoch 3/6  acc 0.412  loss 2.31  1.80 upd/s  tau 1'."""
    r = record
    parts = [role]
    if r.get("what"):
        parts.append(str(r["what"]))
    if unit != "epochs" and "done" in r:
        parts.append(f"{unit} {r['done']}/{r.get('total', '?')}")
    if "epoch" in r:
        parts.append(f"epoch {r['epoch']}/{r.get('epochs', '?')}")
    if "step" in r:
        parts.append(f"step {r['step']}/{r.get('steps', '?')}")
    for key, label, fmt in (("accuracy", "acc", ".3f"), ("loss", "loss", ".4g"), ("val_loss", "val", ".4g"),
                            ("nse", "nse", ".3f")):
        if key in r:
            parts.append(f"{label} {_number(r[key], fmt)}")
    if "ups" in r:
        parts.append(f"{_number(r['ups'], '.2f')} upd/s")
    if r.get("tau") is not None:
        parts.append(f"tau {r['tau']}")
    return "  ".join(parts)


def overall(records: dict[str, dict], expected: dict[str, int]) -> tuple[int, int]:
    """(units done, units in all) over the expected roles and any other role that reported.

    A role's own `total` wins over the expected one (a worker that stops early says so)."""
    done = total = 0
    for role in {**expected, **records}:
        record = records.get(role, {})
        role_total = record.get("total", expected.get(role, 0))
        total += role_total if isinstance(role_total, int) else 0
        role_done = record.get("done", 0)
        done += min(role_done, role_total) if isinstance(role_done, int) and isinstance(role_total, int) else 0
    return done, total


def bar(done: int, total: int, unit: str = "epochs", width: int = 24) -> str:
    """'[############------------] 12/24 epochs  50%'."""
    fraction = min(1.0, done / total) if total > 0 else 0.0
    filled = round(fraction * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} {unit} {fraction:4.0%}"


def milestone(record: dict) -> tuple:
    """What must change in a record for a plain log line: the piece of work, its epoch, the units done."""
    return record.get("what"), record.get("epoch"), record.get("done"), record.get("total")


# -------------------------------------------------------------------------------------- rendering
class Renderer:
    """Draws the records: a block redrawn in place on a terminal, plain lines at milestones otherwise.

    It is fed the records in the order they arrived, [(role, record)], and keeps the latest per role."""

    def __init__(self, stream: TextIO, title: str, expected: dict[str, int], unit: str = "epochs",
                 tty: bool | None = None, logger: logging.Logger | None = None):
        self.stream, self.title, self.expected, self.unit = stream, title, dict(expected), unit
        self.tty = stream.isatty() if tty is None else tty
        self.logger = logger
        self.records: dict[str, dict] = {}
        self._drawn = 0                       # lines of the block on screen (terminal)
        self._logged: dict[str, tuple] = {}   # role -> milestone last logged (plain lines)

    def lines(self) -> list[str]:
        """The block: title and overall bar, then one line per role in name order."""
        done, total = overall(self.records, self.expected)
        return [f"{self.title}  {bar(done, total, self.unit)}"] + [
            role_line(role, self.records[role], self.unit) for role in sorted(self.records)]

    def update(self, received: list[tuple[str, dict]]) -> None:
        for role, record in received:
            self.records[role] = record
            if not self.tty and self._logged.get(role) != milestone(record):
                self._logged[role] = milestone(record)
                done, total = overall(self.records, self.expected)
                self._plain(f"progress {self.title}: {role_line(role, record, self.unit)}  "
                            f"| {bar(done, total, self.unit)}")
        if self.tty and (received or not self._drawn):
            self._redraw(self.lines())

    def close(self, received: list[tuple[str, dict]]) -> None:
        """The final state: the block stays on screen, or the last milestones and a closing line."""
        self.update(received)
        if not self.tty:
            done, total = overall(self.records, self.expected)
            self._plain(f"progress {self.title}: finished {bar(done, total, self.unit)}")

    def _redraw(self, lines: list[str]) -> None:
        up = f"\x1b[{self._drawn}F" if self._drawn else ""  # to the first column of the block's first line
        self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.stream.flush()
        self._drawn = len(lines)

    def _plain(self, line: str) -> None:
        if self.logger is not None:
            self.logger.info("%s", line)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()


class Display:
    """A thread that polls `since(seq)` -> (newest seq, [(role, record)]) every `interval_s` and hands
    what arrived to the renderer (Cluster.progress_since and Server.progress_since have that shape)."""

    def __init__(self, since: Callable[[int], tuple[int, list[tuple[str, dict]]]], renderer: Renderer,
                 interval_s: float = POLL_S):
        self._since, self.renderer, self.interval_s = since, renderer, interval_s
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-display", daemon=True)

    def _poll(self) -> list[tuple[str, dict]]:
        try:
            self._seq, received = self._since(self._seq)
            return received
        except Exception as exc:  # noqa: BLE001 -- the display must never fail the job
            log.debug("progress not available: %s", exc)
            return []

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.renderer.update(self._poll())
            except Exception as exc:  # noqa: BLE001 -- a closed stream, say; keep quiet and go on
                log.debug("progress display: %s", exc)

    def start(self) -> "Display":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.renderer.close(self._poll())
        except Exception as exc:  # noqa: BLE001
            log.debug("progress display: %s", exc)


@contextmanager
def shown(cluster, title: str, expected: dict[str, int], unit: str = "epochs", stream: TextIO | None = None,
          interval_s: float = POLL_S):
    """Show the cluster's progress while the block runs (typically around Cluster.shutdown).

    On a terminal the block is redrawn in place on `stream` (stdout); otherwise plain lines go
    through the 'distributed.progress' logger."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    renderer = Renderer(stream, title, expected, unit, tty=tty, logger=None if tty else log)
    display = Display(cluster.progress_since, renderer, interval_s).start()
    try:
        yield display
    finally:
        display.stop()
