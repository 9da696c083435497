"""The cell store: a finished cell's result is taken only with --resume; a new run clears what is there."""
import pytest

from distributed.cell_store import CellStore

pytestmark = pytest.mark.unit


def test_a_finished_cell_is_read_back_only_when_resuming(tmp_path):
    root = (tmp_path / "checkpoints").as_uri()
    CellStore(root, resume=False).finish("300-M1", {"accuracy": [0.5]})
    CellStore(root, resume=False).finish("W01", {"nse": 0.7}, "domst.json")
    assert CellStore(root, resume=True).finished("300-M1") == {"accuracy": [0.5]}
    assert CellStore(root, resume=True).finished("W01", "domst.json") == {"nse": 0.7}
    assert CellStore(root, resume=False).finished("300-M1") is None  # a new run trains it again
    assert CellStore(root, resume=True).finished("600-M1") is None
    store = CellStore(root, resume=False)
    assert store.is_finished("300-M1") and not store.is_finished("W01")
    assert store.path("W01", "domst.h5") == f"{root}/W01/domst.h5"


def test_clearing_removes_one_cell_or_the_whole_store(tmp_path):
    root = (tmp_path / "checkpoints").as_uri()
    store = CellStore(root, resume=True)
    for cell in ("a", "b"):
        store.finish(cell, {"cell": cell})
    store.clear("a")
    assert not store.is_finished("a") and store.finished("b") == {"cell": "b"}
    store.clear()
    assert not (tmp_path / "checkpoints").exists()
