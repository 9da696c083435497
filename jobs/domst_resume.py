"""Dom-ST training that can stop and continue: per-epoch batches from (seed, epoch), early stopping whose
state is saved, and a checkpoint every N epochs. Runs on executors (imports Keras); see train_one.

Checkpoints, under <output>/checkpoints/<mode>/ (mode ipd or s; a new run without --resume clears them):

    pids/worker-<i>.pid             each node's process (distributed.pidfile), written when the role starts
    <watershed>/<approach>.json     the finished approach's scores, as train_one returns them
    <watershed>/<approach>.h5       while it trains, every train.checkpoint_every epochs (distributed.checkpoint):
                                    variables/  model.variables (weights, dropout seed states), in that order
                                    optimizer/  the optimizer's variables (iteration, Adam moments)
                                    best/       early stopping's best weights (model.get_weights order)
                                    state       {"epoch": epochs done, "val_loss": [...], "best", "best_epoch",
                                                 "wait", "stopped", "train_s"}

--resume skips the approaches with a .json and continues the one with a .h5 from its epoch: the same
batches in the same order (jobs.resume.epoch_order), the same early-stopping decisions.
"""
from __future__ import annotations

import math

import keras
import numpy as np

from distributed import checkpoint
from distributed.epochs import epoch_order


def epoch_batches(inputs, y: np.ndarray, batch_size: int, seed: int, first: int, epochs: int):
    """A tf.data pipeline of the batches of epochs first..epochs-1, each epoch in its own order."""
    import tensorflow as tf
    n = len(y)
    orders = np.stack([epoch_order(seed, e, n) for e in range(first, epochs)]).astype(np.int64)
    inputs = tuple(inputs) if isinstance(inputs, list) else inputs  # tf.data reads a list as one tensor
    data = tf.nest.map_structure(tf.constant, (inputs, y))  # captured once, not copied into the graph
    batches = tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    return batches.map(lambda idx: tf.nest.map_structure(lambda a: tf.gather(a, idx), data)), math.ceil(n / batch_size)


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's early stopping on val_loss (best weights restored) that can start from a saved state,
    and keeps the whole val_loss history, the resumed part included."""

    def __init__(self, patience: int, state: dict | None = None, best_weights: list | None = None):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self.saved, self.saved_best = state, best_weights
        self.val_loss: list[float] = list(state["val_loss"]) if state else []

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.saved:
            self.wait, self.best, self.best_epoch = self.saved["wait"], self.saved["best"], self.saved["best_epoch"]
            self.best_weights = list(self.saved_best) if self.saved_best else None

    def on_epoch_end(self, epoch, logs=None):
        self.val_loss.append(float((logs or {})["val_loss"]))
        super().on_epoch_end(epoch, logs)

    def state(self, epochs_done: int) -> dict:
        best = None if self.best is None else float(self.best)
        return {"epoch": epochs_done, "val_loss": self.val_loss, "best": best, "best_epoch": int(self.best_epoch),
                "wait": int(self.wait), "stopped": bool(self.model.stop_training)}


class Checkpointer(keras.callbacks.Callback):
    """Saves model, optimizer and early-stopping state to `uri` every `every` epochs (after `stop` ran),
    with the seconds spent fitting so far (train_s() at the save), so a resumed fit reports its whole time."""

    def __init__(self, uri: str, every: int, stop: EarlyStopping, train_s):
        super().__init__()
        self.uri, self.every, self.stop, self.train_s = uri, every, stop, train_s

    def on_epoch_end(self, epoch, logs=None):
        if self.every and (epoch + 1) % self.every == 0:
            state = {**self.stop.state(epoch + 1), "train_s": round(self.train_s(), 3)}
            save(self.uri, self.model, self.stop.best_weights, state)


def save(uri: str, model, best_weights, state: dict) -> None:
    checkpoint.save(uri, {"variables": [np.asarray(v.numpy()) for v in model.variables],
                          "optimizer": checkpoint.optimizer_arrays(model.optimizer),
                          "best": list(best_weights or [])}, state)


def restore(uri: str, model) -> tuple[dict, list] | None:
    """Put a checkpoint back into a freshly built, compiled model: (state, best weights), or None if
    there is none at `uri`."""
    found = checkpoint.load_if_present(uri)
    if found is None:
        return None
    arrays, state = found
    checkpoint.assign_variables(model.variables, arrays["variables"], uri)
    checkpoint.restore_optimizer(model.optimizer, model.trainable_variables, arrays["optimizer"], uri)
    return state, arrays["best"]
