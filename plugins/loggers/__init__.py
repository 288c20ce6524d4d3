"""Built-in run loggers: metrics.jsonl/metrics.csv (always on) and TensorBoard."""
