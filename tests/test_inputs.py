"""The input expansion every command shares (spectre.io.inputs): folder trees walked recursively
without following symlink loops, inputs de-duplicated by real path, output names mirroring the tree,
image-frame folders only with the explicit switch."""
from __future__ import annotations

import os

import pytest

from spectre.errors import InputError
from spectre.io.inputs import display_path, expand_inputs


def _touch(root, *names):
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """data/spk1/{00001,00002}.mp4, data/spk2/00001.mp4, a hidden file and folder, a symlink loop,
    a symlink to a video, and a folder of frames."""
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path, "data/spk1/00001.mp4", "data/spk1/00002.MP4", "data/spk2/00001.mp4", "data/.cache/x.mp4",
           "data/spk1/._00001.mp4", "data/notes.txt", "other/00001.mp4", "frames/0001.png", "frames/0002.png")
    os.symlink("..", tmp_path / "data/spk1/loop")
    os.symlink("../data/spk1/00001.mp4", tmp_path / "other/same.mp4")
    return tmp_path


def _pairs(items):
    return [(str(i.path), i.name) for i in items]


def test_folder_is_walked_recursively_and_mirrored(tree):
    assert _pairs(expand_inputs(["data"])) == [("data/spk1/00001.mp4", "spk1/00001"),
                                                ("data/spk1/00002.MP4", "spk1/00002"),
                                                ("data/spk2/00001.mp4", "spk2/00001")]


def test_symlink_loop_and_duplicates_are_visited_once(tree):
    # the loop data/spk1/loop -> data is followed once at most; the same files reached again are dropped
    items = expand_inputs(["data", "data/spk1", "data/spk1/00001.mp4", "other"])
    reals = [os.path.realpath(i.path) for i in items]
    assert len(reals) == len(set(reals)) == 4  # 3 in data + other/00001.mp4 (other/same.mp4 is a duplicate)
    assert str(tree / "other/00001.mp4") in reals


def test_recursive_glob_does_not_follow_loops(tree):
    items = expand_inputs(["data/**/*.mp4"])
    assert _pairs(items) == [("data/spk1/00001.mp4", "spk1/00001"), ("data/spk2/00001.mp4", "spk2/00001")]


def test_single_files_keep_their_names_and_collisions_get_the_folder(tree):
    assert _pairs(expand_inputs(["data/spk1/00002.MP4"])) == [("data/spk1/00002.MP4", "00002")]
    assert [i.name for i in expand_inputs(["data/spk1/00001.mp4", "data/spk2/00001.mp4"])] == \
        ["spk1_00001", "spk2_00001"]


def test_list_entries_keep_their_relative_path(tree):
    (tree / "data/list.txt").write_text("# clips\nspk2/00001.mp4\n../other/00001.mp4\n")
    assert _pairs(expand_inputs(["data/list.txt"])) == [("data/spk2/00001.mp4", "spk2/00001"),
                                                        ("data/../other/00001.mp4", "00001")]


def test_image_folders_need_the_switch(tree):
    with pytest.raises(InputError, match="--image-folder"):
        expand_inputs(["frames"])
    assert _pairs(expand_inputs(["frames"], image_folders=True)) == [("frames", "frames")]


def test_output_folder_below_the_input_is_not_searched(tree):
    _touch(tree, "data/out/spk1/00001.mp4")  # a render of an earlier run
    names = [i.name for i in expand_inputs(["data"], exclude=["data/out"])]
    assert "out/spk1/00001" not in names and len(names) == 3


def test_empty_folder_and_missing_path(tree):
    (tree / "empty").mkdir()
    with pytest.raises(InputError, match="no .mp4"):
        expand_inputs(["empty"])
    with pytest.raises(InputError, match="no such file"):
        expand_inputs(["nowhere.mp4"])


def test_display_path_escapes_control_characters():
    assert display_path("a\nFAILED b.mp4") == "a\\nFAILED b.mp4"
    assert "\n" not in display_path("x\r\ny\t")
