"""Exported models: ONNX and torch.export files that carry their preprocessing and classes.

`tlzoo export RUN_DIR` writes them (tlzoo.export.exporting) and proves parity
with the eager model (tlzoo.export.parity); `tlzoo predict FILE` reads them
(tlzoo.export.predicting). In Python, `import tlzoo.export` and call
`tlzoo.export(run_dir, format="onnx", ...)`: the package itself is callable
and runs tlzoo.export.exporting.export_run, so the verb and its room share a name.
"""

from __future__ import annotations

import sys
import types


class _CallableRoom(types.ModuleType):
    def __call__(self, run_dir, **options):
        """tlzoo.export(run_dir, format="onnx"|"pt2", model="best", out=None, ...): see export_run."""
        from tlzoo.export.exporting import export_run

        return export_run(run_dir, **options)


sys.modules[__name__].__class__ = _CallableRoom
