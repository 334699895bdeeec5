"""End-to-end speed of `spectre reconstruct` per stage, and memory on a long video.

    PYTHONPATH=src python bench/bench_reconstruct.py [--quick] [--samples ../shared/samples] [--no-learned]

Tables:
1. fit backend, per stage (frames/s): decode alone, tracking (decode + MediaPipe landmarks), the landmark
   fit, render (grid layout into the input frame, H.264 + audio), npz/csv write; "no render" = the default
   path without the video (track + fit + write), on a 224² LRS3 and a 1080p MEAD sample.
2. learned backend encoders (DECA + perceptual encoder over the official chunks) on 224 crops: fp32 eager
   (baseline, same run) vs the fast inference mode (folded BN, channels_last, bf16 where native);
   synthetic golden weights (speed does not depend on the values).
3. peak RSS of the fit path (no render) on the LRS3 sample and on a long video built by concatenating it
   (each in a fresh process): it must stay flat.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402


def fps(n, s):
    return n / s if s > 0 else float("inf")


def bench_fit(path: Path, rec, out_dir: Path) -> list[tuple[str, str, float]]:
    from spectre.io.video import open_video
    from spectre.reconstruct.outputs import write_render_video

    src = open_video(path)
    label = f"{path.parent.name} {src.width}x{src.height}"
    t = time.perf_counter()
    n = sum(len(c) for c in src.iter_chunks(32))
    rows = [(label, "decode", fps(n, time.perf_counter() - t))]
    t0 = time.perf_counter()
    result = rec.process(path)
    total = time.perf_counter() - t0
    n = result.num_frames
    rows.append((label, "track (decode + landmarks)", fps(n, result.timings["track"])))
    rows.append((label, "fit", fps(n, result.timings["fit"])))
    t = time.perf_counter()
    rec.write(result, out_dir, overwrite=True)
    w = time.perf_counter() - t
    rows.append((label, "write npz + csv", fps(n, w)))
    rows.append((label, "end to end, no render", fps(n, total + w)))
    t = time.perf_counter()
    write_render_video(rec.model, result, out_dir / "render.mp4", "grid", overwrite=True)
    r = time.perf_counter() - t
    rows.append((label, "render grid + encode", fps(n, r)))
    rows.append((label, "end to end with render", fps(n, total + w + r)))
    return rows


def bench_learned(frames: int) -> list[tuple[str, str, float]]:
    import torch

    shared = Path(os.environ.get("SPECTRE_SHARED", ROOT.parent / "shared"))
    golden = shared / "golden"
    if not golden.exists():
        return [("learned", f"skipped: {golden} not found", float("nan"))]
    sys.path.insert(0, str(golden))
    import golden_weights as gw  # noqa: E402

    from spectre.device import Runtime
    from spectre.nets.checkpoints import deca_from_state_dict, perceptual_from_state_dict
    from spectre.reconstruct.config import LearnedConfig
    from spectre.reconstruct.learned import LearnedBackend

    keys = json.loads((golden / "spectre_model_keys.json").read_text())
    sd = {p: {k: torch.from_numpy(gw.det_tensor(f"{p}.{k}", tuple(s))) for k, s in keys[p].items()}
          for p in ("E_flame", "E_expression")}
    images = torch.rand(frames, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rows = []
    base = None
    for name, fast, precision in (("fp32 eager (baseline)", False, "fp32"), ("fast, fp32", True, "fp32"),
                                  ("fast, auto precision", True, "auto")):
        nets = (deca_from_state_dict(sd["E_flame"]), perceptual_from_state_dict(sd["E_expression"]))
        runtime = Runtime.create("cpu", precision)
        be = LearnedBackend(None, None, runtime, LearnedConfig(fast=fast), networks=nets)
        be.encode(8, lambda pos: images[torch.as_tensor(pos) % frames])  # warm-up
        t = time.perf_counter()
        be.encode(frames, lambda pos: images[torch.as_tensor(pos)])
        f = fps(frames, time.perf_counter() - t)
        base = base or f
        rows.append(("learned encoders 224", f"{name} [{runtime.precision}]", f))
    return rows


RSS_SNIPPET = r"""
import sys
sys.path.insert(0, {src!r})
from spectre.reconstruct.config import make_config
from spectre.reconstruct.reconstructor import Reconstructor
rec = Reconstructor(make_config(layout="none"))
r = rec.process({video!r})
# VmHWM (not ru_maxrss, which Linux carries over from the parent across exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(r.num_frames, int(hwm) / 1024, r.num_frames / r.timings["fit"],
      r.num_frames / r.timings["track"])
"""


def make_long_video(src: Path, repeats: int, out: Path) -> Path:
    from spectre.io.video import open_video
    from spectre.io.writer import VideoWriter

    s = open_video(src)
    with VideoWriter(out, s.fps, (s.width, s.height), overwrite=True, preset="ultrafast") as w:
        for _ in range(repeats):
            for ch in s.iter_chunks(32):
                for f in ch.frames:
                    w.write(f)
    return out


def peak_rss(video: Path) -> tuple[int, float, float, float]:
    """(frames, peak RSS MB, fit fps, track fps) of the fit path in a fresh process."""
    code = RSS_SNIPPET.format(src=str(ROOT / "src"), video=str(video))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, mb, fit_fps, track_fps = out.stdout.strip().splitlines()[-1].split()
    return int(n), float(mb), float(fit_fps), float(track_fps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="LRS3 only, short learned run, shorter long video")
    ap.add_argument("--samples", default=str(ROOT.parent / "shared" / "samples"))
    ap.add_argument("--no-learned", action="store_true")
    args = ap.parse_args()
    samples = Path(args.samples)
    lrs3 = sorted((samples / "LRS3").glob("*.mp4"))
    mead = sorted((samples / "MEAD").glob("*.mp4"))
    if not lrs3:
        print(f"no samples under {samples}", file=sys.stderr)
        return 2
    print(f"load: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    from spectre.reconstruct.config import make_config
    from spectre.reconstruct.reconstructor import Reconstructor

    rec = Reconstructor(make_config(layout="none"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = [lrs3[0]] + ([] if args.quick or not mead else [mead[0]])
        rec.process(lrs3[0])  # warm-up (MediaPipe graphs, model)
        for clip in clips:
            rows += bench_fit(clip, rec, Path(tmp))
        if not args.no_learned:
            rows += bench_learned(25 if args.quick else 100)
        print(f"\n{'clip':<24} {'stage':<38} {'frames/s':>9}")
        for clip, stage, f in rows:
            print(f"{clip:<24} {stage:<38} {f:9.1f}")
        learned = [r for r in rows if r[0].startswith("learned") and np.isfinite(r[2])]
        if learned:
            print(f"learned fast / fp32 eager speed-up: {learned[-1][2] / learned[0][2]:.2f}x")
        repeats = 4 if args.quick else 20
        long_video = make_long_video(lrs3[0], repeats, Path(tmp) / "long.mp4")
        n1, m1, f1, t1 = peak_rss(lrs3[0])
        n2, m2, f2, t2 = peak_rss(long_video)
        print(f"\nfit path, no render, fresh process: {n1} frames: fit {f1:.1f} fps, track {t1:.1f} fps | "
              f"{n2} frames (concatenated): fit {f2:.1f} fps, track {t2:.1f} fps")
        print(f"peak RSS: {n1} frames {m1:.0f} MB | {n2} frames {m2:.0f} MB "
              f"(ratio {m2 / m1:.2f} for {n2 / max(n1, 1):.0f}x the frames)")
    rec.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
