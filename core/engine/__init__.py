"""The transfer-learning engine: the training loop, its batch seam, run outputs and reloading runs.

`run_spec(resolved, output)` trains from a resolved spec and writes a run
directory; `inference.load_run` rebuilds a run's model for evaluate and predict.
"""
