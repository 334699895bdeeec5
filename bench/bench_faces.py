"""Throughput of the face front end on the sample clips: decode alone (baseline, same run) vs
decode + MediaPipe mesh + detection + tracking, a few tracker settings, MediaPipe mesh alone
(decode excluded, the reference figure), the face-crop warps, and the One-Euro jitter effect.
Each clip is decoded --loops times in a row so per-video start-up is amortised; it is included.

    PYTHONPATH=src python bench/bench_faces.py [--quick] [--samples ../shared/samples]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


from spectre.faces import (  # noqa: E402
    FaceTracker,
    OneEuroConfig,
    TrackerConfig,
    face_crop_transform,
    landmark_jitter,
    warp_crop,
    warp_crop_fast,
)
from spectre.faces.crop import FACE_CROP_SCALE  # noqa: E402
from spectre.io import open_video  # noqa: E402
from spectre.io.video import VideoSource  # noqa: E402

DEFAULT_SAMPLES = Path(os.environ.get("SPECTRE_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "samples"


def _fps(n, seconds):
    return n / seconds if seconds > 0 else float("inf")


class _Looped(VideoSource):
    """The clip decoded ``loops`` times in a row (frame indices continue): long enough that per-video
    start-up (MediaPipe graph initialisation, ~0.3 s) does not dominate the short sample clips."""

    def __init__(self, src: VideoSource, loops: int):
        super().__init__(src.path, src.kind, src.fps, src.num_frames * loops, src.width, src.height, src.rotation,
                         src.has_audio, src.audio_stream_index, src.duration * loops)
        self._src, self._loops = src, loops

    def iter_frames(self):
        k = 0
        for _ in range(self._loops):
            for _, _t, frame in self._src.iter_frames():
                yield k, k / self.fps, frame
                k += 1


def bench_clip(path: Path, quick: bool, loops: int) -> list[tuple[str, str, float, str]]:
    rows = []
    src = _Looped(open_video(path), loops)
    label = f"{path.parent.name} {src.width}x{src.height}"
    t = time.perf_counter()
    n = sum(len(c) for c in src.iter_chunks(32))
    base = _fps(n, time.perf_counter() - t)
    rows.append((label, "decode only (baseline)", base, "1.00x"))

    configs = [("track default (max_faces=4)", TrackerConfig())]
    if not quick:
        configs += [("track max_faces=1", TrackerConfig(max_faces=1)),
                    ("track max_faces=1, detect_every=5", TrackerConfig(max_faces=1, detect_every=5)),
                    ("track + One-Euro", TrackerConfig(smoothing=OneEuroConfig()))]
    results = {}
    for name, cfg in configs:
        tracker = FaceTracker(cfg)
        t = time.perf_counter()
        tracks = tracker.track(src)
        fps = _fps(n, time.perf_counter() - t)
        results[name] = tracks
        rows.append((label, "decode + " + name, fps, f"{fps / base:.2f}x"))

    frames = src._src.read().frames
    import mediapipe as mp

    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    mesh.process(frames[0])
    t = time.perf_counter()
    for _ in range(loops):
        for f in frames:
            mesh.process(f)
    rows.append((label, "MediaPipe mesh alone, max_faces=1 (no decode)", _fps(loops * len(frames), time.perf_counter() - t), "-"))
    mesh.close()

    tr = next(iter(results["track default (max_faces=4)"].tracks.values()), None)
    if tr is not None and tr.valid.all():
        tforms = face_crop_transform(tr.landmarks68[: len(frames)], FACE_CROP_SCALE)
        k = min(len(frames), 8 if quick else 32)
        for name, fn in [("crop warp exact (numpy)", lambda: warp_crop(frames[:k], tforms[:k])),
                         ("crop warp fast cv2", lambda: warp_crop_fast(frames[:k], tforms[:k], backend="cv2")),
                         ("crop warp fast torch", lambda: warp_crop_fast(frames[:k], tforms[:k], backend="torch"))]:
            fn()  # warm-up (lazy initialisation of torch / cv2)
            t = time.perf_counter()
            fn()
            rows.append((label, name, _fps(k, time.perf_counter() - t), "-"))
        if "track + One-Euro" in results:
            sm = next(iter(results["track + One-Euro"].tracks.values()))
            m = len(frames)  # first pass only (the loop restarts the motion)
            rows.append((label, "jitter raw -> One-Euro", landmark_jitter(tr.landmarks68[:m]),
                         f"-> {landmark_jitter(sm.landmarks68[:m]):.4f}"))
    return rows


def _clips(samples: Path, quick: bool) -> list[Path]:
    clips = sorted(samples.glob("LRS3/*.mp4")) + sorted(samples.glob("MEAD/*.mp4"))
    lrs3 = [c for c in clips if c.parent.name == "LRS3"]
    mead = [c for c in clips if c.parent.name == "MEAD"]
    return (lrs3[:1] + mead[:1]) if quick else (lrs3[:2] + mead[:2])


def run(quick: bool = True, samples: str | Path | None = None, loops: int | None = None) -> list[dict]:
    """Rows for the harness: decode, decode + detection/landmarks (baseline: decode alone), crop
    warps (baseline: the exact numpy warp), per sample clip."""
    root = Path(samples) if samples else DEFAULT_SAMPLES
    clips = _clips(root, quick)
    if not clips:
        raise FileNotFoundError(f"no sample clips under {root}")
    FaceTracker().track(VideoSource.from_array(open_video(clips[0]).read(3).frames))  # one-time start-up
    rows = []
    for clip in clips:
        got = bench_clip(clip, quick, loops or (2 if quick else 3))
        decode = next(fps for _, stage, fps, _ in got if stage.startswith("decode only"))
        exact = next((fps for _, stage, fps, _ in got if stage == "crop warp exact (numpy)"), None)
        for label, stage, fps, _ in got:
            if stage.startswith("jitter"):
                continue
            if stage.startswith("decode only"):
                row = {"stage": "decode", "case": label, "value": fps, "baseline": None}
            elif stage.startswith("decode + "):
                row = {"stage": "detection+landmarks", "case": f"{label} {stage[9:]}", "value": fps,
                       "baseline": decode, "baseline_name": "decode only"}
            elif stage.startswith("crop warp") and exact is not None:
                row = {"stage": "crop", "case": f"{label} {stage[10:]}", "value": fps, "baseline": exact,
                       "baseline_name": "exact numpy warp"}
            else:
                row = {"stage": "detection+landmarks", "case": f"{label} {stage}", "value": fps, "baseline": decode,
                       "baseline_name": "decode only"}
            row["unit"] = "frames/s"
            rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one LRS3 and one MEAD clip, default tracker only")
    ap.add_argument("--loops", type=int, default=None, help="decode each clip N times in a row (default 3, quick 2)")
    ap.add_argument("--samples", default=str(DEFAULT_SAMPLES))
    args = ap.parse_args()
    root = Path(args.samples)
    clips = _clips(root, args.quick)
    if not clips:
        print(f"no sample clips under {root}", file=sys.stderr)
        return 2
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    # one-time process start-up (imports, TFLite/XNNPACK initialisation: seconds) is not per-video cost
    FaceTracker().track(VideoSource.from_array(open_video(clips[0]).read(3).frames))
    print(f"# bench_faces  load average {load:.2f}  cpus {os.cpu_count()}")
    print(f"{'clip':<20} {'stage':<48} {'frames/s':>10} {'vs decode':>12}")
    for clip in clips:
        loops = args.loops or (2 if args.quick else 3)
        for label, stage, fps, ratio in bench_clip(clip, args.quick, loops):
            print(f"{label:<20} {stage:<48} {fps:>10.4g} {ratio:>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
