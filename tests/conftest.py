"""Shared test settings: TensorFlow stays quiet and single-threaded on the 2-core machines."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
