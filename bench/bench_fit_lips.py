"""Cost of the dense MediaPipe lip term in the fit: frames/s of ``fit_track`` with and without it (same
tracks, same process), plus the mouth NME and dense lip distance each gives.

    PYTHONPATH=src python bench/bench_fit_lips.py [--quick] [--samples DIR]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one LRS3 and one MEAD clip, one repeat")
    shared = Path(os.environ.get("SPECTRE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--samples", default=str(shared / "samples"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from spectre.faces.landmarks import IBUG68_LEFT_EYE, IBUG68_MOUTH, IBUG68_RIGHT_EYE
    from spectre.faces.track import track_video
    from spectre.models.ict import ICTFaceModel
    from spectre.reconstruct.evaluator import PointEvaluator
    from spectre.reconstruct.fit import FitConfig, fit_track
    from spectre.reconstruct.mp_lips import MP_LIPS

    clips = sorted(Path(args.samples).rglob("*.mp4"))
    if args.quick:
        clips = [c for c in clips if "LRS3" in str(c)][:1] + [c for c in clips if "MEAD" in str(c)][:1]
    repeats = 1 if args.quick else args.repeats
    model = ICTFaceModel.from_store().eval()
    ev = PointEvaluator(model)
    weight = FitConfig().dense_lips
    print(f"{'clip':28s} {'frames':>6s} | {'fps 68 only':>11s} {'fps +lips':>9s} | "
          f"{'mouth NME':>17s} | {'lip dist/IOD':>17s}")
    for clip in clips:
        tr = track_video(clip).largest_per_frame()
        lm = np.asarray(tr.landmarks68, np.float64)
        p478 = np.asarray(tr.points478, np.float64)
        valid = np.asarray(tr.valid, bool)
        v = valid & np.isfinite(lm).all((1, 2)) & np.isfinite(p478[:, list(MP_LIPS)]).all((1, 2))
        iod = np.linalg.norm(lm[v, IBUG68_RIGHT_EYE].mean(1) - lm[v, IBUG68_LEFT_EYE].mean(1), axis=-1)
        fps, nme, dist = {}, {}, {}
        for w in (0.0, weight):
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                fit = fit_track(model, np.nan_to_num(lm), valid, FitConfig(dense_lips=w), evaluator=ev, points478=p478)
                best = min(best, time.perf_counter() - t)
            fps[w] = len(lm) / best
            nme[w] = (np.linalg.norm(fit.landmarks2d[v, IBUG68_MOUTH] - lm[v, IBUG68_MOUTH], axis=-1).mean(-1) / iod).mean()
            dist[w] = (np.linalg.norm(fit.lips2d[v] - p478[v][:, list(MP_LIPS), :2], axis=-1).mean(-1) / iod).mean()
        print(f"{clip.stem[:28]:28s} {len(lm):6d} | {fps[0.0]:11.1f} {fps[weight]:9.1f} | "
              f"{nme[0.0]:.4f} -> {nme[weight]:.4f} | {dist[0.0]:.4f} -> {dist[weight]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
