"""What a role tells while it trains, in one place for every study: progress records for the driver's
display (RoleContext.progress, rate-limited unless forced) and scalars per step in the role's TensorBoard
event file (distributed/tb_events.py; none when the run writes no TensorBoard files)."""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

from distributed.tb_events import open_writer


class RoleReporter:
    """`outside()`: the context in which to touch the file system (a role that trains inside a private
    network namespace writes its events from outside it)."""

    def __init__(self, ctx, tensorboard_uri: str | None,
                 outside: Callable[[], ContextManager] = contextlib.nullcontext):
        self.ctx, self._outside = ctx, outside
        with outside():
            self._writer = open_writer(tensorboard_uri, ctx.name)

    def progress(self, force: bool = False, **record) -> None:
        self.ctx.progress(force=force, **record)

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """One event at `step`; None values are left out, and an event with none is not written."""
        if self._writer and any(v is not None for v in values.values()):
            with self._outside():
                self._writer.scalars(step, values)

    def close(self) -> None:
        if self._writer:
            with self._outside():
                self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
