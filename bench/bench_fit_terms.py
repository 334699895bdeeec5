"""Speed of the fit stage with the render-quality terms (lip contact, L1 priors, dense face) against the
fit without them, measured in the same process, alternating, on the same tracks.

    PYTHONPATH=src python bench/bench_fit_terms.py [--samples ../shared/samples] [--repeats 3] [--only NAME ...]

"without" = the new terms at 0 (``lip_contact``, ``lip_cross``, ``expression_l1``, ``implausible_l1``,
``dense_face``) and an evaluator without the 478 surface points, i.e. the fit as it was before them;
"with" = the defaults. Prints per clip the median fit seconds of each and the speed ratio (with / without
frames per second; 1.0 = as fast).
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

from spectre.faces.tracks_file import load_tracks  # noqa: E402

OFF = dict(lip_contact=0.0, lip_cross=0.0, expression_l1=0.0, implausible_l1=0.0, dense_face=0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", default=str(Path(os.environ.get("SPECTRE_SHARED", ROOT.parent / "shared")) / "samples"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--cache", help="folder of <clip>.tracks.npz written by bench_fit_judge.py (skips tracking)")
    args = ap.parse_args()

    import torch

    from spectre.faces.track import track_video
    from spectre.models.ict import ICTFaceModel
    from spectre.reconstruct.evaluator import PointEvaluator
    from spectre.reconstruct.fit import FitConfig, fit_track

    torch.set_num_threads(1)
    model = ICTFaceModel.from_store().eval()
    new, old = FitConfig(), dataclasses.replace(FitConfig(), **OFF)
    ev_with = PointEvaluator(model, dense=new.dense_face > 0)
    ev_without = PointEvaluator(model)
    clips = sorted(Path(args.samples).glob("*/*.mp4"))
    if args.only:
        clips = [c for c in clips if any(o in c.stem for o in args.only)]
    print(f"{'clip':<28} {'frames':>6} {'without s':>9} {'with s':>8} {'speed ratio':>11}")
    ratios = []
    for clip in clips:
        cached = Path(args.cache) / f"{clip.stem}.tracks.npz" if args.cache else None
        if cached is not None and cached.is_file():
            tr = load_tracks(cached).largest_per_frame()
        else:
            tr = track_video(clip).largest_per_frame()
        lm, valid = np.nan_to_num(np.asarray(tr.landmarks68, np.float64)), np.asarray(tr.valid, bool)
        pts = np.asarray(tr.points478, np.float64)
        times = {"without": [], "with": []}
        for _ in range(args.repeats):
            for key, cfg, ev in (("without", old, ev_without), ("with", new, ev_with)):
                t0 = time.perf_counter()
                fit_track(model, lm, valid, cfg, evaluator=ev, points478=pts)
                times[key].append(time.perf_counter() - t0)
        a, b = float(np.median(times["without"])), float(np.median(times["with"]))
        ratios.append(a / b)
        print(f"{clip.stem[:28]:<28} {len(lm):>6} {a:>9.2f} {b:>8.2f} {a / b:>11.2f}", flush=True)
    print(f"{'geometric mean':<28} {'':>6} {'':>9} {'':>8} {float(np.exp(np.mean(np.log(ratios)))):>11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
