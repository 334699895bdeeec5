"""Every case of the bad-input corpus, through the real CLI in-process: exit code, a one-line error
naming the file and the reason, no traceback, no partial file, and the outputs the case promises."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from spectre.cli import main
from spectre.errors import SpectreError

from .corpus import CASES, LOADER_CASES, Ctx, markdown_table


def test_corpus_is_big_enough_and_documented():
    names = [c.name for c in CASES + LOADER_CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "robustness.md").read_text(encoding="utf-8")
    assert markdown_table() in doc, \
        "docs/robustness.md is out of date: paste `PYTHONPATH=src:tests python -m robustness.corpus`"


@pytest.mark.parametrize("case", LOADER_CASES, ids=lambda c: c.name)
def test_checkpoint_case(case, tmp_path):
    ctx = Ctx(tmp_path / "in", tmp_path / "out", tmp_path)
    with pytest.raises(SpectreError) as info:
        case.load(ctx)
    msg = str(info.value)
    assert info.value.exit_code == case.code, (type(info.value).__name__, msg)
    assert "\n" not in msg
    for word in case.says:
        assert word.lower() in msg.lower(), msg
    assert not ctx.sentinel.exists(), "the malicious payload ran"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case(case, tmp_path, shared_dir, capsys, caplog):
    if case.needs_non_root and os.geteuid() == 0:
        pytest.skip("running as root: folder permissions do not apply")
    if case.skip and (reason := case.skip()):
        pytest.skip(reason)
    ctx = Ctx(tmp_path / "in", tmp_path / "out", shared_dir / "samples")
    ctx.tmp.mkdir()
    if case.runs_before:
        case.runs_before(ctx)
    argv = case.build(ctx)
    capsys.readouterr()
    caplog.clear()
    with case.around(ctx) if case.around else contextlib.nullcontext():
        code = main(argv)
    err = capsys.readouterr().err
    text = err + "\n" + caplog.text  # warnings go through logging
    assert code == case.code, f"exit {code}, expected {case.code}; stderr:\n{err}"
    assert "Traceback" not in text and "\n  File " not in text, text
    for word in case.says:
        assert word.lower() in text.lower(), f"{word!r} missing from:\n{text}"
    if code not in (0,) and len(case.says) >= 2:
        # the file and the reason are on the same line
        assert any(case.says[0].lower() in ln.lower() and case.says[1].lower() in ln.lower()
                   for ln in text.splitlines()), text
    out = ctx.out
    if out.is_dir():
        leftovers = [p.name for p in out.rglob("*") if ".partial" in p.name]
        assert not leftovers, f"temporary files left behind: {leftovers}"
    if case.check:
        ctx.stderr = text
        case.check(ctx)
