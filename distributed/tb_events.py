"""TensorBoard event files of one role: scalars per epoch under <output>/tensorboard/<run>/<role>/.

Written with TensorFlow's record writer and event protos (the event file format), so writing needs
no TensorBoard package; viewing does (`pip install tensorboard`, then
`tensorboard --logdir <output>/tensorboard`). A file:// output is written in place, so TensorBoard
can follow a run live; any other URI is written to a local folder and uploaded when the writer
closes. Runs on executors: TensorFlow is imported inside.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from rdd_io import storage


def role_folder(role: str) -> str:
    """'worker:1' -> 'worker_1' (':' is not allowed in Hadoop path names)."""
    return role.replace(":", "_")


def role_uri(run_uri: str, role: str) -> str:
    return storage.join(run_uri, role_folder(role))


class EventWriter:
    """Appends scalar summaries to one event file; flushes after every step."""

    def __init__(self, uri: str):
        import tensorflow as tf
        self._tf, self.uri = tf, uri
        self._staging = None if storage.is_local(uri) else tempfile.mkdtemp(prefix="tb-events-")
        folder = storage.local_path(uri) if self._staging is None else Path(self._staging)
        folder.mkdir(parents=True, exist_ok=True)
        # The name TensorBoard looks for; pid and object id keep two writers in one folder apart.
        self.name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.{id(self)}"
        self.path = folder / self.name
        self._records = tf.io.TFRecordWriter(str(self.path))
        self._write(tf.compat.v1.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())
        self._records.flush()

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """One event at `step` with a scalar per tag (None values are left out)."""
        tf = self._tf
        summary = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag=tag, simple_value=float(v))
                                              for tag, v in values.items() if v is not None])
        self._write(tf.compat.v1.Event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        self._records.close()
        if self._staging is not None:
            try:
                storage.write_bytes(storage.join(self.uri, self.name), self.path.read_bytes())
            finally:
                shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_writer(run_uri: str | None, role: str) -> EventWriter | None:
    """The role's writer, or None when the run writes no TensorBoard files (run_uri empty)."""
    return EventWriter(role_uri(run_uri, role)) if run_uri else None


def read_scalars(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of one event file (tests, notebooks)."""
    import tensorflow as tf
    out: dict[str, list[tuple[int, float]]] = {}
    for record in tf.data.TFRecordDataset(str(path)):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return out
