"""Cheap answers before a run: which backbone (`tlzoo rank`) and which learning rate (`tlzoo lr-find`).

A backbone's pooled features come through the frozen-prefix cache
(tlzoo.engine.features, which a run's data findings read too); `scores`
turns them into a linear probe, a kNN and LogME, `ranking` runs that over
several backbones, `lr_range` is the learning-rate range test.
"""
