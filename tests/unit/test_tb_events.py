"""TensorBoard event files: one per role under <run>/<role>/, scalars read back per tag and step."""
import pytest

from distributed import tb_events

pytestmark = pytest.mark.unit


def test_scalars_round_trip_through_an_event_file(tmp_path):
    run_uri = (tmp_path / "tensorboard" / "600-M2").as_uri()
    with tb_events.open_writer(run_uri, "worker:1") as writer:
        writer.scalars(1, {"accuracy": 0.25, "loss": 3.5, "staleness": None})
        writer.scalars(2, {"accuracy": 0.5, "loss": 2.0, "staleness": 1.0})
    (event_file,) = (tmp_path / "tensorboard" / "600-M2" / "worker_1").iterdir()
    assert event_file.name.startswith("events.out.tfevents.")  # the name TensorBoard picks up
    assert tb_events.read_scalars(event_file) == {"accuracy": [(1, 0.25), (2, 0.5)], "loss": [(1, 3.5), (2, 2.0)],
                                                  "staleness": [(2, 1.0)]}


def test_no_run_uri_means_no_writer():
    assert tb_events.open_writer(None, "worker:0") is None and tb_events.open_writer("", "chief:0") is None


class _Ctx:
    name = "worker:0"

    def __init__(self):
        self.records = []

    def progress(self, force=False, **record):
        self.records.append((force, record))


def test_a_role_reporter_sends_progress_and_writes_scalars_from_where_it_is_told(tmp_path):
    import contextlib

    from distributed.reporter import RoleReporter
    entered = []

    @contextlib.contextmanager
    def outside():
        entered.append(1)
        yield
    ctx, run_uri = _Ctx(), (tmp_path / "tb").as_uri()
    with RoleReporter(ctx, run_uri, outside) as report:
        report.progress(epoch=1, loss=2.0)
        report.progress(force=True, epoch=1, done=1)
        report.scalars(1, {"loss": 2.0, "nse": None})
        report.scalars(2, {"nse": None})  # nothing to write: no event
    assert ctx.records == [(False, {"epoch": 1, "loss": 2.0}), (True, {"epoch": 1, "done": 1})]
    (event_file,) = (tmp_path / "tb" / "worker_0").iterdir()
    assert tb_events.read_scalars(event_file) == {"loss": [(1, 2.0)]}
    assert len(entered) == 3  # opened, one event written, closed: each from outside


def test_a_role_reporter_without_tensorboard_only_sends_progress():
    from distributed.reporter import RoleReporter
    ctx = _Ctx()
    with RoleReporter(ctx, None) as report:
        report.scalars(1, {"loss": 1.0})
        report.progress(force=True, done=3)
    assert ctx.records == [(True, {"done": 3})]
