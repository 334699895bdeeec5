"""`spectre prepare` on a real sample clip (mediapipe tracking), resumability, split lists, bad input."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from spectre.cli import main
from spectre.errors import InputError, UnsafeFileError
from spectre.train.data import ClipDataConfig, ClipDataset, PreparedCache
from spectre.train.prepare import PrepareConfig, make_splits, read_split_lists


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, lrs3_video):
    """One LRS3 sample plus a corrupt 'video' in a folder, prepared once through the CLI."""
    root = tmp_path_factory.mktemp("prep")
    vids = root / "videos" / "spk"
    vids.mkdir(parents=True)
    os.symlink(lrs3_video, vids / lrs3_video.name)
    (vids / "broken.mp4").write_bytes(b"\x00\x00\x00 not a video")
    cache = root / "cache"
    rc = main(["prepare", str(root / "videos"), "-o", str(cache)])
    return root, cache, rc, lrs3_video


def test_prepare_tracks_and_stores_clip(prepared):
    root, cache, rc, video = prepared
    assert rc == 1  # one clip failed (the broken file), the other was prepared
    c = PreparedCache.open(cache)
    cid = f"spk/{video.stem}"
    assert list(c.clips) == [cid]
    from spectre.io.video import open_video

    n = sum(1 for _ in open_video(video, warn_fps=False).iter_frames())
    info = c.clips[cid]
    assert info.frames == n and info.valid_frames >= 0.9 * n and info.fps == pytest.approx(25.0)
    lmk = np.load(cache / "clips" / cid / "landmarks.npy")
    assert lmk.shape == (n, 68, 2) and np.isfinite(lmk).all()
    assert (lmk > 0).all() and (lmk < 224).all()  # LRS3 clips are 224x224 face crops
    # the face is centred in the training crop and the mouth sits below the eyes
    s = ClipDataset(c, [cid], ClipDataConfig(clip_length=7), train=False)[0]
    lm = s["landmark"][..., :2]
    assert ((lm.amax(1) + lm.amin(1)) / 2).abs().max() < 0.05  # the crop is centred on the landmark bbox
    assert (lm[:, 48:68, 1].mean(1) > lm[:, 36:48, 1].mean(1) + 0.2).all()
    # a single split group goes to training
    assert c.split("train") == [cid]


def test_prepare_resumes_without_redoing(prepared, capsys):
    root, cache, _, video = prepared
    meta = cache / "clips" / "spk" / video.stem / "meta.json"
    before = meta.stat().st_mtime_ns
    rc = main(["prepare", str(root / "videos"), "-o", str(cache)])
    assert rc == 1
    assert "1 already done" in capsys.readouterr().err
    assert meta.stat().st_mtime_ns == before


def test_official_lrs3_list_format(prepared, tmp_path):
    _, cache, _, video = prepared
    lists = [[], [(f"trainval/spk/{video.stem}", "SOME TRANSCRIPT")], []]
    pkl = tmp_path / "LRS3_lists.pkl"
    pkl.write_bytes(pickle.dumps(lists, protocol=2))
    read = read_split_lists(pkl)
    assert read["val"] == [f"trainval/spk/{video.stem}"]
    splits = make_splits([f"spk/{video.stem}", "other/00001"], PrepareConfig(), read)
    assert splits == {"train": [], "val": [f"spk/{video.stem}"], "test": []}


def test_split_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    pkl = tmp_path / "LRS3_lists.pkl"
    pkl.write_bytes(pickle.dumps([[Evil()], [], []]))
    with pytest.raises(UnsafeFileError, match="LRS3_lists.pkl"):
        read_split_lists(pkl)


def test_folder_split_is_by_parent_and_seeded():
    ids = [f"spk{i}/{j:05d}" for i in range(10) for j in range(3)]
    s = make_splits(ids, PrepareConfig(val_fraction=0.2, test_fraction=0.1, seed=42))
    assert sum(len(v) for v in s.values()) == 30
    parents = {k: {i.split("/")[0] for i in v} for k, v in s.items()}
    assert not parents["train"] & parents["val"] and not parents["train"] & parents["test"]
    assert len(parents["val"]) == 2 and len(parents["test"]) == 1
    assert s == make_splits(ids, PrepareConfig(val_fraction=0.2, test_fraction=0.1, seed=42))


@pytest.mark.parametrize("setup", ["missing", "empty"])
def test_bad_input_folders_fail_in_one_line(tmp_path, capsys, setup):
    src = tmp_path / "v"
    if setup == "empty":
        src.mkdir()
    rc = main(["prepare", str(src), "-o", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("spectre: error:") and len(err.splitlines()) == 1 and str(src) in err


def test_cache_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="not a prepared cache"):
        PreparedCache.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="manifest"):
        PreparedCache.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"clips": []}))
    with pytest.raises(InputError, match="split file not found"):
        PreparedCache.open(tmp_path).split("train")


def test_image_frame_folders_are_clips_only_with_the_switch(tmp_path):
    """`prepare` reads its folder as every command does: frame folders need --image-folder; clip ids
    are the relative paths."""
    from spectre.train.prepare import Track, prepare_folder

    frames = tmp_path / "videos" / "spk" / "clip1"
    frames.mkdir(parents=True)
    for i in range(3):
        (frames / f"{i:04d}.png").write_bytes(b"png")

    def tracker(path):
        assert os.path.isdir(path)
        return Track(np.full((3, 68, 2), 50.0), 25.0, 64, 64)

    def reader(path):
        yield from (np.zeros((64, 64, 3), np.uint8) for _ in range(3))

    cfg = PrepareConfig(store_crops=False)
    with pytest.raises(InputError, match="--image-folder"):
        prepare_folder(tmp_path / "videos", tmp_path / "cache", cfg, tracker=tracker, frames=reader)
    report = prepare_folder(tmp_path / "videos", tmp_path / "cache", cfg, tracker=tracker, frames=reader,
                            image_folders=True)
    assert report.prepared == 1 and not report.failed
    assert (tmp_path / "cache" / "clips" / "spk" / "clip1" / "meta.json").is_file()
