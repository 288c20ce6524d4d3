"""Report sections added as data by a room above the engine (tlzoo.report.sections): rendered, kept, checked."""

from __future__ import annotations

import io
import json

import pytest

from support import make_image_folder, write_spec
from tlzoo.engine.run import run_spec
from tlzoo.registry import get_registry
from tlzoo.spec import load_spec
from tlzoo.engine.extras import RunExtras
from tlzoo.engine.reporting import write_run_report
from tlzoo.errors import TlzooError
from tlzoo.report.sections import SECTIONS_FILE, section_from_json

SECTION = {"id": "how-chosen", "title": "How this model was chosen", "paragraphs": ["<b>not markup</b>"],
           "columns": ["step", "score"], "rows": [["probe", "0.9750"], ["final", "0.9800"]], "notes": ["a note"]}


def test_a_run_writes_its_extras_and_the_report_shows_the_section_again(tmp_path, tiny_backbone, one_thread):
    make_image_folder(tmp_path / "data", classes=2, per_class=4, val_per_class=2)
    hooked = []
    extras = RunExtras(files={"decisions.json": {"chosen": "tiny"}}, report_sections=[SECTION],
                       epoch_hooks=[lambda trainer, record: hooked.append(record["epoch"])])
    (tmp_path / "spec").mkdir()
    spec = write_spec(tmp_path / "spec", tmp_path / "data", report={"enabled": True, "top_losses": 2})
    result = run_spec(load_spec(spec, get_registry()), tmp_path / "run", stream=io.StringIO(), extras=extras)
    assert hooked == [1, 2]
    assert json.loads((result.run_dir / "decisions.json").read_text()) == {"chosen": "tiny"}
    assert json.loads((result.run_dir / SECTIONS_FILE).read_text()) == [SECTION]
    page = (result.run_dir / "report.html").read_text()
    assert "How this model was chosen" in page and "&lt;b&gt;not markup&lt;/b&gt;" in page and "0.9750" in page
    again = write_run_report(result.run_dir, [], tmp_path / "again.html")  # `tlzoo report` reads the file
    assert "How this model was chosen" in again.read_text()


def test_a_damaged_section_is_a_named_error():
    assert section_from_json(SECTION).rows == [["probe", "0.9750"], ["final", "0.9800"]]
    with pytest.raises(TlzooError, match="without a title"):
        section_from_json({"rows": []})
    with pytest.raises(TlzooError, match="do not match its 2 columns"):
        section_from_json({**SECTION, "rows": [["only one cell"]]})
