"""TensorFlow in a role's process: imported late (executors only), its C++ log at warnings, its thread
pools sized by the run's config (train.tf_threads) so that roles sharing a machine do not oversubscribe it."""
from __future__ import annotations

import os


def quiet_tensorflow(threads: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    try:  # fails if TF already ran an op in this process; the setting then stays as it was
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass
    return tf
