"""Progress display: formatting, the terminal and plain-log renderers, and roles' records reaching it
over the real reservation server."""
import io
import re
import time
from types import SimpleNamespace

import numpy as np
import pytest

from distributed import reservation, tfos
from distributed import progress

pytestmark = pytest.mark.unit

SECRET = "progress-test-secret-0123456789"
ANSI = re.compile(r"\x1b\[\d*[A-Za-z]")


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_role_line_shows_the_fields_a_record_has():
    line = progress.role_line("worker:1", {"epoch": 3, "epochs": 6, "accuracy": 0.41234, "loss": 2.3104,
                                           "ups": 1.8, "tau": 1, "done": 3})
    assert line == "worker:1  epoch 3/6  acc 0.412  loss 2.31  1.80 upd/s  tau 1"
    assert progress.role_line("worker:0", {"epoch": 2, "step": 5, "steps": 19, "ups": 12.5, "tau": None}) \
        == "worker:0  epoch 2/?  step 5/19  12.50 upd/s"  # tau None: no update applied yet
    assert progress.role_line("worker:2", {"what": "W03 domst", "epoch": 2, "epochs": 40, "done": 4, "total": 9,
                                           "loss": 0.5, "val_loss": 0.625, "nse": 0.7123}, unit="models") \
        == "worker:2  W03 domst  models 4/9  epoch 2/40  loss 0.5  val 0.625  nse 0.712"
    assert progress.role_line("chief:0", {"accuracy": "n/a"}) == "chief:0  acc ?"


def test_overall_counts_expected_roles_before_they_report_and_honours_an_early_stop():
    expected = {"worker:0": 6, "worker:1": 6}
    assert progress.overall({}, expected) == (0, 12)
    assert progress.overall({"worker:0": {"done": 2}}, expected) == (2, 12)
    # worker:1 stopped early after 3 epochs: its own total wins
    assert progress.overall({"worker:0": {"done": 6}, "worker:1": {"done": 3, "total": 3}}, expected) == (9, 9)
    # a role nobody expected still counts; done never exceeds total
    assert progress.overall({"chief:0": {"done": 5, "total": 4}}, {}) == (4, 4)


def test_bar():
    assert progress.bar(6, 12, width=10) == "[#####-----] 6/12 epochs  50%"
    assert progress.bar(0, 0, "models", width=4) == "[----] 0/0 models   0%"
    assert progress.bar(12, 12, width=4) == "[####] 12/12 epochs 100%"


def test_plain_renderer_logs_a_line_per_milestone_only():
    out = Stream(tty=False)
    r = progress.Renderer(out, "600-M2", {"worker:0": 2, "worker:1": 2})
    r.update([("worker:0", {"epoch": 0, "step": 1, "steps": 9, "done": 0}),
              ("worker:0", {"epoch": 0, "step": 5, "steps": 9, "done": 0, "ups": 3.0})])  # same epoch: no line
    r.update([])
    # both epoch ends arrived between two polls: each is logged, in order, with the bar of its moment
    r.update([("worker:0", {"epoch": 1, "epochs": 2, "done": 1, "accuracy": 0.5}),
              ("worker:0", {"epoch": 2, "epochs": 2, "done": 2, "accuracy": 0.75}),
              ("worker:1", {"epoch": 1, "epochs": 2, "done": 1, "accuracy": 0.25})])
    r.close([("worker:1", {"epoch": 2, "epochs": 2, "done": 2, "accuracy": 0.5})])
    lines = out.getvalue().splitlines()
    assert not ANSI.search(out.getvalue())
    assert lines == [
        "progress 600-M2: worker:0  epoch 0/?  step 1/9  | [------------------------] 0/4 epochs   0%",
        "progress 600-M2: worker:0  epoch 1/2  acc 0.500  | [######------------------] 1/4 epochs  25%",
        "progress 600-M2: worker:0  epoch 2/2  acc 0.750  | [############------------] 2/4 epochs  50%",
        "progress 600-M2: worker:1  epoch 1/2  acc 0.250  | [##################------] 3/4 epochs  75%",
        "progress 600-M2: worker:1  epoch 2/2  acc 0.500  | [########################] 4/4 epochs 100%",
        "progress 600-M2: finished [########################] 4/4 epochs 100%",
    ]


def test_terminal_renderer_redraws_the_block_in_place():
    out = Stream(tty=True)
    r = progress.Renderer(out, "run", {"worker:0": 2, "worker:1": 2})
    r.update([("worker:0", {"epoch": 1, "epochs": 2, "done": 1})])
    first = out.getvalue()
    assert first.startswith("\x1b[2K")  # nothing drawn yet, so no move up
    assert first.count("\n") == 2
    r.update([])
    assert out.getvalue() == first  # nothing new: nothing redrawn
    r.update([("worker:0", {"epoch": 1, "epochs": 2, "done": 1, "step": 3, "steps": 9}),
              ("worker:1", {"epoch": 1, "epochs": 2, "done": 1})])
    second = out.getvalue()[len(first):]
    assert second.startswith("\x1b[2F")  # back up over the two lines drawn before
    assert second.count("\x1b[2K") == 3 and second.count("\n") == 3
    r.close([("worker:0", {"epoch": 2, "epochs": 2, "done": 2}), ("worker:1", {"epoch": 2, "epochs": 2, "done": 2})])
    last = out.getvalue().split("\x1b[3F")[-1]
    assert ANSI.sub("", last).splitlines() == ["run  [########################] 4/4 epochs 100%",
                                              "worker:0  epoch 2/2", "worker:1  epoch 2/2"]
    assert "finished" not in out.getvalue()  # the block itself is the final state


def _role(addr, task: int) -> tfos.RoleContext:
    node = SimpleNamespace(job_name="worker", task_index=task, executor_id=task + 1, cluster_spec={})
    return tfos.RoleContext(node, {}, SECRET, addr)


@pytest.fixture
def server():
    srv = reservation.Server(2, secret=SECRET, host="127.0.0.1")
    addr = srv.start()
    yield srv, addr
    srv.close()


def test_role_progress_is_rate_limited_unless_forced_and_reaches_the_display(server, monkeypatch):
    srv, addr = server
    monkeypatch.setattr(tfos, "PROGRESS_INTERVAL_S", 3600.0)  # the second call is within it, however slow
    role = _role(addr, 1)
    assert role.progress(epoch=0, step=1, steps=4) is True
    assert role.progress(epoch=0, step=2, steps=4) is False  # within the interval: dropped
    assert role.progress(force=True, epoch=1, epochs=2, done=1, accuracy=np.float32(0.5), tau=np.int64(1)) is True
    assert srv.progress() == {"worker:1": {"epoch": 1, "epochs": 2, "done": 1, "accuracy": 0.5, "tau": 1}}
    out = Stream(tty=False)
    display = progress.Display(srv.progress_since, progress.Renderer(out, "t", {"worker:0": 2, "worker:1": 2}),
                               interval_s=0.05).start()
    _role(addr, 0).progress(force=True, epoch=2, epochs=2, done=2)
    deadline = time.monotonic() + 5
    while "worker:0" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)
    display.stop()
    text = out.getvalue()
    assert "progress t: worker:0  epoch 2/2" in text and "progress t: worker:1  epoch 1/2  acc 0.500  tau 1" in text
    assert text.splitlines()[-1] == "progress t: finished [##################------] 3/4 epochs  75%"


def test_role_progress_never_raises_and_backs_off_when_the_driver_is_gone(server, monkeypatch):
    srv, addr = server
    srv.close()
    tries, real_send = [], reservation.send_progress

    def send(*args, **kw):  # the real client, counted
        tries.append(args[2])
        return real_send(*args, **kw)

    monkeypatch.setattr(reservation, "send_progress", send)
    role = _role(addr, 0)
    assert role.progress(force=True, epoch=1) is False
    assert role.progress(force=True, epoch=2) is False  # quiet after a failure: not even tried
    assert tries == ["worker:0"]


def test_display_survives_a_failing_source():
    out = Stream(tty=False)
    calls = []

    def records(seq):
        calls.append(seq)
        raise OSError("server gone")

    display = progress.Display(records, progress.Renderer(out, "t", {"worker:0": 1}), interval_s=0.01).start()
    time.sleep(0.1)
    display.stop()
    assert len(calls) >= 2
    assert out.getvalue() == "progress t: finished [------------------------] 0/1 epochs   0%\n"
