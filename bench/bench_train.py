"""Training throughput: steps/s of the SPECTRE training step (ICT and FLAME variants) and of the
K-frame data loader, every variant against a baseline measured in the same run.

    PYTHONPATH=src python bench/bench_train.py [--quick] [--device cpu|cuda] [--clip-length 20]

Networks use random weights (speed does not depend on them); FLAME needs ../shared (the synthetic
FLAME generator and the FLAME-topology files) and is skipped without it. Rows:
  step  ict  fp32          baseline: one optimiser step (forward, backward, Adam) on one K-frame clip
  step  ict  bf16/fp16     autocast (only where the device has native support)
  step  ict  no-emotion    expression weight 0 (the emotion ResNet-50 skipped)
  step  ict  videos alone  no lipreader/emotion (nothing rendered): now, before (NCHW conv weights and
                           multi-tensor Adam, as until 2026-11-30), and now on 1 thread
  step  flame fp32         the official SPECTRE step (DECA + FLAME + textured render)
  data  workers 0 / 2      K-frame samples/s from a prepared cache (crop + warp + JPEG decode)
  loop  ...                the whole `spectre train --model ict` loop (videos alone: data, step, logging,
                           checkpoints) on a synthetic fit cache of 4 clips, the way it ran before
                           (loader and its worker started every epoch, NCHW weights, multi-tensor Adam)
                           against now (one persistent loader, channels_last, fused Adam), and with
                           precise BatchNorm at every checkpoint; its baseline is the "before" loop of
                           the same run
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spectre.device import Runtime, configure_threads, cpu_supports_bf16
from spectre.nets.face_encoder import FaceCodeEncoder
from spectre.train.criteria import PerceptualCriteria
from spectre.train.encoder_step import FaceEncoderStep, encoder_spec_for
from spectre.train.step import LossWeights, trainable_module
from spectre.train.trainer import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPECTRE_SHARED", ROOT.parent / "shared"))


def frozen_nets(device):
    from spectre.nets.emotion import EmotionNet
    from spectre.nets.lipreader import Lipreader, LipreaderConfig

    lip = Lipreader(LipreaderConfig(odim=31)).to(device).eval().requires_grad_(False)
    emo = EmotionNet().to(device).eval().requires_grad_(False)
    return lip, emo


def ict_batch(model, k: int, size: int, device):
    """A clip whose targets put the ICT face in the middle of the crop."""
    from spectre.geometry import project_to_crop

    p = model.default_params(k, device=torch.device("cpu"))
    with torch.no_grad():  # targets are built on the CPU, then the whole batch moves to ``device``
        lmk = model.to("cpu").landmarks(model.vertices(p), p)
    model.to(device)
    span = float(lmk[0, :, 0].max() - lmk[0, :, 0].min())
    cam = torch.tensor([[1.2 / span, 0.0, 0.0]]).repeat(k, 1)
    gt = project_to_crop(lmk, cam)[..., :2] + 0.01 * torch.randn(k, 68, 2)
    fit = {"identity": p["identity"], "expression": p["expression"], "rotation": p["rotation"], "cam": cam}
    batch = {"image": torch.rand(1, k, 3, size, size), "landmark": torch.cat([gt, torch.ones(k, 68, 1)], -1)[None],
             "fit": {n: v[None] for n, v in fit.items()}}
    return {n: ({a: b.to(device) for a, b in v.items()} if isinstance(v, dict) else v.to(device))
            for n, v in batch.items()}


def ict_step(model, size: int, k: int, dev, lip, emo, weights: LossWeights):
    """The ``--model ict`` step (a face encoder distilled from the fit); it renders only when a
    perceptual network is given (without the lipreader/emotion assets the recipe skips those terms)."""
    from spectre.render import Renderer

    torch.manual_seed(0)
    enc = trainable_module(FaceCodeEncoder(encoder_spec_for(model, size, k))).to(dev)
    w = weights if lip is not None or emo is not None else LossWeights(lipread=0, expression=0)
    renderer = Renderer(size) if lip is not None or emo is not None else None
    return FaceEncoderStep(enc, model, PerceptualCriteria(lip, emo, w), renderer)


def time_steps(step, batch, rt: Runtime, n: int, fused: bool = True) -> float:
    """Steps/s of forward, backward and the trainer's Adam (``fused=False``: the default multi-tensor Adam
    the trainer used before 2026-11-30)."""
    params = [p for p in step.trainable.parameters() if p.requires_grad]
    opt = make_optimizer(params, 5e-5, rt.device) if fused else torch.optim.Adam(params, lr=5e-5)
    step.set_train(True)

    def one():
        with rt.autocast():
            out = step(batch, train=True)
        opt.zero_grad(set_to_none=True)
        out.total.float().backward()
        opt.step()
    one()  # warm-up
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        one()
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def flame_step(device, lip, emo, weights, tmp: Path):
    """The official step with a synthetic FLAME and random DECA / perceptual weights."""
    import importlib.util

    from spectre.assets import AssetStore
    from spectre.models.flame import FLAME
    from spectre.nets.deca import DecaEncoder
    from spectre.nets.perceptual import PerceptualEncoder
    from spectre.train.flame_step import SpectreStep, _read_image, load_uv_face_eye_mask, textured_renderer

    gen = SHARED / "golden" / "make_fake_flame.py"
    data = SHARED / "assets" / "spectre_data"
    if not gen.is_file() or not data.is_dir():
        return None
    spec = importlib.util.spec_from_file_location("make_fake_flame", gen)
    mff = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mff)
    (tmp / "flame").mkdir(parents=True, exist_ok=True)
    mff.write(mff.build(str(data / "head_template.obj")), str(tmp / "flame" / "generic_model.pkl"))
    os.symlink(data, tmp / "spectre_data")
    store = AssetStore(tmp)
    flame = FLAME.from_store(store).to(device)
    tex = torch.nn.functional.interpolate(_read_image(store.path("mean_texture"), "mean texture"), [256, 256])
    deca = DecaEncoder().to(device)
    with torch.no_grad():  # a plausible camera scale so the face covers the crop
        deca.layers[2].bias[206] = 9.0
    step = SpectreStep(deca, PerceptualEncoder().to(device).train(), flame,
                       PerceptualCriteria(lip, emo, weights), textured_renderer(flame, tex.to(device)),
                       load_uv_face_eye_mask(store).to(device))
    return step


def flame_batch(k: int, device):
    g = np.load(SHARED / "golden" / "losses.npz")["base_landmarks"]
    lmk = torch.from_numpy(g).float()[None].repeat(k, 1, 1)
    lmk = torch.cat([lmk, torch.ones(k, 68, 1)], -1)
    return {"image": torch.rand(1, k, 3, 224, 224, device=device), "landmark": lmk[None].to(device)}


def data_rows(k: int, size: int, n: int, tmp: Path) -> list[tuple[str, float]]:
    """Samples/s of the K-frame dataset on a synthetic JPEG cache, loader workers 0 vs 2."""
    from spectre.train.data import ClipDataConfig, ClipDataset, EpochSampler, PreparedCache, make_loader
    cache = PreparedCache.open(synthetic_cache(tmp, k, clips=16, fit_targets=False))
    ds = ClipDataset(cache, cache.split("train"), ClipDataConfig(clip_length=k, image_size=size), train=True)
    rows = []
    for workers in (0, 2):  # steady state: the clock starts after the first batch (worker start-up)
        sampler = EpochSampler(len(ds), 1, seed=0)
        count, t = -1, None
        while count < n:
            for _ in make_loader(ds, sampler, workers):
                count += 1
                if t is None:
                    t = time.perf_counter()
                if count >= n:
                    break
            sampler.set_epoch(sampler.epoch + 1)
        rows.append((f"data  workers {workers}", n / (time.perf_counter() - t)))
    return rows


def synthetic_cache(tmp: Path, k: int, clips: int = 4, frames_n: int | None = None, fit_targets: bool = True) -> Path:
    """A JPEG cache of ``clips`` one-clip folders (4 train clips: an epoch every 4 steps, like the
    sample clips), with fit targets unless ``fit_targets`` is False (the ICT face at rest; speed does not
    depend on their values)."""
    from spectre.train.prepare import PrepareConfig, Track, prepare_folder

    rng = np.random.default_rng(0)
    frames_n = frames_n or max(2 * k, 40)
    base = np.stack([np.cos(np.linspace(0, 2 * np.pi, 68)), np.sin(np.linspace(0, 2 * np.pi, 68))], -1)
    vids = tmp / "videos"
    for i in range(clips):
        (vids / f"s{i}").mkdir(parents=True)
        (vids / f"s{i}" / "c.mp4").write_bytes(b"x")

    def tracker(v):
        return Track(base[None] * 120 + 320 + rng.normal(0, 2, (frames_n, 68, 2)), 25.0, 640, 480)

    def frames(v):
        for _ in range(frames_n):
            yield rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)

    def fitter(video, lmk, valid, points478=None):
        n = len(lmk)
        return {"param_identity": np.zeros((n, 100)), "param_expression": np.zeros((n, 53)),
                "param_rotation": np.zeros((n, 3)), "cam_raw": np.tile([[0.1, 0.0, 0.0]], (n, 1)),
                "center": np.tile(lmk.mean((0, 1)), (n, 1)), "scale": np.full((n, 1), 120.0)}

    prepare_folder(vids, tmp / "cache", PrepareConfig(val_fraction=0, test_fraction=0), tracker=tracker,
                   frames=frames, fitter=fitter if fit_targets else None)
    return tmp / "cache"


def loop_rows(k: int, size: int, steps: int, tmp: Path) -> list[tuple[str, float]]:
    """Steps/s of ``Trainer.fit`` (videos alone, fp32, 1 loader worker, checkpoint every 10 steps): before
    (as until 2026-11-30: a loader started per epoch, NCHW weights, multi-tensor Adam), now, now + precise BN."""
    from spectre.train import trainer as tr
    from spectre.train.data import ClipDataConfig
    from spectre.train.encoder_step import build_encoder_step

    cache = synthetic_cache(tmp, k)
    make_loader = tr.make_loader

    def per_epoch_loader(*args, persistent=False, **kw):  # the loop before: new workers every epoch
        return make_loader(*args, persistent=False, **kw)

    def plain_adam(params, lr, device):
        return torch.optim.Adam(params, lr=lr)

    rows = []
    variants = (("loop  before (loader per epoch)", 0, True), ("loop  now (persistent loader)", 0, False),
                ("loop  now + precise BN (8 clips)", 8, False))
    for i, (name, precise, patched) in enumerate(variants):
        cfg = tr.TrainConfig(cache=str(cache), face_model="ict", device="cpu", log_every=5, image_every=0,
                             checkpoint_every=10, val_every=0, tensorboard=False, precise_bn=precise,
                             data=ClipDataConfig(clip_length=k, image_size=size, workers=1, with_fit=True),
                             optim=tr.OptimConfig(lr=1e-3, max_steps=steps),
                             loss=LossWeights(lipread=0, expression=0))
        pc = tr.PreparedCache.open(cache)
        train = tr.ClipDataset(pc, pc.split("train"), cfg.data, train=True)
        step = build_encoder_step(None, cfg.loss, image_size=size, clip_length=k)
        if patched:  # before: NCHW conv weights, multi-tensor Adam, a loader started per epoch
            step.trainable.to(memory_format=torch.contiguous_format)
            tr.make_optimizer = plain_adam
        trainer = tr.Trainer(cfg, step, train, None, tmp / f"run{i}", Runtime.create("cpu"))
        tr.make_optimizer = make_optimizer
        tr.make_loader = per_epoch_loader if patched else make_loader
        try:
            t = time.perf_counter()
            trainer.fit()
            rows.append((name, steps / (time.perf_counter() - t)))
        finally:
            tr.make_loader = make_loader
    return rows


def run(quick: bool = True, device: str = "cpu") -> list[dict]:
    """Rows for the harness (``python -m bench``, ``bench/gpu.py``): ICT training steps/s, the reduced
    precision step when the device has it, against the fp32 step measured in the same run."""
    k, n, size = (7, 2, 112) if quick else (20, 5, 224)
    rt = Runtime.create(device, "fp32")
    dev = rt.device
    from spectre.models import load_face_model

    lip, emo = frozen_nets(dev)
    model = load_face_model("ict").to(dev)
    batch = ict_batch(model, k, size, dev)

    def ict(weights, perceptual: bool = True):
        return ict_step(model, size, k, dev, lip if perceptual else None, emo if perceptual else None, weights)

    base = time_steps(ict(LossWeights()), batch, rt, n)
    rows = [{"stage": "training step", "case": f"ICT fp32, K={k}, {size}px", "unit": "steps/s", "value": base,
             "baseline": None}]
    reduced = "bf16" if (dev.type == "cuda" and torch.cuda.is_bf16_supported()) or \
        (dev.type == "cpu" and cpu_supports_bf16()) else None
    if reduced:
        rate = time_steps(ict(LossWeights()), batch, Runtime(dev, reduced), n)
        rows.append({"stage": "training step", "case": f"ICT {reduced}, K={k}, {size}px", "unit": "steps/s",
                     "value": rate, "baseline": base, "baseline_name": "fp32 step"})
    rate = time_steps(ict(LossWeights(), perceptual=False), batch, rt, n)
    rows.append({"stage": "training step", "case": f"ICT videos alone (no lipreader/emotion), fp32, K={k}, {size}px",
                 "unit": "steps/s", "value": rate, "baseline": base, "baseline_name": "fp32 step with both"})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="K=7, 112-px ICT crops, 2 timed steps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clip-length", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--videos-alone", action="store_true",
                    help="only the registration-free ICT rows (no lipreader/emotion/FLAME/data rows): step and "
                         "loop, before vs now; the ratio column is then against the step before")
    args = ap.parse_args()
    configure_threads()
    k = args.clip_length or (7 if args.quick else 20)
    n = args.steps or (2 if args.quick else 5)
    size = 112 if args.quick else 224
    rt = Runtime.create(args.device, "fp32")
    dev = rt.device
    from spectre.models import load_face_model

    lip, emo = (None, None) if args.videos_alone else frozen_nets(dev)
    model = load_face_model("ict").to(dev)
    batch = ict_batch(model, k, size, dev)
    rows: list[tuple[str, float, int]] = []

    def ict(weights, perceptual: bool = True):
        return ict_step(model, size, k, dev, lip if perceptual else None, emo if perceptual else None, weights)

    if not args.videos_alone:
        rows.append(("step  ict  fp32", time_steps(ict(LossWeights()), batch, rt, n), k))
        reduced = "bf16" if (dev.type == "cuda" and torch.cuda.is_bf16_supported()) or \
            (dev.type == "cpu" and cpu_supports_bf16()) else None
        if reduced:
            rows.append((f"step  ict  {reduced}", time_steps(ict(LossWeights()), batch, Runtime(dev, reduced), n), k))
        rows.append(("step  ict  no-emotion", time_steps(ict(LossWeights(expression=0)), batch, rt, n), k))
    plain = ict(LossWeights(), False)
    plain.trainable.to(memory_format=torch.contiguous_format)  # the step before: NCHW weights, multi-tensor Adam
    rows.append(("step  ict  videos alone, before", time_steps(plain, batch, rt, n, fused=False), k))
    rows.append(("step  ict  videos alone (no render)", time_steps(ict(LossWeights(), False), batch, rt, n), k))
    threads = torch.get_num_threads()
    if dev.type == "cpu" and threads > 1:  # on a shared, loaded CPU one thread avoids OpenMP barrier stalls
        torch.set_num_threads(1)
        try:
            rows.append(("step  ict  videos alone, 1 thread", time_steps(ict(LossWeights(), False), batch, rt, n), k))
        finally:
            torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    data: list[tuple[str, float]] = []
    try:
        fs = None if args.videos_alone else flame_step(dev, lip, emo, LossWeights(), tmp / "assets")
        if fs is not None:
            rows.append(("step  flame fp32 (224)", time_steps(fs, flame_batch(k, dev), rt, n), k))
        if not args.videos_alone:
            data = data_rows(k, 224, 15 if args.quick else 45, tmp / "data")
        loops = loop_rows(k, size, 20 if args.quick else 60, tmp / "loop") if args.device == "cpu" else []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0][1]
    print(f"\ndevice {dev} ({torch.get_num_threads()} threads), K={k}, ICT crop {size}px, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'variant':<36}{'steps/s':>10}{'frames/s':>10}{'ratio':>12}   (ratio: against '{rows[0][0]}')")
    for name, rate, frames in rows:
        print(f"{name:<36}{rate:>10.3f}{rate * frames:>10.1f}{rate / base:>11.2f}x")
    if data:
        print(f"{'variant':<26}{'clips/s':>10}{'frames/s':>10}{'vs w0':>9}")
    for name, rate in data:
        print(f"{name:<26}{rate:>10.2f}{rate * k:>10.1f}{rate / data[0][1]:>8.2f}x")
    if loops:
        print(f"{'training loop, videos alone':<34}{'steps/s':>10}{'frames/s':>10}{'vs before':>10}")
        for name, rate in loops:
            print(f"{name:<34}{rate:>10.3f}{rate * k:>10.1f}{rate / loops[0][1]:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
