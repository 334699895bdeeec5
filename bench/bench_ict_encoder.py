"""Speed of the learned ICT encoder (``reconstruct --backend learned --model ict``) next to the fit.

    PYTHONPATH=src python bench/bench_ict_encoder.py [--quick] [--threads 2] [--weights CKPT]

Rows (each with a baseline measured in the same run):

1. encoder stage: the face encoder over the official chunk plan (MobileNetV2 features once per frame,
   temporal head per chunk) on crops of the checkpoint's size, default ``auto`` precision (bf16 where the
   CPU has it) through ``prepare_for_inference``, vs fp32 eager;
2. identity stage (the fit's, fixed cost per track);
3. end to end (decode + tracking + backend + npz/csv, no video) on the LRS3 sample (and a MEAD 1080p one
   unless quick), learned ICT vs the fit backend.

Without ``--weights`` a randomly initialised 112-px encoder is saved and used: the speed does not depend on
the weight values.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = Path(os.environ.get("SPECTRE_SHARED", ROOT.parent / "shared"))


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _random_checkpoint(path: Path, size: int = 112) -> Path:
    import torch

    from spectre.models import load_face_model
    from spectre.nets.face_encoder import FaceCodeEncoder
    from spectre.train.encoder_step import encoder_spec_for

    torch.manual_seed(0)
    net = FaceCodeEncoder(encoder_spec_for(load_face_model("ict"), size, 16))
    torch.save(net.checkpoint_state(), path)
    return path


def encoder_rows(weights: Path, frames: int, repeat: int) -> list[dict]:
    import torch

    from spectre.device import Runtime
    from spectre.models import load_face_model
    from spectre.reconstruct.config import LearnedConfig
    from spectre.reconstruct.encoder_backend import EncoderBackend

    model = load_face_model("ict")
    rt_auto = Runtime.create("cpu", "auto")
    size = None
    rates = {}
    for name, fast, rt in (("fp32 eager", False, Runtime.create("cpu", "fp32")),
                           (f"fast path, auto = {rt_auto.precision}", True, rt_auto)):
        be = EncoderBackend(model, weights, rt, LearnedConfig(fast=fast))
        size = be.spec.image_size
        crops = torch.rand(frames, 3, size, size)
        be.encode(min(frames, 20), lambda pos: crops[torch.as_tensor(pos)])  # warm-up (oneDNN kernels)
        c0 = time.process_time()
        t = _timed(lambda: be.encode(frames, lambda pos: crops[torch.as_tensor(pos)]), repeat)
        cpu = (time.process_time() - c0) / repeat
        rates[name] = (frames / t, frames / cpu * torch.get_num_threads())
    base, base_cpu = rates["fp32 eager"]
    rows = []
    for name, (r, r_cpu) in rates.items():
        first = name == "fp32 eager"
        rows.append({"stage": "learned ICT", "case": f"encoder stage {size}px, {frames} frames, {name}",
                     "unit": "frames/s", "value": r, "baseline": None if first else base,
                     "baseline_name": "fp32 eager"})
        # on a shared machine wall time depends on the load: frames per CPU-second of this process, times
        # its thread count, is what the same threads would give on idle cores (spin-waits count, so low)
        rows.append({"stage": "learned ICT", "case": f"encoder stage {size}px, {name}, per CPU-s x threads",
                     "unit": "frames/s", "value": r_cpu, "baseline": None if first else base_cpu,
                     "baseline_name": "fp32 eager (same measure)"})
    return rows


def identity_row(weights: Path, clip: Path) -> dict:
    import numpy as np

    from spectre.reconstruct.config import make_config
    from spectre.reconstruct.encoder_backend import EncoderBackend
    from spectre.reconstruct.reconstructor import Reconstructor

    rec = Reconstructor(make_config(backend="learned", model="ict", layout="none", learned={"weights": str(weights)}))
    _, tracks = rec.track(clip)
    tr = tracks.tracks[sorted(tracks.tracks)[0]]
    be = EncoderBackend(rec.model, weights, rec.runtime, rec.cfg.learned, rec.cfg.fit, rec.evaluator)
    lm = np.nan_to_num(np.asarray(tr.landmarks68, np.float64))
    t = _timed(lambda: be.identity(lm, np.asarray(tr.valid, bool), tr.points478))
    rec.close()
    return {"stage": "learned ICT", "case": f"identity stage (fit's, per track), {clip.parent.name}", "unit": "s",
            "value": t, "baseline": None, "lower_is_better": True}


def e2e_rows(weights: Path, clip: Path, label: str) -> list[dict]:
    from spectre.io import open_video
    from spectre.reconstruct import reconstruct
    from spectre.reconstruct.config import make_config

    n = open_video(clip).num_frames
    reconstruct(clip, None, backend="fit", layout="none")  # warm-up: model load, MediaPipe start-up
    learned_cfg = make_config(layout="none", backend="learned", model="ict", learned={"weights": str(weights)})
    with tempfile.TemporaryDirectory() as d:
        reconstruct(clip, None, config=learned_cfg)  # warm-up of the encoder
        t_fit = _timed(lambda: reconstruct(clip, Path(d) / "fit", backend="fit", layout="none", overwrite=True))
        t_l = _timed(lambda: reconstruct(clip, Path(d) / "l", config=learned_cfg, overwrite=True))
    return [{"stage": "learned ICT", "case": f"end to end {label} {n} frames, no video: learned ICT",
             "unit": "frames/s", "value": n / t_l, "baseline": n / t_fit, "baseline_name": "fit backend, same clip"}]


def run(quick: bool = True, weights: str | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        ck = Path(weights) if weights else _random_checkpoint(Path(d) / "enc.pt")
        rows = encoder_rows(ck, 100 if quick else 400, 2 if quick else 3)
        lrs3 = sorted((SHARED / "samples" / "LRS3").glob("*.mp4"))
        mead = sorted((SHARED / "samples" / "MEAD").glob("*.mp4"))
        if lrs3:
            rows.append(identity_row(ck, lrs3[0]))
            rows += e2e_rows(ck, lrs3[0], "LRS3 224²")
        if mead and not quick:
            rows += e2e_rows(ck, mead[0], "MEAD 1080p")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--weights", help="a face-encoder checkpoint (default: a random 112-px encoder)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    for r in run(args.quick, args.weights):
        b = r.get("baseline")
        ratio = "" if not b else f"  ({(b / r['value'] if r.get('lower_is_better') else r['value'] / b):.2f}x " \
                                 f"vs {r.get('baseline_name')} {b:.3g})"
        print(f"{r['case']:70} {r['value']:9.3g} {r['unit']}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
