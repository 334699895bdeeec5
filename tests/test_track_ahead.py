"""TrackAhead: tracking started before its consumer gives what a fresh tracker gives, stays within its
memory bound while nobody reads it, reports the video's errors to the consumer and stops when closed."""
from __future__ import annotations

import time

import numpy as np
import pytest
from proc_helpers import wait_until

from spectre.errors import InputError
from spectre.faces.ahead import TrackAhead
from spectre.faces.track import FaceTracker, FaceTracks
from spectre.io.video import open_video


def _tracks(chunks) -> FaceTracks:
    return FaceTracks.concat([c.faces for c in chunks])


def test_taken_stream_equals_a_fresh_stream(short_clip):
    with FaceTracker() as tracker:
        fresh = _tracks(list(tracker.stream(open_video(short_clip), chunk_size=64)))
    ahead = TrackAhead(short_clip, chunk_size=5)  # other chunking than the fresh stream
    try:
        wait_until(lambda: ahead._done)  # tracked before anybody asks
        assert ahead.matches(short_clip) and not ahead.matches(short_clip.with_name("other.mp4"))
        stream, tracker = ahead.take()
        got = _tracks(list(stream))
        tracker.close()
    finally:
        ahead.close()
    np.testing.assert_array_equal(got.indices, fresh.indices)
    assert sorted(got.tracks) == sorted(fresh.tracks)
    for tid, tr in fresh.tracks.items():
        np.testing.assert_array_equal(got.tracks[tid].valid, tr.valid)
        np.testing.assert_array_equal(got.tracks[tid].landmarks68, tr.landmarks68)
        np.testing.assert_array_equal(got.tracks[tid].points478, tr.points478)
    assert not ahead.matches(short_clip)  # taken once


def test_waits_within_its_memory_bound_until_read(short_clip):
    w, h = open_video(short_clip).width, open_video(short_clip).height
    frame = w * h * 3
    ahead = TrackAhead(short_clip, chunk_size=4, max_bytes=6 * frame)  # 4-frame chunks, room for one
    try:
        wait_until(lambda: len(ahead._chunks) >= 1)
        time.sleep(0.5)
        assert len(ahead._chunks) == 1 and ahead._bytes == 4 * frame and not ahead._done
        stream, tracker = ahead.take()
        n = sum(len(c.faces.indices) for c in stream)  # reading lets it go on to the end
        tracker.close()
    finally:
        ahead.close()
    assert n == open_video(short_clip).num_frames


def test_the_videos_error_reaches_the_consumer(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    ahead = TrackAhead(bad)
    try:
        stream, tracker = ahead.take()
        with pytest.raises(InputError):
            next(iter(stream))
        tracker.close()
    finally:
        ahead.close()


def test_close_stops_tracking_and_closes_the_tracker(short_clip):
    ahead = TrackAhead(short_clip, chunk_size=4, max_bytes=1)
    wait_until(lambda: len(ahead._chunks) >= 1)
    ahead.close()
    assert not ahead._thread.is_alive()
    assert ahead.tracker is None and not ahead.matches(short_clip)
    ahead.close()  # idempotent


def test_closing_the_taken_stream_stops_tracking(short_clip):
    ahead = TrackAhead(short_clip, chunk_size=4, max_bytes=1)
    stream, tracker = ahead.take()
    next(stream)
    stream.close()
    assert not ahead._thread.is_alive()
    tracker.close()
