"""TensorBoard event files: one per role under <run>/<role>/, scalars read back per tag and step."""
import pytest

from jobs import tb_events

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
