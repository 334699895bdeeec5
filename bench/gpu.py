"""GPU throughput: learned-path inference, renderer, fit solver (and a training step when ``spectre.train``
exists), each next to a baseline measured in the same run.

    PYTHONPATH=src python bench/gpu.py --data DIR [--device cuda] [--quick] [--json PATH]

Needs only torch, numpy and scipy (no PyAV, MediaPipe or shared folder). ``--data DIR`` holds copies of
the golden helpers: golden_weights.py, make_fake_flame.py, head_template.obj, landmark_embedding.npy and
the *_keys.json files; deterministic golden-style weights and the synthetic FLAME are built from them
(the numbers are speeds; the weights' values do not matter).

  learned   DECA E_flame + E_expression + FLAME decode on clips x 50 frames, fp32 eager (baseline) vs
            reduced precision (bf16/fp16 autocast) + folded BN + channels_last; the batch (clips per call)
            is chosen from free GPU memory
  render    grey shape render (FLAME and ICT), fps at 224² vs the renderer before the speed work
  fit       landmark fit of a synthetic ICT track, fast evaluator vs the full-forward one
  train     one optimisation step of ``spectre.train`` (skipped while that module does not exist)
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

FRAMES_PER_CLIP = 50


def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> float:
    """Best wall seconds of ``repeats`` calls after one warm-up call."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def build_assets(data: Path, dest: Path) -> Path:
    """An asset folder with the synthetic FLAME and the FLAME-topology support files."""
    make = _import_file(data / "make_fake_flame.py", "make_fake_flame")
    (dest / "flame").mkdir(parents=True, exist_ok=True)
    (dest / "spectre_data").mkdir(exist_ok=True)
    make.write(make.build(str(data / "head_template.obj")), str(dest / "flame" / "generic_model.pkl"))
    for name in ("head_template.obj", "landmark_embedding.npy"):
        shutil.copy(data / name, dest / "spectre_data" / name)
    return dest


def build_encoders(data: Path):
    """DECA E_flame and E_expression with deterministic golden-style weights."""
    from spectre.nets.checkpoints import deca_from_state_dict, perceptual_from_state_dict

    gw = _import_file(data / "golden_weights.py", "golden_weights")

    def sd(keys: dict, prefix: str) -> dict:
        return {k: torch.from_numpy(np.asarray(gw.det_tensor(prefix + k, tuple(s)))) for k, s in keys.items()}

    deca = deca_from_state_dict(sd(json.loads((data / "deca_encoder_keys.json").read_text())["keys"], "E_flame."))
    perc = perceptual_from_state_dict(
        sd(json.loads((data / "spectre_model_keys.json").read_text())["E_expression"], "E_expression."))
    return deca.eval(), perc.eval()


def _clips_per_call(device: torch.device, quick: bool) -> int:
    """Clips of 50 frames per call: about 1.5 GB of activations per clip at fp32 (ResNet-50 + MobileNetV2
    at 224²), capped at 16; fewer on CPU / in quick mode."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    clips = int(free * 0.6 // (1.5 * 2 ** 30))
    return max(1, min(4 if quick else 16, clips))


def bench_learned(data: Path, assets: Path, device: torch.device, quick: bool) -> list[dict]:
    from spectre.assets import AssetStore
    from spectre.device import Runtime
    from spectre.models import load_face_model
    from spectre.nets.deca import split_deca_params
    from spectre.nets.fast import prepare_for_inference

    deca, perc = build_encoders(data)
    deca, perc = deca.to(device), perc.to(device)
    flame = load_face_model("flame", AssetStore(assets)).to(device)
    clips = _clips_per_call(device, quick)
    frames = FRAMES_PER_CLIP if not (quick and device.type != "cuda") else 8
    images = torch.rand(clips, frames, 3, 224, 224, device=device)

    def decode(codes: dict, exp_res, jaw_res):
        n = codes["shape"].shape[0]
        p = flame.default_params(n, device=device)
        p["shape"] = codes["shape"].float()
        p["expression"] = (codes["exp"] + exp_res).float()
        p["global_pose"] = codes["pose"][:, :3].float()
        p["jaw_pose"] = (codes["pose"][:, 3:6] + jaw_res).float()
        return flame(p).vertices

    def pipeline(enc_deca, enc_perc):
        def step():
            with torch.inference_mode():
                flat = images.reshape(-1, 3, 224, 224)
                codes = split_deca_params(enc_deca(flat).float())
                exp, jaw = enc_perc(images)
                decode(codes, exp.reshape(-1, exp.shape[-1]).float(), jaw.reshape(-1, 3).float())
        return step

    repeats = 1 if quick else 3
    rows = []
    t_eager = _time(pipeline(deca, perc), device, repeats)
    variants = [("fp32 fold+CL", Runtime.create(device, "fp32"))]
    low = Runtime.create(device, "auto")
    if low.precision != "fp32":
        variants.append((f"{low.precision} fold+CL", low))
    for name, rt in variants:
        fd, fp = prepare_for_inference(deca, rt), prepare_for_inference(perc, rt)
        t = _time(pipeline(fd, fp), device, repeats)
        rows.append({"stage": "learned inference", "case": f"{name}, {clips} clips x {frames} frames",
                     "unit": "frames/s", "value": clips * frames / t, "baseline": clips * frames / t_eager,
                     "baseline_name": "fp32 eager"})
    return rows


def bench_render(assets: Path, device: torch.device, quick: bool) -> list[dict]:
    import bench_render
    return bench_render.run(quick=quick, device=str(device), batches=(1, 16) if quick else (1, 32),
                            flame_assets=assets)


def bench_fit(device: torch.device, quick: bool) -> list[dict]:
    from spectre.faces.crop import FACE_CROP_SIZE
    from spectre.geometry import crop_to_pixels, project_to_crop
    from spectre.models import load_face_model
    from spectre.reconstruct.evaluator import PointEvaluator
    from spectre.reconstruct.fit import FitConfig, fit_track

    model = load_face_model("ict").to(device)
    T = 50 if quick else 200
    g = torch.Generator().manual_seed(0)
    p = model.default_params(T, device=device)
    p["expression"] = 0.3 * torch.rand(T, p["expression"].shape[1], generator=g).to(device)
    p["rotation"] = 0.15 * torch.randn(T, 3, generator=g).to(device)
    with torch.no_grad():
        lm = model(p).landmarks.cpu()
    extent = float((lm[0, :, :2].amax(0) - lm[0, :, :2].amin(0)).max())
    cam = torch.tensor([[2.0 / (1.25 * extent), 0.0, 0.0]]).expand(T, -1)
    target = crop_to_pixels(project_to_crop(lm, cam)[..., :2], FACE_CROP_SIZE).numpy().astype(np.float64)
    cfg = FitConfig(iterations=40 if quick else 80, identity_iterations=60 if quick else 150)
    fast_ev, full_ev = PointEvaluator(model), PointEvaluator(model, try_fast=False)
    t_fast = _time(lambda: fit_track(model, target, config=cfg, evaluator=fast_ev), device, 1)
    t_full = _time(lambda: fit_track(model, target, config=cfg, evaluator=full_ev), device, 1)
    return [{"stage": "fit solver", "case": f"ICT, {T} frames", "unit": "frames/s", "value": T / t_fast,
             "baseline": T / t_full, "baseline_name": "full-forward evaluator"}]


def bench_train(device: torch.device, quick: bool) -> list[dict]:
    if importlib.util.find_spec("spectre.train") is None:
        return [{"stage": "training step", "case": "-", "unit": "steps/s", "value": None, "baseline": None,
                 "note": "skipped: spectre.train does not exist yet"}]
    bench_train_py = BENCH / "bench_train.py"
    if bench_train_py.is_file():
        module = _import_file(bench_train_py, "bench_train")
        if hasattr(module, "run"):  # random weights: speed does not depend on them
            return module.run(quick=quick, device=str(device))
    return [{"stage": "training step", "case": "-", "unit": "steps/s", "value": None, "baseline": None,
             "note": "skipped: bench/bench_train.py has no run(quick, device)"}]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with golden_weights.py, make_fake_flame.py, "
                    "head_template.obj, landmark_embedding.npy, *_keys.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="+", choices=("learned", "render", "fit", "train"))
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    data = Path(args.data)
    missing = [n for n in ("golden_weights.py", "make_fake_flame.py", "head_template.obj", "landmark_embedding.npy",
                           "deca_encoder_keys.json", "spectre_model_keys.json") if not (data / n).is_file()]
    if missing:
        print(f"gpu.py: error: {data} lacks {', '.join(missing)}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu.py: error: CUDA is not available (use --device cpu to test the script)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# device={device} ({name}) torch={torch.__version__} numpy={np.__version__} quick={args.quick}")
    stages = args.only or ("learned", "render", "fit", "train")
    rows, errors = [], {}
    with tempfile.TemporaryDirectory() as d:
        assets = build_assets(data, Path(d))
        for stage in stages:
            t = time.perf_counter()
            try:
                if stage == "learned":
                    rows += bench_learned(data, assets, device, args.quick)
                elif stage == "render":
                    rows += bench_render(assets, device, args.quick)
                elif stage == "fit":
                    rows += bench_fit(device, args.quick)
                else:
                    rows += bench_train(device, args.quick)
            except Exception as exc:  # report and go on with the other stages
                errors[stage] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"# {stage}: {time.perf_counter() - t:.0f} s{'  ' + errors[stage] if stage in errors else ''}",
                  flush=True)
    print(f"{'stage':18} {'case':44} {'value':>9} {'baseline':>9} {'ratio':>7} {'unit':9} baseline is")
    for r in rows:
        v, b = r.get("value"), r.get("baseline")
        case = f"{r.get('case', r.get('mesh', ''))}" + (f" B={r['batch']}" if "batch" in r else "")
        ratio = f"{v / b:.2f}x" if v and b else "-"
        fmt = (lambda x: "-" if x is None else f"{x:.1f}")
        print(f"{r['stage'][:18]:18} {case[:44]:44} {fmt(v):>9} {fmt(b):>9} {ratio:>7} {r.get('unit', ''):9} "
              f"{r.get('baseline_name', '') if b else r.get('note', '')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "name": name, "rows": rows, "errors": errors},
                                              indent=1, default=float))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
