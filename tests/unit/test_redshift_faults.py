"""Redshift fault handling without a cluster: a worker's checkpoint restores its training exactly, the
summary's account of lost workers, and the job's message when the parameter server is lost."""
import numpy as np
import pytest

from distributed import checkpoint
from jobs.redshift import describe_faults, ps_lost_message

pytestmark = pytest.mark.unit

MODEL = {"variant": "thesis", "filters": [4, 8], "kernel_size": 5, "dropout": 0.25, "dense_units": [],
         "optimizer": "adam", "learning_rate": 0.001, "bands": 60, "n_classes": 5}


def test_a_worker_checkpoint_resumes_training_bit_for_bit(tmp_path):
    """Optimizer moments, dropout seed state and the epoch's shuffling come back: the next epoch after a
    restore is the epoch the uninterrupted worker trains (one TF thread: deterministic kernels)."""
    from distributed.tf_process import quiet_tensorflow
    from distributed.async_training import restore_worker, save_worker_checkpoint, train_epoch
    from jobs.redshift_roles import new_model
    from distributed.epochs import epoch_rng
    quiet_tensorflow(1)
    data = np.random.default_rng(0)
    x, y = data.normal(size=(48, 60)).astype(np.float32), data.integers(0, 5, 48)
    uri = str(tmp_path / "worker-0.h5")

    model = new_model(MODEL, 3)
    for epoch in range(2):
        train_epoch(model, x, y, 16, epoch_rng(3, epoch))
    weights = model.get_weights()  # what the ps would hand back on the next pull
    save_worker_checkpoint(uri, model, {"epoch": 2, "done": False, "history": {}, "resumes": []})
    train_epoch(model, x, y, 16, epoch_rng(3, 2))
    uninterrupted = model.get_weights()

    resumed = new_model(MODEL, 3)
    state = restore_worker(uri, resumed)
    assert state["epoch"] == 2
    resumed.set_weights(weights)
    train_epoch(resumed, x, y, 16, epoch_rng(3, state["epoch"]))
    for got, want in zip(resumed.get_weights(), uninterrupted):
        np.testing.assert_array_equal(got, want)

    # Without the optimizer and seed state the same epoch lands elsewhere: the checkpoint is what matters.
    fresh = new_model(MODEL, 3)
    fresh.set_weights(weights)
    train_epoch(fresh, x, y, 16, epoch_rng(3, 2))
    assert max(np.abs(a - b).max() for a, b in zip(fresh.get_weights(), uninterrupted)) > 1e-4


def test_a_worker_checkpoint_for_another_model_is_refused_by_name(tmp_path):
    from distributed.tf_process import quiet_tensorflow
    from distributed.async_training import restore_worker, save_worker_checkpoint
    from jobs.redshift_roles import new_model
    quiet_tensorflow(1)
    uri = str(tmp_path / "worker-1.h5")
    small = new_model(MODEL, 1)
    small.train_on_batch(np.zeros((2, 60), np.float32), np.zeros(2, np.int32))
    save_worker_checkpoint(uri, small, {"epoch": 1, "done": False, "history": {}, "resumes": []})
    other = new_model({**MODEL, "filters": [4, 6]}, 1)
    with pytest.raises(checkpoint.CheckpointError, match="worker-1.h5"):
        restore_worker(uri, other)
    assert restore_worker(str(tmp_path / "absent.h5"), other) is None


CUT = "its host stopped answering (no TCP acknowledgement or keepalive reply)"


def _lost(worker, t, epochs, message):
    return {"event": "lost", "worker": worker, "time": t, "version": 4, "epochs_reported": epochs,
            "message": message, "address": "198.18.7.3", "cause": CUT}


def test_a_lost_worker_that_came_back_saw_its_whole_share():
    ps = {"events": [_lost(1, 110.0, 2, "worker 1 lost; s shrinks from 2 to 1"),
                     {"event": "rejoined", "worker": 1, "time": 120.0, "version": 6, "epoch": 2, "message": "..."}]}
    (fault,) = describe_faults(ps, {"worker:0": {}, "worker:1": {}}, [150, 150], 6, started_at=100.0)
    assert fault == {"worker": "worker:1", "lost_at_s": 10.0, "at_version": 4, "epochs_completed": 2,
                     "message": "worker 1 lost; s shrinks from 2 to 1", "address": "198.18.7.3", "cause": CUT,
                     "rejoined_at_epoch": 2, "samples_not_seen": "none: the share was retrained after the retry"}


def test_a_lost_worker_that_never_came_back_missed_its_share_in_each_unfinished_epoch():
    ps = {"events": [_lost(0, 105.0, 4, "worker 0 lost; 1 still active")]}
    (fault,) = describe_faults(ps, {"worker:1": {}}, [100, 200], 6, started_at=100.0)
    assert fault["rejoined_at_epoch"] is None
    assert fault["samples_not_seen"] == {"4": 100, "5": 100}
    assert describe_faults({"events": []}, {}, [1], 3, 0.0) == []


FAILURE = """worker:0 failed
--- worker:0 ---
Traceback (most recent call last):
  File "jobs/redshift_roles.py", line 300, in worker_role
distributed.ps_client.ParameterServerLost: lost the parameter server ps:0 at 127.0.0.1:4000: 'push' failed \
(BrokenPipeError: [Errno 32] Broken pipe; timeout 630.0 s)
"""


def test_the_job_names_the_lost_parameter_server_and_its_last_checkpoint(tmp_path):
    uri = str(tmp_path / "ps.h5")
    assert "no checkpoint was written" in ps_lost_message("cell", FAILURE, uri)
    checkpoint.save(uri, {"weights": [np.zeros(2)]}, {"version": 3, "updates": [{}, {}, {}]})
    message = ps_lost_message("cell", FAILURE, uri)
    assert message.startswith("cell: the parameter server ps:0 was lost; worker:0 stopped (lost the parameter "
                              "server ps:0 at 127.0.0.1:4000: 'push' failed")
    assert f"the last checkpoint is version 3 (3 updates) in {uri}; run again with --resume" in message
    assert ps_lost_message("cell", "worker:1 failed\n--- worker:1 ---\nValueError: bad shard", uri) is None


def _saved_epochs(tmp_path, epochs):
    """A run spec with checkpoints in tmp_path, and a worker-0 checkpoint at each of `epochs`."""
    import dataclasses

    from distributed.tf_process import quiet_tensorflow
    from distributed.async_training import save_worker_checkpoint, worker_checkpoint_uri
    from jobs.redshift_roles import new_model
    from tests.unit.test_async_run import REDSHIFT
    quiet_tensorflow(1)
    run = dataclasses.replace(REDSHIFT, checkpoint_dir=str(tmp_path), model=MODEL)
    model = new_model(MODEL, 1)
    model.train_on_batch(np.zeros((2, 60), np.float32), np.zeros(2, np.int32))
    for e in epochs:
        save_worker_checkpoint(worker_checkpoint_uri(run, 0, e), model,
                               {"epoch": e, "done": e == 3, "history": {}, "resumes": []})
    return run, model


def test_a_worker_resumes_at_the_epoch_of_its_updates_the_ps_applied_not_at_its_newest_checkpoint(tmp_path):
    """The worker writes an epoch's checkpoint before pushing its update; a failure between that write
    and the ps's checkpoint leaves the worker ahead, and resuming from the newest would lose an update."""
    from distributed.async_training import resume_worker
    run, model = _saved_epochs(tmp_path, [1, 2, 3])
    assert resume_worker(run, 0, {"updates_applied": 2}, 1, model)["epoch"] == 2
    assert resume_worker(run, 0, {"updates_applied": 0}, 1, model) is None  # from scratch
    # per-batch updates (4 per epoch): the start of the epoch the ps is in, its pushes applied again
    assert resume_worker(run, 0, {"updates_applied": 9}, 4, model)["epoch"] == 2
    # the ps saw the worker leave (a task retried after it finished): its last checkpoint, which is done
    assert resume_worker(run, 0, None, 1, model)["epoch"] == 3


def test_a_checkpoint_the_ps_needs_but_missing_is_an_error_naming_it(tmp_path):
    from distributed.async_training import resume_worker
    run, model = _saved_epochs(tmp_path, [1, 3])
    with pytest.raises(checkpoint.CheckpointError, match=r"worker-0\.epoch-2\.h5: missing.*found epochs \[1, 3\]"):
        resume_worker(run, 0, {"updates_applied": 2}, 1, model)
    run, model = _saved_epochs(tmp_path / "unfinished", [1, 2])
    with pytest.raises(checkpoint.CheckpointError, match=r"worker-0\.epoch-2\.h5: worker 0 already left"):
        resume_worker(run, 0, None, 1, model)


def test_the_ps_prunes_only_checkpoints_before_the_epochs_its_own_checkpoint_reports(tmp_path):
    from distributed.async_training import prune_worker_checkpoints, worker_checkpoints
    run, _ = _saved_epochs(tmp_path, [1, 2, 3])
    (tmp_path / "worker-1.epoch-1.h5").write_bytes(b"")
    prune_worker_checkpoints(run, [2, 0])
    assert sorted(worker_checkpoints(run, 0)) == [2, 3] and sorted(worker_checkpoints(run, 1)) == [1]


def test_the_single_machine_baseline_reports_each_epoch_as_it_ends():
    """fit_sequential calls on_epoch after every epoch with the history so far (the job logs it: a paper-size
    baseline trains for many minutes), and the history it returns is the last one reported."""
    from distributed.tf_process import quiet_tensorflow
    from distributed.async_training import fit_sequential
    from jobs.redshift_roles import new_model
    quiet_tensorflow(1)
    data = np.random.default_rng(1)
    x, y = data.normal(size=(32, 60)).astype(np.float32), data.integers(0, 5, 32)
    seen = []
    history = fit_sequential(new_model(MODEL, 3), x, y, 3, 16, 4,
                             on_epoch=lambda done, h: seen.append((done, list(h["accuracy"]), list(h["loss"]))))
    assert [s[0] for s in seen] == [1, 2, 3]
    assert [len(s[1]) for s in seen] == [1, 2, 3] and seen[-1][1:] == (history["accuracy"], history["loss"])
