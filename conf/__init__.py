"""YAML configuration (cluster.yaml plus one file per case study) and the loader that types it."""
from conf.loader import (CONF_DIR, ClusterConfig, ConfigError, Count, NonNegative, Port, Positive, Range, Rate,
                         Seconds, Seed, TrainLoop, dump, from_json, load, load_cluster,
                         to_json)

__all__ = ["CONF_DIR", "ClusterConfig", "ConfigError", "Count", "NonNegative", "Port", "Positive", "Range", "Rate",
           "Seconds", "Seed", "TrainLoop", "dump", "from_json",
           "load", "load_cluster", "to_json"]
