"""`tlzoo train DATA --time 10m`: the spec chosen for the user, by measurement, within a time budget.

`layout` reads what DATA is, `throughput` and `estimates` say what each step
costs here, `budget` keeps the time promise, `search` probes backbones, sweeps
the head and tries fine-tunes on the validation split, `decisions` records why,
and `train` runs it all and then the chosen spec as an ordinary run.
"""
