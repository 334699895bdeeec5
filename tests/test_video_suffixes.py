"""Every command finds the same video files in a folder (one suffix list, ``spectre.io.video.VIDEO_SUFFIXES``)."""
from __future__ import annotations

from spectre.evaluate.pipeline import expand_inputs as evaluate_inputs
from spectre.io.inputs import expand_inputs as command_inputs
from spectre.io.video import VIDEO_SUFFIXES
from spectre.train.prepare import find_videos


def test_reconstruct_evaluate_and_prepare_find_the_same_videos(tmp_path):
    names = [f"clip{i}{suffix}" for i, suffix in enumerate(VIDEO_SUFFIXES)] + ["CAPS.FLV"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a video")
    expected = sorted(tmp_path / n for n in names)
    assert sorted(it.path for it in command_inputs([tmp_path])) == expected  # track, reconstruct
    assert sorted(evaluate_inputs([tmp_path])) == expected
    assert sorted(it.path for it in find_videos(tmp_path)) == expected
    assert ".flv" in VIDEO_SUFFIXES  # the suffix that once reconstructed but was not evaluated or prepared
