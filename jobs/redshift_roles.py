"""Redshift's hooks into the asynchronous ps/worker roles (distributed/async_training.py), which land
cover's data-parallel comparison runs too: the registered model built from a seed, and how a worker
finds its share (a redshift bundle share, or every M-th land-cover patch). TensorFlow is imported on
the executors only."""
from __future__ import annotations

import numpy as np

from conf import from_json
from distributed import async_training
from distributed.async_run import AsyncRun


def new_model(model_cfg: dict, seed: int, name: str = "redshift"):
    """The same initial weights wherever it is built with the same seed."""
    import keras
    from models import registry
    keras.utils.set_random_seed(seed)
    return registry.build(name, model_cfg)


def worker_data(run: AsyncRun, task_index: int) -> tuple:
    """(x, y, share facts) of one worker: its redshift share, or every M-th land-cover patch."""
    if run.data == "landcover-patches":
        from rdd_io.landcover_patches import read_patch_set, volumes
        rgb, hsi, y = volumes(read_patch_set(run.data_uri))
        index = np.arange(len(y))[task_index::run.workers]
        return [rgb[index], hsi[index]], y[index], index
    from rdd_io.redshift_bundle import load_share
    share = load_share(run.shares[task_index])
    return share["spectra"], share["label"], share["index"]


def role(args: dict, ctx) -> dict:
    """args["spec"]: the AsyncRun as JSON."""
    run = from_json(AsyncRun, args["spec"])

    def model(seed: int):
        return new_model(run.model, seed, run.model_name)
    if ctx.job_name == "ps":
        return async_training.ps_role(run, ctx, model)
    return async_training.worker_role(run, ctx, model, lambda: worker_data(run, ctx.task_index))
