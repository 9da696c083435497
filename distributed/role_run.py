"""One call for a set of TFoS roles: start them with their run spec, show their progress, collect their
results, and on any failure stop every role at once. A study only says what a failure means to it
(`on_failure`: the one-line message of a lost parameter server, a lost role and what it held)."""
from __future__ import annotations

from typing import Callable

from distributed import progress, tfos


def run_roles(sc, role: Callable, spec: str, roles: tfos.Roles, *, title: str, expected: dict[str, int],
              timeout_s: float, unit: str = "epochs", while_running: Callable[[tfos.Cluster], None] | None = None,
              on_failure: Callable[[tfos.Cluster, tfos.RoleFailed], BaseException | None] | None = None,
              **start) -> dict:
    """Run role(args, ctx) in `roles` with args {"spec": spec} (the run spec as JSON); their results by
    role name. `expected`: units of work per role, for the progress display. `while_running(cluster)`
    runs inside the display before the shutdown (feeding the roles, say). `start`: tfos.run's options.

    A role that fails aborts every role; `on_failure(cluster, error)` may give the exception to raise instead
    of tfos.RoleFailed (chained to it), or None to keep it."""
    cluster = tfos.run(sc, role, {"spec": spec}, roles, **start)
    try:
        with progress.shown(cluster, title, expected, unit=unit):
            if while_running is not None:
                while_running(cluster)
            return cluster.shutdown(timeout_s=timeout_s)
    except tfos.RoleFailed as exc:
        cluster.abort()
        replaced = on_failure(cluster, exc) if on_failure is not None else None
        if replaced is not None:
            raise replaced from exc
        raise
    except BaseException:
        cluster.abort()
        raise
