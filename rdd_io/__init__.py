"""Spark-side data: schemas, readers, simulators, RDD bundles, partitioning and feeding."""
