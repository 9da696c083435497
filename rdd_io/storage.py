"""Read and write whole files at a Hadoop-compatible URI, atomically, on the driver and on executors.

file:// URIs (and plain paths) are handled in Python. Every other scheme goes through fsspec; hdfs://
(and viewfs://) through hdfs-native, a native HDFS client: no JVM, no libhdfs, no TensorFlow file
system, so executors reach HDFS with nothing but this package. The NameNode comes from the URI
(hdfs://host:port/...), or for hdfs:///path and HA nameservices from fs.defaultFS and the
*-site.xml files in HADOOP_CONF_DIR, which hdfs-native reads itself. Spark's own reads (binaryFiles)
keep using Spark's Hadoop client.

Writes go to a temporary name in the same folder and are then renamed, so a reader never sees half a
file and an interrupted job leaves nothing half-written under the final name. Nothing is written or
deleted through a symbolic link. Every error names the URI and what was being done.
"""
from __future__ import annotations

import ctypes
import fnmatch
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

TMP_MARK = "._tmp-"
# hdfs-native retries a NameNode it cannot reach without end unless told otherwise: a few attempts
# (about 7 s in all) turn a stopped or unreachable NameNode into an error naming the URI. A DataNode
# whose host stopped answering is given up for the next replica after dfs.client.socket-timeout: 10 s
# instead of Hadoop's 60 s (measured: a cut DataNode host held each first read for 60-68 s).
HDFS_OPTIONS = {"dfs.client.failover.max.attempts": "4", "dfs.client.failover.sleep.max.millis": "2000",
                "dfs.client.socket-timeout": "10000"}
# A DataNode that died stays in the NameNode's block placements until its heartbeats expire
# (dfs.namenode.heartbeat.recheck-interval: about 30 s on the mini-cluster, 10.5 min by default), and
# hdfs-native does not route a new block around a DataNode it cannot reach. So a whole-file write or read
# that fails while the NameNode still answers is tried again from scratch, every few seconds, this long.
DATANODE_RETRY_S = 90
# Measured: a write under way when a DataNode is killed can wait in hdfs-native without end. Each try
# gets this long (our largest files take seconds); one without an answer counts as a failed try.
HDFS_CALL_TIMEOUT_S = 120


class StorageError(OSError):
    """An operation on a URI failed; the message names the URI and the operation."""


def is_local(uri: str) -> bool:
    return urlparse(str(uri)).scheme in ("", "file")


def local_path(uri: str) -> Path:
    """file:///a/b or /a/b -> Path('/a/b'); relative plain paths resolve against the cwd.
    Symbolic links are not resolved: a link is refused where it is written or deleted, not followed."""
    parsed = urlparse(str(uri))
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{uri}: not a local URI")
    return Path(os.path.abspath(unquote(parsed.path) if parsed.scheme else str(uri)))


def to_uri(path_or_uri: str | Path) -> str:
    """A plain path becomes an absolute file:// URI; a URI is returned unchanged."""
    text = str(path_or_uri)
    if urlparse(text).scheme:
        return text if text.endswith(":///") else text.rstrip("/")
    return Path(os.path.abspath(text)).as_uri()


# What a name taken from input or config may be when it becomes part of a path: no separator, no
# "." or "..", nothing a shell or a URI treats specially.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def name_problem(name) -> str | None:
    """Why `name` cannot be one part of a path, or None."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        return (f"{str(name)[:80]!r} is not a safe name (1-128 letters, digits, '_', '.', '+', '-'; "
                f"starting with a letter or digit; no '..')")
    return None


def relative_problem(path) -> str | None:
    """Why `path` is not a relative path of safe names ('a/b.nc') that stays under its base, or None."""
    if not isinstance(path, str) or not path:
        return f"{str(path)[:80]!r} is not a relative path"
    for part in path.split("/"):
        if name_problem(part):
            return f"{path[:120]!r} is not a relative path of safe names: {name_problem(part)}"
    return None


def join(uri: str, *parts: str) -> str:
    """`uri`/part/...; a part may hold '/' but never a '.' or '..' segment: a join stays under `uri`."""
    for part in parts:
        if any(seg in (".", "..") for seg in str(part).split("/")):
            raise ValueError(f"path part {part!r} would leave {uri}")
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


_HDFS_PID: int | None = None  # the process that started hdfs-native's runtime, if any


_HDFS_KEPT: list = []  # every HDFS file system this process opened; see _never_free_in_child


def _never_free_in_child() -> None:
    """fsspec empties its instance cache in every forked child (even one that only calls exec). Freeing an
    HDFS client there waits forever for runtime threads fork did not copy: measured, pyspark's JVM launch
    hung in its preexec_fn. So a child keeps them, one extra reference each, for its whole life."""
    for fs in _HDFS_KEPT:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(fs))


os.register_at_fork(after_in_child=_never_free_in_child)


def _remote(uri: str):
    """(fsspec file system, path inside it) for a non-local URI."""
    import fsspec
    global _HDFS_PID
    options = HDFS_OPTIONS if urlparse(uri).scheme in ("hdfs", "viewfs") else {}
    if options:
        # Measured: hdfs-native's runtime does not survive fork(); a child of a process that used it
        # blocks forever on its first call. Fail at once, naming the URI, instead of hanging.
        if _HDFS_PID is not None and _HDFS_PID != os.getpid():
            raise StorageError(f"{uri}: this process ({os.getpid()}) was forked from one that had used the HDFS "
                               f"client (pid {_HDFS_PID}); hdfs-native cannot be used after fork()")
        _HDFS_PID = os.getpid()
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
    except Exception as exc:
        raise StorageError(f"{uri}: cannot open its file system ({type(exc).__name__}: {exc})") from exc
    if options and not any(kept is fs for kept in _HDFS_KEPT):
        _HDFS_KEPT.append(fs)
    return fs, path


def _failed(uri: str, doing: str, exc: BaseException) -> OSError:
    """The error to raise for `exc` while `doing` on `uri`: a missing file stays FileNotFoundError."""
    if isinstance(exc, (FileNotFoundError, StorageError)) and uri in str(exc):
        return exc
    text = str(exc).strip()
    rpc = re.match(r'RPCError\("([\w.$]+)", "(.*?)(\\n|"\)$)', text)  # a Java exception from the NameNode
    if rpc:
        detail = f"{rpc[1].rsplit('.', 1)[-1]}: " + rpc[2].replace('\\"', '"')
    else:
        detail = text.splitlines()[0][:300] if text else type(exc).__name__
    kind = FileNotFoundError if isinstance(exc, FileNotFoundError) or (rpc and "FileNotFound" in rpc[1]) else \
        PermissionError if isinstance(exc, PermissionError) or (rpc and "AccessControl" in rpc[1]) else StorageError
    return kind(f"{uri}: {doing} failed: {detail}")


def _namenode_answers(fs) -> bool:
    try:
        fs.info("/")
        return True
    except Exception:
        return False


def _bounded(call, timeout_s: float):
    """call() on a thread, its result or error; TimeoutError when it has not returned after timeout_s (the
    thread is left to finish or not: a native call cannot be interrupted)."""
    box: dict = {}

    def run():
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
    worker = threading.Thread(target=run, name="hdfs-call", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutError(f"no answer from HDFS within {timeout_s:.0f}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _around_datanodes(fs, attempt):
    """attempt() again while it fails on a DataNode: not a NameNode answer (an RPCError: a missing file, a
    refused permission) and not an unreachable NameNode (which fails at once, naming the URI), for at most
    DATANODE_RETRY_S."""
    deadline = time.monotonic() + DATANODE_RETRY_S
    while True:
        try:
            return _bounded(attempt, HDFS_CALL_TIMEOUT_S)
        except (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError):
            raise
        except Exception as exc:
            if str(exc).startswith("RPCError") or time.monotonic() >= deadline or not _namenode_answers(fs):
                raise
            time.sleep(2)


def _refuse_link(path: Path, uri: str, doing: str) -> None:
    if path.is_symlink():
        raise StorageError(f"{uri}: is a symbolic link (to {os.readlink(path)}); not {doing} through it")


def write_bytes(uri: str, data: bytes) -> None:
    """Atomically replace the file at `uri` with `data`."""
    if is_local(uri):
        target = local_path(uri)
        _refuse_link(target, uri, "writing")
        _refuse_link(target.parent, uri, "writing")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    fs, path = _remote(uri)

    def attempt():
        tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex}"  # a new name each time: a failed one may hold a lease
        try:
            fs.makedirs(path.rsplit("/", 1)[0] or "/", exist_ok=True)
            with fs.open(tmp, "wb") as fh:
                fh.write(data)
            fs.mv(tmp, path, overwrite=True)
        except BaseException:
            try:
                fs.rm(tmp)
            except Exception:
                pass
            raise
    try:
        _around_datanodes(fs, attempt)
    except Exception as exc:
        raise _failed(uri, "write", exc) from exc


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_bytes(uri: str) -> bytes:
    if is_local(uri):
        return local_path(uri).read_bytes()
    fs, path = _remote(uri)
    try:
        return _around_datanodes(fs, lambda: fs.cat_file(path))
    except Exception as exc:
        raise _failed(uri, "read", exc) from exc


def read_range(uri: str, offset: int, length: int) -> bytes:
    """`length` bytes from `offset` (fewer at the end of the file)."""
    if is_local(uri):
        with open(local_path(uri), "rb") as fh:
            fh.seek(offset)
            return fh.read(length)
    fs, path = _remote(uri)
    try:
        with fs.open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)
    except Exception as exc:
        raise _failed(uri, f"read of {length} bytes at {offset}", exc) from exc


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def exists(uri: str) -> bool:
    if is_local(uri):
        return local_path(uri).exists()
    fs, path = _remote(uri)
    try:
        return bool(fs.exists(path))
    except Exception as exc:
        raise _failed(uri, "existence check", exc) from exc


def _names(uri: str) -> list[str]:
    """Every name directly under the folder `uri`, temporaries included; [] if it does not exist."""
    if is_local(uri):
        folder = local_path(uri)
        return os.listdir(folder) if folder.is_dir() else []
    fs, path = _remote(uri)
    try:
        try:  # not fs.isdir: it answers False for an unreachable NameNode too
            if fs.info(path)["type"] != "directory":
                return []
        except FileNotFoundError:
            return []
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    except Exception as exc:
        raise _failed(uri, "listing", exc) from exc


def list_names(uri: str) -> list[str]:
    """Names (not paths) of the entries directly under the folder `uri`, sorted; temporaries left out."""
    return sorted(n for n in _names(uri) if not n.startswith(".") and TMP_MARK not in n)


def list_tree(uri: str) -> list[str]:
    """Paths (relative, '/'-separated) of every file under the folder `uri`, sorted; temporaries left out.
    Symbolic links are not followed."""
    if is_local(uri):
        root = local_path(uri)
        found = [os.path.relpath(os.path.join(d, n), root) for d, _, files in os.walk(root) for n in files]
    else:
        fs, path = _remote(uri)
        try:
            found = [p[len(path.rstrip("/")) + 1:] for p in fs.find(path)] if fs.exists(path) else []
        except Exception as exc:
            raise _failed(uri, "listing", exc) from exc
    return sorted(f.replace(os.sep, "/") for f in found
                  if TMP_MARK not in f and not any(part.startswith(".") for part in f.split("/")))


def download_tree(uri: str, folder: Path) -> list[str]:
    """Copy every file under the folder `uri` (list_tree's files) into the local `folder`, keeping the
    relative paths; the relative paths copied."""
    names = list_tree(uri)
    for name in names:
        target = folder.joinpath(*name.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(join(uri, *name.split("/"))))
    return names


def glob(uri: str, pattern: str) -> list[str]:
    """URIs of the entries directly under the folder `uri` whose name matches `pattern` (fnmatch), sorted."""
    return [join(uri, n) for n in list_names(uri) if fnmatch.fnmatchcase(n, pattern)]


def makedirs(uri: str, private: bool = False) -> None:
    """Create the folder `uri` and its parents; `private`: the folder itself only for its owner (0700)."""
    if is_local(uri):
        folder = local_path(uri)
        _refuse_link(folder, uri, "creating a folder")
        folder.mkdir(parents=True, exist_ok=True)
        if private:
            folder.chmod(0o700)
        return
    fs, path = _remote(uri)
    try:
        fs.makedirs(path, exist_ok=True)
        if private:
            if not hasattr(getattr(fs, "client", None), "set_permission"):
                raise StorageError(f"{uri}: cannot restrict permissions on this file system")
            fs.client.set_permission(path, 0o700)
    except Exception as exc:
        raise _failed(uri, "creating the folder", exc) from exc


def remove_file(uri: str) -> None:
    """Delete one file (nothing if it does not exist); a symbolic link is refused, as in remove_tree."""
    if is_local(uri):
        path = local_path(uri)
        _refuse_link(path, uri, "deleting")
        path.unlink(missing_ok=True)
        return
    fs, path = _remote(uri)
    try:
        if fs.exists(path):
            fs.rm(path)
    except Exception as exc:
        raise _failed(uri, "delete", exc) from exc


def remove_tree(uri: str) -> None:
    """Delete a folder and everything under it (nothing if it does not exist). A symbolic link is
    refused, never followed: what it points to was not made by this job."""
    if is_local(uri):
        path = local_path(uri)
        _refuse_link(path, uri, "deleting")
        if path.exists():
            shutil.rmtree(path)  # removes links inside the tree, never what they point to
        return
    fs, path = _remote(uri)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception as exc:
        raise _failed(uri, "delete", exc) from exc


def read_parts(uri: str, prefix: str, suffix: str = ".h5") -> list[tuple[str, bytes]]:
    """(name, bytes) of every <prefix>*<suffix> file directly under the folder `uri`, sorted by name; the
    name is a path for a local folder, else the URI. Runs on executors too, for any URI."""
    # startswith/endswith, not the glob <prefix>*<suffix>: "W01.h5" is a "W01." part ending ".h5"
    names = [n for n in list_names(uri) if n.startswith(prefix) and n.endswith(suffix)]
    parts = [(str(local_path(u)) if is_local(u) else u, read_bytes(u)) for u in (join(uri, n) for n in names)]
    if not parts:
        raise FileNotFoundError(f"{uri}: no {prefix}*{suffix} files")
    return parts
