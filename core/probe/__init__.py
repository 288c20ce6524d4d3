"""Cheap answers before a run: which backbone (`tlzoo rank`) and which learning rate (`tlzoo lr-find`).

`features` gets a backbone's pooled features through the frozen-prefix cache,
`scores` turns them into a linear probe, a kNN and LogME, `ranking` runs that
over several backbones, `lr_range` is the learning-rate range test.
"""
