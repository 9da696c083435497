"""Resuming without a cluster: per-epoch orders, lost-role messages, and a land-cover cell interrupted after
an epoch and resumed from its checkpoint, against the same cell trained without a break."""
import socket

import numpy as np
import pytest

from distributed import checkpoint, epochs
from jobs import landcover_roles, resume

pytestmark = pytest.mark.unit

TINY_MODEL = {"rgb_filters": [2, 2], "hsi_filters": [2, 2, 2, 2], "dense_units": [8, 8], "hsi_bands": 3,
              "n_classes": 4, "seed": 1, "learning_rate": 0.01, "dropout": 0.25}


def test_epoch_orders_depend_on_seed_and_epoch_only():
    a = epochs.epoch_order(5, 2, 100)
    assert sorted(a) == list(range(100)) and np.array_equal(a, epochs.epoch_order(5, 2, 100))
    assert not np.array_equal(a, epochs.epoch_order(5, 3, 100))
    assert not np.array_equal(a, epochs.epoch_order(6, 2, 100))


def test_a_closed_port_is_unreachable_and_a_listening_one_is_not():
    with socket.create_server(("127.0.0.1", 0)) as listening:
        alive = f"127.0.0.1:{listening.getsockname()[1]}"
        spare = socket.create_server(("127.0.0.1", 0))
        dead = f"127.0.0.1:{spare.getsockname()[1]}"
        spare.close()
        spec = {"chief": [dead], "worker": [alive, dead]}
        assert resume.unreachable_roles(spec, skip="chief:0") == ["worker:1"]
        # how each answers the chief's watch: a process gone is not a host gone
        assert [resume.answer(a) for a in (alive, dead, "no-such-host.invalid:1")] == \
            ["accepted", "refused", "silent"]


def test_the_error_line_of_a_grpc_failure_is_what_happened():
    text = ("Graph execution error:\n\nDetected at node gradients/hsi_b3_bn_1/Mul_1/_204 defined at (most recent "
            "call last):\n<stack traces unavailable>\nrecvmsg:Connection reset by peer\nAdditional GRPC error "
            "information from remote target /job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/"
            "RecvTensor:\n:UNKNOWN:Error received from peer  {grpc_status:14}\n\t [[{{node hsi_b3_bn_1/add_1}}]]")
    assert resume.error_line(text) == "recvmsg:Connection reset by peer"
    assert resume.error_line("Graph execution error:\n\n2 root error(s) found.\n  (0) UNAVAILABLE: Socket closed\n"
                             "  (1) CANCELLED: RecvAsync is cancelled.") == "UNAVAILABLE: Socket closed"
    assert resume.error_line("") == ""


def test_lost_message_takes_one_line_per_role_and_prefers_the_chiefs():
    failures = {
        "worker:1": "Traceback (most recent call last):\n  File ...\njobs.resume.RoleLost: worker:1 (the TF server) "
                    "was lost during cell c: its process died",
        "chief:0": "Traceback ...\njobs.resume.RoleLost: worker:1 (the TF server) was lost during cell c "
                   "(UnavailableError: recvmsg:Connection reset by peer)",
        "worker:2": "Traceback ...\nValueError: something else"}
    message = resume.lost_message(failures)
    assert message.count("worker:1") == 1 and "UnavailableError" in message
    assert resume.lost_message({"worker:2": failures["worker:2"]}) is None


def test_a_lost_worker_is_described_by_the_units_it_holds():
    plan = {"variables": "ps:0", "worker:0": ["rgb_*"], "worker:1": ["hsi_*"], "worker:2": ["fc1"]}
    assert landcover_roles.describe_role("worker:1", "default", plan) == \
        "worker:1 (the TF server holding units hsi_* under plan default)"
    assert "variables" in landcover_roles.describe_role("ps:0", "default", plan)
    assert "driving" in landcover_roles.describe_role("chief:0", "default", plan)


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return {"rgb": rng.integers(0, 255, (n, 25, 25, 3)).astype(np.float32),
            "hsi": rng.normal(size=(n, 25, 25, 3)).astype(np.float32),
            "label": rng.integers(0, 4, n).astype(np.int32)}


def test_a_cell_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_does(tmp_path):
    from distributed.tf_process import quiet_tensorflow
    tf = quiet_tensorflow(1)
    data = _data()
    cell = {"id": "c", "batch_size": 8, "epochs": 4}
    whole, broken = str(tmp_path / "whole.h5"), str(tmp_path / "broken.h5")
    ref = landcover_roles.train_cell(tf, TINY_MODEL, cell, data, 3, checkpoint={"uri": whole, "every": 1,
                                                                                 "resume": False})
    # The run that broke: its last checkpoint is the state after epoch 1 (a 2-epoch cell saves only that one).
    landcover_roles.train_cell(tf, TINY_MODEL, {**cell, "epochs": 2}, data, 3,
                               checkpoint={"uri": broken, "every": 1, "resume": False})
    assert checkpoint.load(broken)[1]["epoch"] == 1
    out = landcover_roles.train_cell(tf, TINY_MODEL, cell, data, 3, checkpoint={"uri": broken, "every": 1,
                                                                               "resume": True})
    assert out["resumed_from_epoch"] == 1 and ref["resumed_from_epoch"] == 0
    assert out["steps"] == ref["steps"] == 12 and len(out["loss"]) == 4
    # Same process, same ops, same state restored: the resumed run replays the same arithmetic.
    # Tolerance 1e-6 relative (float32 rounding), not 0, so a change of reduction order in TF is no failure.
    np.testing.assert_allclose(out["loss"], ref["loss"], rtol=1e-6)
    (a, sa), (b, sb) = checkpoint.load(whole), checkpoint.load(broken)  # both: the state after epoch 3
    assert sa["epoch"] == sb["epoch"] == 3
    for x, y in zip(a["variables"] + a["optimizer"], b["variables"] + b["optimizer"]):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def _samples(p=6, lookback=8, seed=0):
    rng = np.random.default_rng(seed)

    def part(n):
        x = rng.gamma(0.5, 2.0, size=(n, lookback, p)).astype(np.float32)
        t = rng.gamma(0.5, 2.0, size=(n, p)).astype(np.float32)
        y = (0.8 * x[:, -1, 0] + 0.5 * t[:, 2]).astype(np.float32)
        return {"x": x, "p": t, "y": (y - 1.0).astype(np.float32), "y_raw": y.astype(np.float64)}
    return {"train": part(96), "val": part(32), "test": part(32), "y_mean": 1.0, "y_sd": 1.0}


def test_a_domst_fit_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_does(tmp_path):
    from jobs.domst_roles import train_one
    cfg = {"pixels": 6, "lookback": 8, "k_groups": 2, "filters": [4], "kernel_size": 3, "lstm_units": [4],
           "dense_units": [4], "target_units": 2, "dropout": 0.2, "learning_rate": 1e-2,
           "distance": [float(d) for d in range(6)], "head_input": "pixels", "partition": "distance",
           "pixel_weights": "per_pixel"}
    from dataclasses import replace

    from conf import CONF_DIR, load
    from jobs.domst_config import DomstConfig
    train = replace(load(DomstConfig, CONF_DIR / "domst.yaml", "tiny").train, epochs=5, patience=2, batch_size=32,
                    checkpoint_every=1)
    samples = _samples()
    whole, broken = str(tmp_path / "whole.h5"), str(tmp_path / "broken.h5")
    ref = train_one("domst", cfg, samples, train, 4, saved=whole)
    # The fit that broke after epoch 2 (its last checkpoint), then resumed for the remaining epochs.
    train_one("domst", cfg, samples, replace(train, epochs=2), 4, saved=broken)
    out = train_one("domst", cfg, samples, train, 4, saved=broken, resume=True)
    assert out["resumed_from_epoch"] == 2 and ref["resumed_from_epoch"] == 0
    assert out["epochs"] == ref["epochs"] and out["best_epoch"] == ref["best_epoch"]
    # Same process, same ops, same state restored (dropout seeds included): the same arithmetic.
    np.testing.assert_allclose(out["val_loss"], ref["val_loss"], rtol=1e-6)
    assert out["nse"] == pytest.approx(ref["nse"], rel=1e-6)
    (a, sa), (b, sb) = checkpoint.load(whole), checkpoint.load(broken)
    assert sa["epoch"] == sb["epoch"] and sa["wait"] == sb["wait"] and sa["best"] == pytest.approx(sb["best"])
    for x, y in zip(a["variables"] + a["optimizer"] + a["best"], b["variables"] + b["optimizer"] + b["best"]):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
