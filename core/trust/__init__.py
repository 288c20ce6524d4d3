"""Predictions a user can trust: calibrated probabilities, and "unknown" for inputs unlike the training data.

Pure parts only (torch tensors in, numbers and small modules out), so that the
engine (fitting after training), the run directory (the stored record), the
report (reliability diagram), export (metadata and graph) and predict all use
the same code: `calibration` (temperature by NLL minimisation; ECE, NLL, Brier),
`scores` (the out-of-distribution scores), `threshold` (a threshold that keeps a
stated share of known images), `record` (what a run stores, validated) and
`options` (each score method's own options).
"""
