"""What the land-cover model-parallel run and Dom-ST share to fail fast when a process is lost, and to
continue with --resume.

A role's process that dies (killed, out of memory, its node gone) fails its Spark task; Spark starts
the task again. The roles of these two studies cannot carry on from a second start (a TF server's
graph state, a node's half-trained model are gone with the process), so a second attempt of a role
reports the loss at once (RoleLost, naming the role and what it held) instead of running again: the
driver, the chief and the TF servers waiting on the chief learn of it within a second or two, and the
run continues later from its checkpoints with --resume.

Per-epoch shuffles come from (seed, epoch) alone (distributed/epochs.py), so a resumed run needs no
random-generator state.
"""
from __future__ import annotations

import re
import socket



class RoleLost(RuntimeError):
    """A role's process died; the message names the role and what it was doing."""


def attempt() -> int:
    """0 in a role's first start; k after its process died k times and Spark started the task again."""
    from pyspark import TaskContext
    context = TaskContext.get()
    return context.attemptNumber() if context is not None else 0


def reachable(address: str, timeout_s: float = 2.0) -> bool:
    """Whether something accepts connections at 'host:port' (a killed TF server's port refuses them)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def unreachable_roles(cluster_spec: dict[str, list[str]], skip: str = "") -> list[str]:
    """'job:index' of every role in cluster_spec whose address refuses connections (but `skip`)."""
    return [f"{job}:{i}" for job, addresses in sorted(cluster_spec.items()) for i, address in enumerate(addresses)
            if f"{job}:{i}" != skip and not reachable(address)]


def error_line(text: str) -> str:
    """The line of a TensorFlow error that says what happened ('recvmsg:Connection reset by peer'),
    not its headings, node names or missing stack traces."""
    noise = ("<stack traces", "Detected at node", "[[", "Additional GRPC", ":UNKNOWN:")
    lines = [re.sub(r"^\(\d+\)\s*", "", ln.strip()) for ln in text.splitlines()]  # "(0) UNAVAILABLE: ..."
    useful = [ln for ln in lines if ln and not ln.endswith(":") and not ln.startswith(noise)
              and not re.match(r"\d+ root error\(s\) found", ln)]
    return useful[0][:200] if useful else ""


_LOST_LINE = re.compile(r"^(?:[\w.]+\.)?RoleLost: (.+)$", re.MULTILINE)


def lost_message(failures: dict[str, str], first: str = "chief:0") -> str | None:
    """One line per lost role from the roles' error reports (Cluster.failures()), or None if none
    says a role was lost. A role named by two reports is told once: `first`'s report wins (the
    chief sees the TensorFlow error, the role's second start only that its process died)."""
    seen: dict[str, str] = {}
    for reporter in sorted(failures, key=lambda r: (r != first, r)):
        for line in _LOST_LINE.findall(failures[reporter] or ""):
            seen.setdefault(line.split(" ", 1)[0], line.strip())
    return "; ".join(seen.values()) or None


def role_lost(prefix: str = ""):
    """run_roles' on_failure for studies whose lost role cannot carry on: RoleLost with one line naming
    each lost role and what it held (the roles' tracebacks are in the log), or None if none was lost."""
    def on_failure(cluster, error):
        lost = lost_message(cluster.failures())
        return RoleLost(prefix + lost) if lost else None
    return on_failure
