"""A private network for one run's TensorFlow servers (Linux network namespaces; thin shell over `ip`).

TensorFlow's gRPC server binds every interface (`[::]:port`, whatever host the cluster spec names) and
has no authentication: whoever reaches its port runs ops in the role's process. When every executor
runs on this machine (the loopback mini-cluster), the TF roles of a run therefore run TensorFlow inside
a network namespace of the run's own, named `scidl-tf-<driver pid>-<random>`, that holds nothing but a
loopback interface: the servers bind there and reach each other on 127.0.0.1, and no process outside
it can open a connection to them (no interface, no route in or out; entering it takes root).

Only the thread that runs TensorFlow enters (`entered`), so the threads TF starts are born inside;
the role's other traffic (results, progress, storage) goes out on the machine's network through
`outside()`. The driver makes the namespace before the roles start and deletes it by name when they
end or fail; a namespace whose driver died is deleted by the next run that makes one (`sweep`).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import subprocess
import threading

PREFIX = "scidl-tf-"
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-[0-9a-f]+$")
_thread = threading.local()  # .home: fd of the namespace the current thread left, while inside one


class NetnsError(RuntimeError):
    """A private network could not be made, entered or removed."""


def unavailable() -> str | None:
    """Why this machine cannot make private networks, or None if it can."""
    if not os.path.exists("/proc/self/ns/net"):
        return "not Linux (no network namespaces)"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN)"
    if not shutil.which("ip"):
        return "`ip` (iproute2) is not on PATH"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")


def names() -> list[str]:
    """The private networks on this machine, of any run."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if _NAME.match(n))
    except FileNotFoundError:
        return []


def sweep() -> list[str]:
    """Delete every private network whose driver process is gone (it crashed or was killed)."""
    from distributed import processes
    gone = [n for n in names() if not processes.alive(int(_NAME.match(n).group(1)))]
    for name in gone:
        remove(name)
    return gone


def create() -> str:
    """A new namespace with only its loopback interface up; returns its name."""
    sweep()
    name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
    except BaseException:
        remove(name)
        raise
    return name


def remove(name: str) -> None:
    """Delete a namespace by name (sockets still open in it keep it alive, unreachable, until closed)."""
    if os.path.exists(os.path.join(NETNS_DIR, name)):
        _ip("netns", "delete", name)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str | None):
    """Run the calling thread (and the threads it starts) inside namespace `name`; None: stay."""
    if not name:
        yield
        return
    if getattr(_thread, "home", None) is not None:
        raise NetnsError("this thread is inside a private network already")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        except FileNotFoundError:
            raise NetnsError(f"the run's private network {name} does not exist (the run ended?)") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        _thread.home = home
        try:
            yield
        finally:
            _thread.home = None
            _setns(home)
    finally:
        os.close(home)


@contextlib.contextmanager
def outside():
    """Inside `entered`: run the block on the network the thread came from (sockets keep the
    namespace they were made in). Elsewhere: nothing to do."""
    home = getattr(_thread, "home", None)
    if home is None:
        yield
        return
    inside = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(home)
        _thread.home = None
        try:
            yield
        finally:
            _setns(inside)
            _thread.home = home
    finally:
        os.close(inside)
