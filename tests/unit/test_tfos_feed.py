"""Feeding a partition into a worker's own queue (Cluster.feed_workers) against a real TFoS manager."""
import os
import signal
import threading
import time
import uuid

import pytest

from distributed.tfos import _feed_pinned, _tfos

pytestmark = pytest.mark.unit


@pytest.fixture
def manager():
    """A worker's TFoS manager, as TFSparkNode.run starts it (local socket, input and error queues)."""
    TFManager = _tfos()[1]
    authkey = uuid.uuid4().bytes
    mgr = TFManager.start(authkey, ["input", "error"])
    mgr.set("state", "running")
    node = {"addr": mgr.address, "authkey": authkey, "host": "198.18.0.2"}
    try:
        yield mgr, node
    finally:
        if mgr._process.is_alive():
            mgr.shutdown()


def _consume(mgr, count: int) -> None:
    queue = mgr.get_queue("input")
    for _ in range(count):
        queue.get()
        queue.task_done()


def test_a_partition_is_put_into_the_workers_queue_and_waits_until_consumed(manager):
    mgr, node = manager
    consumer = threading.Thread(target=_consume, args=(mgr, 5), daemon=True)
    consumer.start()
    [stats] = _feed_pinned({0: node}, feed_timeout_s=30)(0, iter(range(5)))
    consumer.join(5)
    assert stats["worker"] == 0 and stats["items"] == 5 and not stats["skipped"]


def test_a_worker_whose_manager_dies_while_fed_fails_the_feed_naming_it(manager):
    """A dead manager used to end the wait as if the partition had been consumed (an epoch of training
    silently lost); now the feed fails, naming the worker and its host."""
    mgr, node = manager
    outcome: list = []

    def feed():
        try:
            outcome.append(_feed_pinned({0: node}, feed_timeout_s=60)(0, iter(range(3))))
        except RuntimeError as exc:
            outcome.append(exc)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    time.sleep(1.0)  # the items are in the queue, nobody consumes them: the feed waits
    assert feeder.is_alive()
    os.kill(mgr._process.pid, signal.SIGKILL)
    feeder.join(30)
    assert not feeder.is_alive()
    assert isinstance(outcome[0], RuntimeError), outcome
    assert "worker:0 (host 198.18.0.2) went away before it consumed partition 0" in str(outcome[0])
