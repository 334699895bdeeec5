"""What a job holds per frame (issue 15, memory flat in the video's length): per-frame arrays that grow in
place, a fit that forgets the landmarks it will not read again, a tracked face kept once, and result files
written without a copy of their arrays."""
from __future__ import annotations

import io
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

from spectre.faces.tracks import TRACK_FIELDS, FaceChunk, FaceTrack, FaceTracks, select_faces
from spectre.io.results import NPZ_PIECE, write_npz
from spectre.reconstruct.fit import TrackFit
from spectre.reconstruct.fit_stream import FitPiece, FitRows, assemble
from spectre.reconstruct.rows import Rows
from spectre.reconstruct.tracked import TrackedParts, cut_chunk


def test_rows_grow_in_place_and_forget_from_the_front():
    rows = Rows((2,), np.float32, expect=100)
    reserved = rows.data
    for a in range(0, 100, 7):
        rows.append(np.arange(a, min(a + 7, 100), dtype=np.float32)[:, None].repeat(2, 1))
    assert len(rows) == 100 and rows.data is reserved, "the announced rows fit in what was reserved"
    whole = rows.array()
    assert np.shares_memory(whole, reserved) and whole[:, 0].tolist() == list(range(100))
    rows.append(np.zeros((200, 2), np.float32))  # past the announcement: it grows
    assert len(rows) == 300 and rows.data.shape[0] >= 300 and rows[95:100][:, 0].tolist() == [95, 96, 97, 98, 99]

    rows.forget(290)
    assert rows.held == 10 and len(rows) == 300
    np.testing.assert_array_equal(rows[np.array([290, 299])], 0)
    with pytest.raises(IndexError):
        rows[289:291]
    with pytest.raises(IndexError):
        rows.array()
    rows.append(np.ones((3, 2), np.float32))
    assert rows[298:].tolist() == [[0, 0], [0, 0], [1, 1], [1, 1], [1, 1]]


def _chunk(rng, n: int, ids: list[int]) -> FaceChunk:
    """A chunk of ``n`` frames with faces ``ids`` of random sizes, each missing in some frames."""
    tracks = {}
    for tid in ids:
        t = FaceTrack.empty(tid, n)
        present = rng.random(n) < 0.8
        x0, y0 = rng.uniform(0, 100, (2, n))
        w = rng.uniform(20, 80, n)
        t.bbox[present] = np.stack([x0, y0, x0 + w, y0 + w], 1)[present]
        t.points478[present] = rng.normal(size=(int(present.sum()), 478, 3))
        t.landmarks68[present] = rng.normal(size=(int(present.sum()), 68, 2))
        t.present[:] = present
        t.confidence[present] = rng.random(int(present.sum()))
        tracks[tid] = t
    start = _chunk.frames
    _chunk.frames += n
    faces = FaceTracks(np.arange(start, start + n), np.arange(start, start + n) / 25.0, 320, 240, 25.0, tracks)
    return FaceChunk(frames=None, faces=faces)


def test_a_jobs_tracked_face_is_the_whole_videos_largest_face():
    """Kept chunk by chunk (the largest face of each frame and how often each track was it), the job's face
    track is the one selecting the largest face on the whole video's tracks gives, id included."""
    rng = np.random.default_rng(0)
    _chunk.frames = 0
    chunks = [_chunk(rng, 9, [0, 1]), _chunk(rng, 7, [1]), _chunk(rng, 9, [1, 2, 0]), _chunk(rng, 4, [])]
    kept = TrackedParts("clip.mp4", frames=20)  # fewer frames than it gets: the rows grow
    for c in chunks:
        ch, faces = cut_chunk(c, kept.rows, None, 1.6)
        # what crosses from the tracking process: one face's arrays, whatever the number of faces
        one_face = sum(getattr(faces.largest, f).nbytes for f in TRACK_FIELDS)
        assert len(pickle.dumps(faces)) < one_face + 2048
        kept.add(ch, faces)
    kept.check_faces()
    tracks, track = kept.result()

    whole = FaceTracks.concat([c.faces for c in chunks])
    (expected,) = select_faces(whole, "largest").tracks.values()
    assert track.track_id == expected.track_id and list(tracks.tracks) == [expected.track_id]
    for f in TRACK_FIELDS:
        np.testing.assert_array_equal(getattr(track, f), getattr(expected, f), err_msg=f)
    np.testing.assert_array_equal(tracks.indices, whole.indices)
    np.testing.assert_array_equal(tracks.pts_seconds, whole.pts_seconds)
    assert (tracks.width, tracks.height, tracks.fps) == (320, 240, 25.0)


def _piece(rng, start: int, stop: int, lips: bool = True) -> FitPiece:
    n = stop - start
    fit = TrackFit(params={"expression": rng.random((n, 5), dtype=np.float32),
                           "rotation": rng.random((n, 3), dtype=np.float32)},
                   cam=rng.random((n, 3), dtype=np.float32), center=np.array([1.0, 2.0]), scale=3.0,
                   landmarks2d=rng.random((n, 68, 2), dtype=np.float32),
                   landmarks3d=rng.random((n, 68, 3), dtype=np.float32), final_loss=float(stop), evaluator="x",
                   lips2d=rng.random((n, 40, 2), dtype=np.float32) if lips else None)
    return FitPiece(start, stop, fit)


@pytest.mark.parametrize("lips", [True, False])
def test_fit_pieces_are_gathered_in_order_into_one_fit(lips):
    rng = np.random.default_rng(1)
    pieces = [_piece(rng, a, b, lips) for a, b in [(0, 12), (12, 20), (20, 21), (21, 40)]]
    rows = FitRows(expect=40)
    for p in pieces:
        rows.add(p)
    fit = rows.fit()
    cat = lambda get: np.concatenate([get(p.fit) for p in pieces])  # noqa: E731
    for name in ("cam", "landmarks2d", "landmarks3d") + (("lips2d",) if lips else ()):
        np.testing.assert_array_equal(getattr(fit, name), cat(lambda f, n=name: getattr(f, n)), err_msg=name)
    assert fit.lips2d is None if not lips else fit.lips2d.shape == (40, 40, 2)
    for k in ("expression", "rotation"):
        np.testing.assert_array_equal(fit.params[k], cat(lambda f, k=k: f.params[k]))
    assert fit.final_loss == 40.0 and fit.scale == 3.0 and np.shares_memory(fit.cam, rows.rows["cam"].data)
    shuffled = assemble([pieces[2], pieces[0], pieces[3], pieces[1]])  # sorted by their rows
    np.testing.assert_array_equal(shuffled.landmarks2d, fit.landmarks2d)

    out_of_order = FitRows()
    out_of_order.add(pieces[0])
    with pytest.raises(ValueError, match="after 12 rows"):
        out_of_order.add(pieces[2])


def test_result_files_are_what_numpy_writes_without_a_copy_of_their_arrays(tmp_path):
    rng = np.random.default_rng(2)
    big = rng.random((8 * NPZ_PIECE // 12 + 5, 3), dtype=np.float32)  # 8 MB and a bit
    arrays = {"schema": np.array("spectre.face/1"), "track_id": np.array(3), "fps": np.array(29.97),
              "names": np.array(["jawOpen", "mouthClose"]), "valid": rng.random(50) < 0.5,
              "strided": np.arange(24.0).reshape(4, 6)[:, ::2], "empty": np.zeros((0, 68, 2), np.float32),
              "big": big}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    tracemalloc.start()
    try:
        write_npz(tmp_path / "x.npz", arrays)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    members = lambda z: [(i.filename, i.CRC, i.file_size, i.compress_size) for i in z.infolist()]  # noqa: E731
    with zipfile.ZipFile(tmp_path / "x.npz") as ours, zipfile.ZipFile(buf) as numpys:
        assert members(ours) == members(numpys), "the same members, bytes and compression as numpy's own writer"
    assert peak < 2 * NPZ_PIECE + (1 << 20), f"{peak / 2**20:.1f} MiB held to write an 8 MiB array"
    with np.load(tmp_path / "x.npz") as z:
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype and z[k].shape == v.shape and (z[k] == v).all(), k
