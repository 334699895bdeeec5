"""The fit judged by its render: fit configs on the sample clips, rendered and scored by independent judges.

    PYTHONPATH=src python bench/bench_fit_judge.py [--samples ../shared/samples] [--cache /tmp/fit-judge]
        [--judge dlib --judge mediapipe] [--only NAME ...] [--set 'label:key=value,key=value' ...]

Each ``--set`` is a fit configuration (``FitConfig`` keys; ``base`` = the defaults, always included).
Tracks and the judges' input landmarks are cached under ``--cache`` (the first run tracks every clip),
so a configuration costs one fit, one ``--layout render`` video and the judges' pass over it. Printed:
per clip and configuration, the judges' render-vs-input metrics (mouth NME, aperture r, width r, jitter of
render / input, closure recall, false closures), the ARKit curve sparsity (weights > 0.1 per frame) and the
fit seconds; then the means. The tracker's own landmarks vs the input (the ceiling) are printed as
``tracked``.

The fit is scheduled like the default ``spectre reconstruct`` (the overlapped pipeline): streamed by
:class:`~spectre.reconstruct.fit_stream.StreamFit` with the identity from the first
``pipeline.identity_span`` frames and windows of ``pipeline.window`` frames, on one thread.
``--schedule track`` uses the whole-track ``fit_track`` instead (``pipeline: {overlap: false}``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from spectre.faces.tracks_file import load_tracks, save_tracks  # noqa: E402

KEYS = ("nme_mouth", "aperture_r", "width_r", "jitter_pred", "jitter_ref", "closure_recall", "false_closure_rate")


def parse_set(text: str, base):
    label, _, body = text.partition(":")
    cfg = dataclasses.replace(base)
    for item in filter(None, body.split(",")):
        k, _, v = item.partition("=")
        old = getattr(cfg, k.strip())
        setattr(cfg, k.strip(), type(old)(float(v)) if isinstance(old, (int, float)) else v)
    return label, cfg


def cached_tracks(rec, path: Path, cache: Path):
    f = cache / f"{path.stem}.tracks.npz"
    if f.is_file():
        return load_tracks(f)
    out = rec.track(path)[1]
    save_tracks(out, f)
    return out


def input_landmarks(judge, path: Path, count: int, cache: Path):
    """The judge's landmarks of the input (and dlib's boxes), cached."""
    from spectre.evaluate.inputs import track_video_landmarks
    from spectre.evaluate.judge import VideoSide, _frames

    f = cache / f"{path.stem}.{judge.name}.npz"
    if f.is_file():
        d = np.load(f)
        return d["points"], d["boxes"]
    if judge.name == "dlib":
        boxes = np.full((count, 4), np.nan)
        pts = np.full((count, 68, 2), np.nan)
        frames = dict(_frames(VideoSide(path), count))
        for i, fr in frames.items():
            b = judge._box(fr)
            if b is not None:
                boxes[i] = b
        found = np.flatnonzero(np.isfinite(boxes[:, 0]))
        for i in range(count):
            if not np.isfinite(boxes[i, 0]) and found.size:
                j = found[np.argmin(np.abs(found - i))]
                if abs(j - i) <= 5:
                    boxes[i] = boxes[j]
        for i, fr in frames.items():
            if np.isfinite(boxes[i, 0]):
                pts[i] = judge._shape(fr, boxes[i])
    else:
        seq = track_video_landmarks(path)
        pts = np.where(seq.valid[:, None, None], seq.points, np.nan)[:count]
        boxes = np.zeros((count, 4))
    np.savez(f, points=pts, boxes=boxes)
    return pts, boxes


def render_landmarks(judge, video: Path, boxes: np.ndarray, count: int):
    from spectre.evaluate.inputs import track_video_landmarks
    from spectre.evaluate.judge import VideoSide, _frames

    if judge.name == "dlib":
        pts = np.full((count, 68, 2), np.nan)
        for i, fr in _frames(VideoSide(video), count):
            if np.isfinite(boxes[i, 0]):
                pts[i] = judge._shape(fr, boxes[i])
        return pts
    seq = track_video_landmarks(video)
    return np.where(seq.valid[:, None, None], seq.points, np.nan)[:count]


def fit_face(rec, track, tracks, schedule: str):
    """The face result of one track, fitted as the default job fits it (``stream``) or whole (``track``)."""
    import torch

    from spectre.reconstruct.fit_stream import StreamFit, assemble

    if schedule == "track":
        return rec.fit_face(track, tracks)
    torch.set_num_threads(1)  # as the overlapped pipeline's fit thread
    pc = rec.cfg.pipeline
    fitter = StreamFit(rec.model, rec.cfg.fit, rec.evaluator, span=pc.identity_span, window=pc.window)
    p478 = getattr(track, "points478", None)
    pieces = fitter.push(np.asarray(track.landmarks68, np.float64), np.asarray(track.valid, bool), p478)
    pieces += fitter.finish()
    return rec.face_from_fit(track, tracks, assemble(pieces))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", default=str(ROOT.parent / "shared" / "samples"))
    ap.add_argument("--cache", default="/tmp/spectre-fit-judge")
    ap.add_argument("--judge", action="append", choices=("dlib", "mediapipe"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--model", default="ict")
    ap.add_argument("--no-base", action="store_true", help="skip the default configuration (and the tracked rows)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--schedule", choices=("stream", "track"), default="stream",
                    help="stream: the overlapped pipeline's streamed fit (the default job); track: fit_track")
    args = ap.parse_args()

    from spectre.evaluate.judge import make_judges
    from spectre.evaluate.metrics import compare_landmarks
    from spectre.reconstruct.config import make_config
    from spectre.reconstruct.fit import FitConfig
    from spectre.reconstruct.reconstructor import Reconstructor
    from spectre.reconstruct.result import ReconstructionResult

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    judges = make_judges(args.judge or ["dlib", "mediapipe"])
    configs = ([] if args.no_base else [("base", FitConfig())]) + [parse_set(s, FitConfig()) for s in args.sets]
    clips = sorted(Path(args.samples).glob("*/*.mp4"))
    if args.only:
        clips = [c for c in clips if any(o in c.stem for o in args.only)]
    rows = []
    rec = Reconstructor(make_config(model=args.model, layout="render"))
    for clip in clips:
        tracks = cached_tracks(rec, clip, cache)
        tid = sorted(tracks.tracks)[0]
        track = tracks.tracks[tid]
        T = len(tracks.indices)
        ref = {j.name: input_landmarks(j, clip, T, cache) for j in judges}
        for label, cfg in configs:
            rec.cfg.fit = cfg
            rec._evaluator = None  # rebuilt for this config (with or without the dense face points)
            t0 = time.perf_counter()
            face = fit_face(rec, track, tracks, args.schedule)
            secs = time.perf_counter() - t0
            face.arkit = rec.arkit_weights(face.params)
            res = ReconstructionResult(video=clip, fps=float(tracks.fps or 25), width=int(tracks.width),
                                       height=int(tracks.height), num_frames=T, faces=[face], config=rec.cfg,
                                       timings={})
            out = cache / "runs" / label
            rec.write(res, out, overwrite=True)
            act = float((np.asarray(face.arkit)[np.asarray(face.valid, bool)] > 0.1).sum(1).mean())
            row = {"clip": clip.stem, "config": label, "fit_s": secs, "arkit_active": act}
            for j in judges:
                inp, boxes = ref[j.name]
                ren = render_landmarks(j, out / f"{clip.stem}.mp4", boxes, T)
                ok = np.isfinite(inp).all((1, 2)) & np.isfinite(ren).all((1, 2))
                m = compare_landmarks(ren, inp, ok).as_dict()
                row[j.name] = {k: m[k] for k in KEYS}
                if label == "base":
                    tr = np.asarray(face.tracked68, np.float64)
                    ok2 = np.isfinite(inp).all((1, 2)) & np.isfinite(tr).all((1, 2))
                    mt = compare_landmarks(tr, inp, ok2).as_dict()
                    rows.append({"clip": clip.stem, "config": "tracked", "fit_s": float("nan"),
                                 "arkit_active": float("nan"), j.name: {k: mt[k] for k in KEYS}})
            rows.append(row)
            print(fmt_row(row, judges), flush=True)
    print("\nmeans")
    for label in ["tracked"] + [c[0] for c in configs]:
        sel = [r for r in rows if r["config"] == label]
        mean = {"clip": "MEAN", "config": label, "fit_s": float(np.nanmean([r["fit_s"] for r in sel])),
                "arkit_active": float(np.nanmean([r["arkit_active"] for r in sel]))}
        for j in judges:
            mean[j.name] = {k: float(np.nanmean([r[j.name][k] for r in sel if j.name in r])) for k in KEYS}
        print(fmt_row(mean, judges))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def fmt_row(row, judges) -> str:
    parts = [f"{row['clip'][:22]:<22} {row['config']:<10} fit {row['fit_s']:5.2f}s arkit {row['arkit_active']:5.2f}"]
    for j in judges:
        m = row.get(j.name)
        if m:
            parts.append(f"{j.name[:2]} nme {m['nme_mouth']:.4f} ap {m['aperture_r']:.3f} w {m['width_r']:.3f} "
                         f"jit {m['jitter_pred']:.4f}/{m['jitter_ref']:.4f} rec {m['closure_recall']:.2f} "
                         f"fc {m['false_closure_rate']:.2f}")
    return " | ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
