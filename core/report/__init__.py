"""The HTML report of a run: curves, confusion matrix, per-class table, top losses, skipped files.

It renders what the engine hands it (tlzoo.report.rundata.RunData) and never
trains or evaluates anything. Import the submodules: `tlzoo.report.page`
(write_report) pulls in matplotlib and jinja2, `tlzoo.report.per_class` nothing.
"""
