"""spark-submit entry points, one per case study, and the runner they share."""
