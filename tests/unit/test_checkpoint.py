"""Checkpoints: round trip, atomic replacement, damaged files named, Keras optimizer state; --resume's check."""
from __future__ import annotations

import numpy as np
import pytest

from conf import ConfigError
from distributed import checkpoint
from jobs.runner import check_resumable
from rdd_io import storage

pytestmark = pytest.mark.unit


def test_round_trip_keeps_arrays_dtypes_and_state(tmp_path):
    uri = storage.to_uri(tmp_path / "ck" / "ps.h5")
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5, -2.0])]
    checkpoint.save(uri, {"weights": weights, "empty": []}, {"version": 7, "seen": [1, 2]})
    arrays, state = checkpoint.load(uri)
    assert state == {"version": 7, "seen": [1, 2]}
    assert arrays["empty"] == []
    for got, want in zip(arrays["weights"], weights):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_a_new_checkpoint_replaces_the_old_one_whole(tmp_path):
    uri = storage.to_uri(tmp_path / "ps.h5")
    checkpoint.save(uri, {"w": [np.zeros(3)]}, {"version": 1})
    checkpoint.save(uri, {"w": [np.ones(3)]}, {"version": 2})
    arrays, state = checkpoint.load(uri)
    assert state["version"] == 2 and arrays["w"][0].tolist() == [1, 1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ps.h5"]  # no temporary file left behind


def test_missing_and_damaged_checkpoints_are_named(tmp_path):
    uri = storage.to_uri(tmp_path / "ps.h5")
    assert checkpoint.load_if_present(uri) is None
    with pytest.raises(checkpoint.CheckpointError, match="ps.h5: no checkpoint"):
        checkpoint.load(uri)
    data = checkpoint.to_bytes({"w": [np.ones(100)]}, {"version": 1})
    (tmp_path / "ps.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="ps.h5: unreadable checkpoint"):
        checkpoint.load(uri)
    (tmp_path / "other.h5").write_bytes(_plain_h5())
    with pytest.raises(checkpoint.CheckpointError, match="other.h5: not a checkpoint"):
        checkpoint.load(storage.to_uri(tmp_path / "other.h5"))


def _plain_h5() -> bytes:
    import io

    import h5py
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        h5["x"] = np.zeros(2)
    return buf.getvalue()


def test_optimizer_state_round_trips_into_a_fresh_model():
    import keras
    x, y = np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3), np.ones((4, 2), np.float32)

    def model():
        keras.utils.set_random_seed(1)
        m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        m.compile(keras.optimizers.Adam(0.01), "mse")
        return m

    a = model()
    a.train_on_batch(x, y)
    saved = checkpoint.optimizer_arrays(a.optimizer)
    b = model()
    b.set_weights(a.get_weights())
    checkpoint.restore_optimizer(b.optimizer, b.trainable_variables, saved, "ck.h5")
    a.train_on_batch(x, y)
    b.train_on_batch(x, y)  # the same Adam moments and step count: the same next step
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6)
    with pytest.raises(checkpoint.CheckpointError, match="ck.h5: optimizer state: 1 arrays in the checkpoint"):
        checkpoint.restore_optimizer(model().optimizer, b.trainable_variables, saved[:1], "ck.h5")


def test_resume_needs_the_run_and_the_same_config(tmp_path):
    out = storage.to_uri(tmp_path)
    with pytest.raises(ConfigError, match="config.yaml does not exist"):
        check_resumable(out, "a: 1\n")
    (tmp_path / "config.yaml").write_text("a: 1\nb: 2\n")
    check_resumable(out, "a: 1\nb: 2\n")
    with pytest.raises(ConfigError, match=r"differs(.|\n)*-b: 2(.|\n)*\+b: 3"):
        check_resumable(out, "a: 1\nb: 3\n")
