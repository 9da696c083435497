"""Read and write whole files at a Hadoop-compatible URI, atomically.

file:// URIs (and plain paths) are handled in Python. Any other scheme (hdfs://, s3a://, ...) goes
through the Hadoop FileSystem of the running SparkContext, so whatever Spark can reach, a job can
write to. Writes go to a temporary name in the same folder and are then renamed, so a reader never
sees half a file and an interrupted job leaves nothing half-written under the final name.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse


def is_local(uri: str) -> bool:
    return urlparse(str(uri)).scheme in ("", "file")


def local_path(uri: str) -> Path:
    """file:///a/b or /a/b -> Path('/a/b'); relative plain paths resolve against the cwd."""
    parsed = urlparse(str(uri))
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{uri}: not a local URI")
    return Path(unquote(parsed.path) if parsed.scheme else str(uri)).resolve()


def to_uri(path_or_uri: str | Path) -> str:
    """A plain path becomes an absolute file:// URI; a URI is returned unchanged."""
    text = str(path_or_uri)
    if urlparse(text).scheme:
        return text if text.endswith(":///") else text.rstrip("/")
    return Path(text).resolve().as_uri()


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


class _Hadoop:
    """The JVM's Hadoop FileSystem, reached through the driver's SparkContext."""

    def __init__(self, uri: str):
        from pyspark import SparkContext
        sc = SparkContext._active_spark_context
        if sc is None:
            raise RuntimeError(f"{uri}: a SparkContext is needed to reach non-local URIs")
        self.jvm = sc._jvm
        self.path = self.jvm.org.apache.hadoop.fs.Path(uri)
        self.fs = self.path.getFileSystem(sc._jsc.hadoopConfiguration())

    def put(self, local: str, final_uri: str) -> None:
        tmp = self.jvm.org.apache.hadoop.fs.Path(f"{final_uri}._tmp-{uuid.uuid4().hex}")
        self.fs.mkdirs(self.path.getParent())
        self.fs.copyFromLocalFile(False, True, self.jvm.org.apache.hadoop.fs.Path(local), tmp)
        self.fs.delete(self.path, False)
        if not self.fs.rename(tmp, self.path):
            self.fs.delete(tmp, False)
            raise OSError(f"{final_uri}: rename from temporary name failed")


def write_bytes(uri: str, data: bytes) -> None:
    """Atomically replace the file at `uri` with `data`."""
    if is_local(uri):
        target = local_path(uri)
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
    if _in_spark_task():  # an executor: no JVM reachable from Python, so TensorFlow's file systems
        return _gfile_write(uri, data)
    hadoop = _Hadoop(uri)
    with tempfile.NamedTemporaryFile(suffix=".upload") as fh:
        fh.write(data)
        fh.flush()
        hadoop.put(fh.name, uri)


def _in_spark_task() -> bool:
    from pyspark import TaskContext
    return TaskContext.get() is not None


def _gfile_write(uri: str, data: bytes) -> None:
    import tensorflow as tf
    tmp = f"{uri}._tmp-{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "wb") as fh:
        fh.write(data)
    tf.io.gfile.rename(tmp, uri, overwrite=True)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_bytes(uri: str) -> bytes:
    if is_local(uri):
        return local_path(uri).read_bytes()
    h = _Hadoop(uri)
    stream = h.fs.open(h.path)
    try:
        out = h.jvm.java.io.ByteArrayOutputStream()
        h.jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, out, 1 << 16, False)
        return bytes(out.toByteArray())
    finally:
        stream.close()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def exists(uri: str) -> bool:
    if is_local(uri):
        return local_path(uri).exists()
    h = _Hadoop(uri)
    return bool(h.fs.exists(h.path))


def list_names(uri: str) -> list[str]:
    """Names (not paths) of the entries directly under the folder `uri`, sorted; temporaries left out."""
    if is_local(uri):
        folder = local_path(uri)
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    else:
        h = _Hadoop(uri)
        names = [s.getPath().getName() for s in h.fs.listStatus(h.path)] if h.fs.exists(h.path) else []
    return sorted(n for n in names if not n.startswith(".") and "._tmp-" not in n)


def makedirs(uri: str) -> None:
    if is_local(uri):
        local_path(uri).mkdir(parents=True, exist_ok=True)
    else:
        h = _Hadoop(uri)
        h.fs.mkdirs(h.path)


def remove_tree(uri: str) -> None:
    """Delete a folder and everything under it (nothing if it does not exist)."""
    if is_local(uri):
        if local_path(uri).exists():
            shutil.rmtree(local_path(uri))
    else:
        h = _Hadoop(uri)
        h.fs.delete(h.path, True)


def read_parts(uri: str, prefix: str, suffix: str = ".h5") -> list[tuple[str, bytes]]:
    """(path, bytes) of every <prefix>*<suffix> file directly under the folder `uri`, sorted by name.

    Runs on executors too: local folders are read directly, other URIs through tf.io.gfile."""
    if is_local(uri):
        folder = local_path(uri)
        names = sorted(n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(suffix)) \
            if folder.is_dir() else []
        parts = [(str(folder / n), (folder / n).read_bytes()) for n in names]
    else:
        import tensorflow as tf
        paths = sorted(tf.io.gfile.glob(join(uri, f"{prefix}*{suffix}")))
        parts = [(p, tf.io.gfile.GFile(p, "rb").read()) for p in paths]
    if not parts:
        raise FileNotFoundError(f"{uri}: no {prefix}*{suffix} files")
    return parts
