"""The README's examples run: every ```bash and ```json block is either run here or says why not.

- json blocks are run specs: each validates, and one introduced as `examples/X.json` equals that file.
- bash blocks: each command line is run in-process against a tiny spec in tmp_path (`tlzoo --version`,
  `list`, `schema`, `validate`, `cache info`), or matched by NOT_RUN, which says why it is not run
  (training, a run directory it needs); the `--set` overrides of every line, run or not, must validate.
- any other block, or a block a test cannot run, carries `<!-- not run: reason -->` on the line
  before it. A new block that is none of these fails here, naming its line.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

import pytest

from conftest import REPO, cache_folder_with_listing

README = REPO / "README.md"
OPT_OUT = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")

# command prefixes that are not run, and why
NOT_RUN = {
    "make ": "creates a virtual environment and trains or runs the whole suite",
    "tlzoo run ": "trains a model (its --set overrides are validated)",
    "tlzoo train ": "trains within a time budget (tests/test_auto_train.py runs it on tiny data)",
    "tlzoo evaluate ": "needs a finished run directory",
    "tlzoo predict ": "needs a finished run directory",
    "tlzoo export ": "needs a finished run directory (tests/test_export.py exports tiny runs)",
    "tlzoo report ": "needs a finished run directory (tests/test_report.py makes reports of tiny runs)",
}
# commands run in-process; `spec.json` in them is the tiny spec, the cache a folder in tmp_path
RUN = ("tlzoo --version", "tlzoo list ", "tlzoo schema", "tlzoo validate ", "tlzoo cache info", "tlzoo cache clear")
# what stands for a value in the README's `--set KEY=...`
PLACEHOLDER_VALUES = {"data.reader.options.root": "{data}"}


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    opt_out: str | None
    intro: str  # the paragraph line just before the block


def readme_blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[index])
        if not fence or not fence.group(1):
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        before = [line for line in lines[:index] if line.strip()]
        previous = before[-1] if before else ""
        opt_out = OPT_OUT.search(previous)
        intro = before[-2] if opt_out and len(before) > 1 else previous
        blocks.append(Block(index + 1, fence.group(1), "\n".join(lines[index + 1:end]),
                            opt_out.group(1) if opt_out else None, intro))
        index = end + 1
    return blocks


BLOCKS = readme_blocks()


def commands_of(block: Block) -> list[str]:
    out = []
    for raw in block.text.splitlines():
        line = re.split(r"\s{2,}#", raw)[0].strip()  # a comment after two spaces
        if not line or line.startswith("#"):
            continue
        alternatives = re.fullmatch(r"(tlzoo list) (\w+(?: \| \w+)+)", line)  # `list readers | strategies`
        out += [f"{alternatives.group(1)} {word}" for word in alternatives.group(2).split(" | ")] if alternatives \
            else [line]
    return out


def overrides_of(command: str, data: str) -> list[str]:
    tokens = [token.strip("[]") for token in shlex.split(command)]
    sets = []
    for flag, value in zip(tokens, tokens[1:]):
        if flag == "--set":
            key, _, given = value.partition("=")
            if given == "...":
                assert key in PLACEHOLDER_VALUES, f"README: `--set {value}`: no stand-in value for {key!r} here"
                given = PLACEHOLDER_VALUES[key].format(data=data)
            sets += ["--set", f"{key}={given}"]
    return sets


@pytest.fixture
def tiny_spec(tmp_path, monkeypatch):
    """spec.json beside a one-class ImageFolder; the cache in tmp_path (validate never decodes images)."""
    for split, image in (("train", "x.png"), ("val", "y.png")):
        (tmp_path / "data" / split / "a").mkdir(parents=True)
        (tmp_path / "data" / split / "a" / image).write_bytes(b"listed, not decoded")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"backbone": "efficientnet_lite0", "train": {"epochs": 1},
                                "data": {"reader": {"name": "imagefolder", "options": {"root": "data"}}}}))
    monkeypatch.setenv("TLZOO_CACHE_DIR", str(cache_folder_with_listing(tmp_path / "cache")))
    return spec


def run_in_process(capsys, args: list[str]) -> tuple[int, str, str]:
    from tlzoo.cli.main import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_readme_has_runnable_blocks():
    languages = [block.language for block in BLOCKS if block.opt_out is None]
    assert languages.count("bash") >= 3 and "json" in languages


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.language}" for b in BLOCKS])
def test_readme_block(block, tiny_spec, capsys, monkeypatch):
    if block.opt_out is not None:
        pytest.skip(f"README line {block.line}: not run: {block.opt_out}")
    assert block.language in ("bash", "json"), (
        f"README.md line {block.line}: a ```{block.language} block that tests/test_readme.py cannot run; "
        "put <!-- not run: reason --> on the line before it (saying where it is tested, if it is)")
    if block.language == "json":
        check_json_block(block, tiny_spec)
        return
    monkeypatch.chdir(tiny_spec.parent)
    data = str(tiny_spec.parent / "data")
    for command in commands_of(block):
        sets = overrides_of(command, data)
        if sets:  # every override the README shows must be one a spec accepts
            code, _, err = run_in_process(capsys, ["validate", str(tiny_spec), *sets])
            assert code == 0, f"README.md line {block.line}: `{command}`: its --set overrides fail:\n{err}"
        if command.startswith(tuple(NOT_RUN)) and not command.startswith(RUN):
            continue
        assert command.startswith(RUN), (
            f"README.md line {block.line}: `{command}` is neither run by tests/test_readme.py (RUN) nor "
            "listed with a reason in its NOT_RUN; add it to one, or put <!-- not run: reason --> before the block")
        runnable = re.sub(r"\s*\[[^\]]*\]", "", command)  # optional parts left out
        args = [str(tiny_spec) if token == "spec.json" else token for token in shlex.split(runnable)[1:]]
        code, out, err = run_in_process(capsys, args)
        assert code == 0, f"README.md line {block.line}: `{command}` exited {code}:\n{err}"
        assert out.strip(), f"README.md line {block.line}: `{command}` printed nothing"


def check_json_block(block: Block, tiny_spec) -> None:
    from tlzoo.registry import get_registry
    from tlzoo.spec import resolve_spec

    spec = json.loads(block.text)
    named = re.search(r"`(examples/[\w.-]+\.json)`", block.intro)
    if named:
        assert spec == json.loads((REPO / named.group(1)).read_text()), \
            f"README.md line {block.line}: the block differs from {named.group(1)}"
    # its own paths need not exist here; the spec's fields and components must all validate
    resolve_spec(spec, get_registry(), tiny_spec.parent, f"README.md line {block.line}")
