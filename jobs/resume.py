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

import contextlib
import errno
import re
import socket
import threading
import time
from typing import Callable


class RoleLost(RuntimeError):
    """A role's process died; the message names the role and what it was doing."""


def attempt() -> int:
    """0 in a role's first start; k after its process died k times and Spark started the task again."""
    from pyspark import TaskContext
    context = TaskContext.get()
    return context.attemptNumber() if context is not None else 0


def reachable(address: str, timeout_s: float = 2.0) -> bool:
    """Whether something accepts connections at 'host:port' (a killed TF server's port refuses them)."""
    return answer(address, timeout_s) == "accepted"


def answer(address: str, timeout_s: float = 2.0) -> str:
    """How the host of 'host:port' answers a TCP connection: 'accepted'; 'refused' (the host is there,
    nothing listens: the process is gone); 'silent' (no answer within timeout_s, or no way to it: the
    host is cut off or down)."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(timeout_s)
        try:
            code = sock.connect_ex((host.strip("[]"), int(port)))
        except OSError:  # a name that does not resolve: no way to it
            return "silent"
    if code == 0:
        return "accepted"
    return "refused" if code == errno.ECONNREFUSED else "silent"


class PeerWatch:
    """Probes the TF servers a chief drives, from a thread of its own, every interval_s.

    Why: a TF step waiting on a server whose host stopped answering does not fail until TCP gives up,
    many minutes later, and the chief's own thread is blocked in it. A role whose host stays silent for
    `misses` probes in a row is handed to on_silent(role, address, waited_s) once, and the watch ends.
    A refused connection is not a silence (the host answers): gRPC fails the step on it at once.
    `network`: a context that puts the thread on the TF servers' network (RoleContext.private_network);
    start the watch from the network the thread should send its report from."""

    def __init__(self, roles: dict[str, str], on_silent: Callable[[str, str, float], None],
                 network: Callable = contextlib.nullcontext, interval_s: float = 2.0, timeout_s: float = 2.0,
                 misses: int = 3):
        self.roles, self.on_silent, self.network = dict(roles), on_silent, network
        self.interval_s, self.timeout_s, self.misses = interval_s, timeout_s, misses
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-watch", daemon=True)

    def start(self) -> "PeerWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval_s + self.timeout_s * len(self.roles) + 1)

    def _run(self) -> None:
        silent_since: dict[str, float] = {}
        missed: dict[str, int] = dict.fromkeys(self.roles, 0)
        with self.network():
            while not self._stop.wait(self.interval_s):
                for role, address in self.roles.items():
                    began = time.monotonic()
                    if answer(address, self.timeout_s) != "silent":
                        missed[role] = 0
                        silent_since.pop(role, None)
                        continue
                    silent_since.setdefault(role, began)
                    missed[role] += 1
                    if missed[role] >= self.misses:
                        self.on_silent(role, address, time.monotonic() - silent_since[role])
                        return


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
