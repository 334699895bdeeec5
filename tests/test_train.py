"""Trainer, data and DDP behaviour on tiny synthetic caches (fast), plus the real steps on samples."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spectre.device import Runtime
from spectre.errors import CheckpointError, ConfigError, OutputError
from spectre.losses import relative_landmark_loss, valid_frame_mask, weighted_landmark_loss
from spectre.train.data import ClipDataConfig, ClipDataset, EpochSampler, PreparedCache, collate
from spectre.train.ddp import DistInfo
from spectre.train.prepare import PrepareConfig, Track, prepare_folder
from spectre.train.step import StepOutput, TrainStep
from spectre.train.trainer import OptimConfig, TrainConfig, Trainer, prepare_run_dir

K = 7
SIZE = 32


# ---------------------------------------------------------------------------------------------
# a synthetic cache: moving, talking "faces" drawn from a 68-point layout
# ---------------------------------------------------------------------------------------------
def _layout() -> np.ndarray:
    """A plausible iBUG-68 layout in [-1, 1] (an ellipse contour, brows, nose, eyes, two lip rings)."""
    pts = []
    for a in np.linspace(np.pi * 0.95, np.pi * 0.05, 17):
        pts.append((0.8 * np.cos(a), 0.9 * np.sin(a) * 0.9 + 0.05))  # jaw contour (below)
    pts = [(x, -y + 0.2) for x, y in pts]
    pts = [(-x, y) for x, y in pts]
    pts += [(-0.6 + 0.1 * i, -0.45) for i in range(5)] + [(0.2 + 0.1 * i, -0.45) for i in range(5)]
    pts += [(0.0, -0.3 + 0.1 * i) for i in range(4)] + [(-0.1 + 0.05 * i, 0.1) for i in range(5)]
    for cx in (-0.35, 0.35):
        pts += [(cx + 0.12 * np.cos(a), -0.25 + 0.06 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 7)[:-1]]
    pts += [(0.3 * np.cos(a), 0.45 + 0.12 * np.sin(a)) for a in np.linspace(np.pi, -np.pi, 13)[:-1]]
    pts += [(0.2 * np.cos(a), 0.45 + 0.05 * np.sin(a)) for a in np.linspace(np.pi, -np.pi, 9)[:-1]]
    return np.asarray(pts, np.float64)


LAYOUT = _layout()


def _clip(seed: int, frames: int, size: int = 96):
    rng = np.random.default_rng(seed)
    centre = np.array([size / 2, size / 2]) + rng.uniform(-6, 6, 2)
    lmk, imgs = [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for t in range(frames):
        pts = LAYOUT.copy()
        pts[48:] *= [1.0, 1.0 + 0.8 * np.sin(0.9 * t + seed)]  # mouth opens and closes
        p = pts * 22 + centre + [np.sin(0.3 * t) * 2, 0]
        lmk.append(p)
        img = np.zeros((size, size, 3), np.uint8)
        for i, (x, y) in enumerate(p):
            img[(xx - x) ** 2 + (yy - y) ** 2 < 4] = (40 + 3 * i, 200 - 2 * i, 90 + seed * 20)
        imgs.append(img)
    return np.asarray(lmk), imgs


def make_cache(root: Path, clips: int = 4, frames: int = 12, fmt: str = "raw") -> Path:
    vids = root / "videos"
    for i in range(clips):
        (vids / f"spk{i}").mkdir(parents=True, exist_ok=True)
        (vids / f"spk{i}" / "00001.mp4").write_bytes(b"synthetic")
    data = {str(vids / f"spk{i}" / "00001.mp4"): _clip(i, frames) for i in range(clips)}

    def tracker(v):
        lmk = data[str(v)][0].copy()
        lmk[3] = np.nan  # one frame without a face: interpolated
        return Track(lmk, 25.0, 96, 96)

    def frames_of(v):
        yield from data[str(v)][1]

    cfg = PrepareConfig(crop_size=48, crop_format=fmt, val_fraction=0.25, test_fraction=0.0)
    prepare_folder(vids, root / "cache", cfg, tracker=tracker, frames=frames_of)
    return root / "cache"


class TinyEncoder(nn.Module):
    """Conv features per frame + temporal conv + BN (like the perceptual encoder), landmark offsets."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.temporal = nn.Sequential(nn.Conv1d(8, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 68 * 2)

    def forward(self, images):  # (B,K,3,H,W)
        B, T = images.shape[:2]
        f = self.conv(images.flatten(0, 1)).view(B, T, -1).transpose(1, 2)
        return self.head(self.temporal(f).transpose(1, 2)).view(B, T, 68, 2) * 0.1


class TinyStep(TrainStep):
    face_model_name = "tiny"

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        super().__init__(TinyEncoder())
        self.base = torch.from_numpy(LAYOUT * 0.45).float()

    def forward(self, batch, train):
        pred = self.base + self.runner(batch["image"])
        gt = batch["landmark"]
        m = valid_frame_mask(*gt.shape[:2])
        p, g = pred.flatten(0, 1)[m], gt.flatten(0, 1)[m]
        losses = {"landmark": weighted_landmark_loss(p, g), "relative_landmark": relative_landmark_loss(p, g)}
        total = 50 * losses["landmark"] + 50 * losses["relative_landmark"]
        vis = {"input": batch["image"][0], "mouth": batch["image"][0, :, :1]}
        return StepOutput(total, losses, vis)


def tiny_cfg(cache: Path, **kw) -> TrainConfig:
    cfg = TrainConfig(cache=str(cache), device="cpu", log_every=1, image_every=2, checkpoint_every=3,
                      val_every=4, data=ClipDataConfig(clip_length=K, image_size=SIZE, workers=0),
                      optim=OptimConfig(lr=3e-3, max_steps=6))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def build(cfg: TrainConfig, run: Path, seed=0, dist=DistInfo()):
    cache = PreparedCache.open(cfg.cache)
    train = ClipDataset(cache, cache.split("train"), cfg.data, train=True, seed=cfg.seed)
    val = ClipDataset(cache, cache.split("val"), cfg.data, train=False)
    return Trainer(cfg, TinyStep(seed), train, val, run, Runtime.create("cpu"), dist)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("tiny"))


# ---------------------------------------------------------------------------------------------
def test_cache_layout_and_splits(cache):
    c = PreparedCache.open(cache)
    assert len(c.clips) == 4
    train, val = c.split("train"), c.split("val")
    assert len(val) == 1 and len(train) == 3 and not set(train) & set(val)
    info = c.clips[train[0]]
    assert info.frames == 12 and info.valid_frames == 11  # frame 3 had no face


def test_dataset_window_crop_and_landmarks(cache):
    c = PreparedCache.open(cache)
    cfg = ClipDataConfig(clip_length=K, image_size=64)
    ds = ClipDataset(c, c.split("train"), cfg, train=True, seed=3)
    s = ds[(0, 1)]
    assert s["image"].shape == (K, 3, 64, 64) and s["landmark"].shape == (K, 68, 3)
    assert 1.4 <= float(s["crop_scale"]) <= 1.8
    lm = s["landmark"][..., :2]
    # the crop is centred on the landmark bbox and the bbox spans 1/scale of the crop
    mid = (lm.amax(1) + lm.amin(1)) / 2
    assert mid.abs().max() < 0.05
    span = ((lm.amax(1) - lm.amin(1)).sum(-1) / 2).mean()
    assert abs(float(span) - 2 / float(s["crop_scale"])) < 0.05
    # the drawn landmark dots are where the landmarks say: image brighter at landmark pixels
    px = ((lm[0] + 1) * 32).round().long().clamp(0, 63)
    on = s["image"][0, 1, px[:, 1], px[:, 0]].mean()
    assert on > 5 * s["image"][0, 1].mean() * 0 + 0.3
    # same (epoch, index) -> same sample; other epoch -> other window or scale
    again = ds[(0, 1)]
    assert torch.equal(again["image"], s["image"])
    other = ds[(1, 1)]
    assert (other["start"], float(other["crop_scale"])) != (s["start"], float(s["crop_scale"]))
    ev = ClipDataset(c, c.split("train"), cfg, train=False)[(5, 1)]
    assert float(ev["crop_scale"]) == pytest.approx(1.6) and int(ev["start"]) == 0
    fixed = ClipDataset(c, c.split("train"), ClipDataConfig(clip_length=K, image_size=64, augment=False), train=True)
    assert torch.equal(fixed[(3, 1)]["image"], ev["image"])


def test_jpeg_cache_matches_raw(tmp_path):
    raw = make_cache(tmp_path / "raw", clips=1, frames=8, fmt="raw")
    jpg = make_cache(tmp_path / "jpg", clips=1, frames=8, fmt="jpg")
    cfg = ClipDataConfig(clip_length=5, image_size=64)
    a = ClipDataset(PreparedCache.open(raw), ["spk0/00001"], cfg, train=False)[0]["image"]
    b = ClipDataset(PreparedCache.open(jpg), ["spk0/00001"], cfg, train=False)[0]["image"]
    assert (a - b).abs().mean() < 0.03


def test_sampler_shards_ranks_and_resumes():
    s = EpochSampler(10, batch_size=2, seed=1, rank=0, world_size=2)
    r1 = EpochSampler(10, batch_size=2, seed=1, rank=1, world_size=2)
    a, b = s.indices(0), r1.indices(0)
    assert len(a) == len(b) == 4 and not set(a) & set(b)
    assert s.indices(0) != s.indices(1)
    s.set_epoch(0, start_batch=1)
    assert [i for _, i in s] == a[2:]


def test_overfit_loss_decreases_and_logs(cache, tmp_path):
    cfg = tiny_cfg(cache, optim=OptimConfig(lr=3e-3, max_steps=30), val_every=10, checkpoint_every=10)
    run = prepare_run_dir(tmp_path / "run", resume=False, overwrite=False)
    summary = build(cfg, run).fit()
    first = np.mean([v for _, v in summary.history[:3]])
    last = np.mean([v for _, v in summary.history[-3:]])
    assert summary.steps == 30 and last < 0.7 * first
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "best.pt").is_file()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val/total" in r for r in rows) and any("throughput/steps_per_s" in r for r in rows)
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "logs").iterdir())
    with pytest.raises(OutputError):
        prepare_run_dir(run, resume=False, overwrite=False)


def test_resume_reproduces_next_step_loss(cache, tmp_path):
    cfg = tiny_cfg(cache, checkpoint_every=3, optim=OptimConfig(lr=3e-3, max_steps=5), val_every=0)
    full = build(cfg, tmp_path / "a").fit()
    # same run stopped after 3 steps (checkpoint), then resumed in a fresh trainer
    cut = tiny_cfg(cache, checkpoint_every=3, optim=OptimConfig(lr=3e-3, max_steps=3), val_every=0)
    build(cut, tmp_path / "b").fit()
    resumed = build(cfg, tmp_path / "b", seed=123)  # different init: everything must come from the file
    resumed.load(tmp_path / "b" / "checkpoints" / "last.pt")
    assert resumed.global_step == 3
    out = resumed.fit()
    assert [v for _, v in out.history] == [v for s, v in full.history if s > 3]


def test_resume_refuses_mismatched_checkpoint(cache, tmp_path):
    cfg = tiny_cfg(cache, optim=OptimConfig(lr=3e-3, max_steps=1), val_every=0, checkpoint_every=1)
    build(cfg, tmp_path / "r").fit()
    bad = tiny_cfg(cache, data=ClipDataConfig(clip_length=K, image_size=SIZE, workers=0, batch_size=2))
    t = build(bad, tmp_path / "r2")
    with pytest.raises(CheckpointError):
        t.load(tmp_path / "r" / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError):
        prepare_run_dir(tmp_path / "none", resume=True, overwrite=False)


def test_loader_workers_do_not_change_samples(cache, tmp_path):
    # several epochs: the loader (and its workers) persists, each epoch must still read the sampler's epoch
    cfg0 = tiny_cfg(cache, optim=OptimConfig(lr=3e-3, max_steps=7), val_every=0, checkpoint_every=0)
    cfg2 = tiny_cfg(cache, optim=OptimConfig(lr=3e-3, max_steps=7), val_every=0, checkpoint_every=0,
                    data=ClipDataConfig(clip_length=K, image_size=SIZE, workers=2))
    a = build(cfg0, tmp_path / "w0").fit().history
    b = build(cfg2, tmp_path / "w2").fit().history
    assert a == b


class CalibratedTinyStep(TinyStep):
    supports_precise_bn = True

    def calibration_forward(self, batch):
        self.trainable(batch["image"])


def test_precise_bn_recalibrates_before_saving_and_keeps_resume_exact(cache, tmp_path):
    from spectre.train.precise_bn import recalibrate_batchnorm

    def trainer(cfg, run, seed=0):
        c = PreparedCache.open(cfg.cache)
        train = ClipDataset(c, c.split("train"), cfg.data, train=True, seed=cfg.seed)
        return Trainer(cfg, CalibratedTinyStep(seed), train, None, run, Runtime.create("cpu"))

    cfg = tiny_cfg(cache, checkpoint_every=3, optim=OptimConfig(lr=3e-3, max_steps=5), val_every=0, precise_bn=3)
    full = trainer(cfg, tmp_path / "a").fit()
    cut = tiny_cfg(cache, checkpoint_every=3, optim=OptimConfig(lr=3e-3, max_steps=3), val_every=0, precise_bn=3)
    first = trainer(cut, tmp_path / "b")
    first.fit()
    resumed = trainer(tiny_cfg(cache, checkpoint_every=3, optim=OptimConfig(lr=3e-3, max_steps=5), val_every=0,
                               precise_bn=3), tmp_path / "b", seed=123)
    resumed.load(tmp_path / "b" / "checkpoints" / "last.pt")
    assert [v for _, v in resumed.fit().history] == [v for s, v in full.history if s > 3]
    # the saved statistics are the recalibrated ones: recalibrating again on the same clips changes nothing
    ck = torch.load(tmp_path / "b" / "checkpoints" / "step_00000003.pt", weights_only=True)
    saved = ck["E_expression"]["temporal.1.running_mean"]
    net = first.step_fn.trainable
    size = len(first.train_set)
    recalibrate_batchnorm(net, [collate([first.train_set[(j // size, j % size)]]) for j in range(3)],
                          first.step_fn.calibration_forward)
    assert torch.equal(saved, net.temporal[1].running_mean)
    assert not torch.equal(saved, torch.zeros_like(saved))


def test_precise_bn_needs_a_step_that_supports_it(cache, tmp_path):
    with pytest.raises(ConfigError, match="precise-bn 0"):
        build(tiny_cfg(cache, precise_bn=4), tmp_path / "r")
    assert build(tiny_cfg(cache), tmp_path / "r2").cfg.precise_bn == 0  # default: off for this step


# ---------------------------------------------------------------------------------------------
# DDP: 2 gloo processes == one process averaging the same two clips' gradients
# ---------------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, init_file: str, cache: str, out_dir: str) -> None:
    from spectre.train.ddp import init_distributed, shutdown_distributed

    torch.set_num_threads(1)
    info = DistInfo(rank, world, rank)
    init_distributed(torch.device("cpu"), info, init_method=f"file://{init_file}")
    try:
        cfg = tiny_cfg(Path(cache), optim=OptimConfig(lr=3e-3, max_steps=1), val_every=0, checkpoint_every=0,
                       tensorboard=False)
        t = build(cfg, Path(out_dir) / f"rank{rank}", dist=info)
        from spectre.train.data import collate

        idx = t.sampler.indices(0)[0]
        sample = collate([t.train_set[(0, idx)]])
        t.step_fn.set_train(True)
        out = t.step_fn(sample, train=True)
        out.total.backward()
        grads = {n: p.grad.clone() for n, p in t.step_fn.trainable.named_parameters()}
        torch.save({"grads": grads, "index": idx}, Path(out_dir) / f"grads{rank}.pt")
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_ddp_two_processes_match_single_process_gradients(cache, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(cache), str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"grads{i}.pt", weights_only=True) for i in range(2)]
    assert r[0]["index"] != r[1]["index"]
    for name in r[0]["grads"]:  # DDP averaged: both ranks hold the same gradient
        torch.testing.assert_close(r[0]["grads"][name], r[1]["grads"][name])
    # single process: the same two clips, one backward each, gradients averaged
    from spectre.train.data import collate

    cfg = tiny_cfg(cache, tensorboard=False)
    t = build(cfg, tmp_path / "single")
    t.step_fn.set_train(True)
    acc = {}
    for rr in r:
        t.step_fn.trainable.zero_grad()
        out = t.step_fn(collate([t.train_set[(0, rr["index"])]]), train=True)
        out.total.backward()
        for n, p in t.step_fn.trainable.named_parameters():
            acc[n] = acc.get(n, 0) + p.grad / 2
    for name, g in acc.items():  # tolerance relative to the largest gradient entry (a conv bias feeding
        # a train-mode BatchNorm has a structurally zero gradient: pure rounding noise); float32 sums in
        # another order differ by up to 1.2e-6 of it on an AMD EPYC (same on the tree before, 2026-12-02),
        # while a gradient not averaged over the processes would be off by half the largest entries
        scale = max(float(v.abs().max()) for v in acc.values())
        torch.testing.assert_close(r[0]["grads"][name], g, rtol=1e-5, atol=1e-5 * scale)
    assert float(acc["head.weight"].abs().max()) > 1e-3


# ---------------------------------------------------------------------------------------------
# the CLI on a real sample clip, with synthetic network weights (slow: real networks on CPU)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_cache(tmp_path_factory, lrs3_video):
    from spectre.cli import main

    root = tmp_path_factory.mktemp("sample")
    (root / "videos").mkdir()
    os.symlink(lrs3_video, root / "videos" / lrs3_video.name)
    assert main(["prepare", str(root / "videos"), "-o", str(root / "cache"), "--fit"]) == 0
    return root / "cache"


@pytest.fixture(scope="module")
def train_assets(tmp_path_factory, golden_dir, golden_weights, flame_assets):
    from train_helpers import write_synthetic_assets

    return write_synthetic_assets(tmp_path_factory.mktemp("assets"), golden_dir, golden_weights, flame_assets)


def _events(run: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "logs"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    out = {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}
    out["_images"] = ea.Tags()["images"]
    return out


@pytest.mark.slow
def test_cli_ict_trains_resumes_and_logs(sample_cache, train_assets, tmp_path):
    from spectre.cli import main
    from spectre.safeload import load_checkpoint

    run = tmp_path / "run"
    common = [str(sample_cache), "-o", str(run), "--model", "ict", "--assets", str(train_assets),
              "--clip-length", "7", "--image-size", "112", "--weight", "expression=0", "--workers", "0",
              "--log-every", "1", "--image-every", "1", "--checkpoint-every", "1", "--val-every", "0",
              "--device", "cpu"]
    assert main(["train", *common, "--steps", "2"]) == 0
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["global_step"] == 2 and ck["face_model"] == "ict" and "face_encoder" in ck
    assert main(["train", *common, "--steps", "3"]) == 5  # the run exists: refuse without --resume
    assert main(["train", *common, "--steps", "3", "--resume"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["global_step"] == 3
    ev = _events(run)
    assert len(ev["train/total"]) == 3 and all(math.isfinite(v) for v in ev["train/total"])
    assert {"train/lipread", "train/landmark", "lr", "throughput/steps_per_s"} <= set(ev)
    assert ev["_images"] == ["train/input|render|mouths"]
    assert "face_model: ict" in (run / "config.yaml").read_text()


@pytest.mark.slow
def test_cli_flame_step_writes_an_official_layout_checkpoint(sample_cache, train_assets, tmp_path):
    from spectre.cli import main
    from spectre.nets.checkpoints import load_spectre

    run = tmp_path / "flame"
    assert main(["train", str(sample_cache), "-o", str(run), "--model", "flame", "--init", "spectre",
                 "--assets", str(train_assets), "--clip-length", "7", "--steps", "1", "--workers", "0",
                 "--log-every", "1", "--val-every", "0", "--device", "cpu"]) == 0
    deca, enc = load_spectre(path=run / "checkpoints" / "last.pt")  # inference can use it as is
    _, before = load_spectre(train_assets)
    moved = [n for n, p in enc.state_dict().items() if not torch.equal(p, before.state_dict()[n])]
    assert "layers.0.weight" in moved  # the encoder was trained ...
    ev = _events(run)
    assert math.isfinite(ev["train/total"][0]) and math.isfinite(ev["train/lipread"][0])


def test_cli_config_errors_are_one_line(cache, tmp_path, capsys):
    from spectre.cli import main

    for bad in (["--weight", "lipread"], ["--weight", "nosuch=1"], ["--weight", "lipread=x"],
                ["--config", str(tmp_path / "missing.yaml")], ["--model", "ict", "--resume"]):
        rc = main(["train", str(cache), "-o", str(tmp_path / "run"), *bad])
        err = capsys.readouterr().err.strip()
        assert rc in (2, 3) and err.startswith("spectre: error:") and len(err.splitlines()) == 1, (bad, err)


def test_config_yaml_round_trip_and_overrides(cache, tmp_path):
    import argparse

    from spectre.cli import train_cmd
    from spectre.config import save_config

    p = argparse.ArgumentParser()
    train_cmd.add_arguments(p)
    cfg = train_cmd.resolve_config(p.parse_args([str(cache), "-o", "r", "--lr", "1e-4", "--weight", "lipread=3",
                                                 "--lipread-loss", "mse", "--clip-length", "9"]))
    assert (cfg.optim.lr, cfg.loss.lipread, cfg.loss.lipread_kind, cfg.data.clip_length) == (1e-4, 3.0, "mse", 9)
    assert (cfg.loss.landmark, cfg.optim.milestones, cfg.optim.gamma, cfg.optim.epochs) == (50.0, [50000], 0.2, 6)
    save_config(cfg, tmp_path / "c.yaml")
    again = train_cmd.resolve_config(p.parse_args([str(cache), "-o", "r", "--config", str(tmp_path / "c.yaml"),
                                                   "--steps", "7"]))
    assert again.loss == cfg.loss and again.data == cfg.data and again.optim.max_steps == 7


def test_grad_clip_and_mixed_precision(cache, tmp_path):
    from spectre.train.data import collate

    cfg = tiny_cfg(cache, optim=OptimConfig(lr=3e-3, max_steps=1, grad_clip=1e-3), tensorboard=False)
    t = build(cfg, tmp_path / "clip")
    batch = collate([t.train_set[(0, 0)]])
    t.train_step(batch)
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in t.params))
    assert float(norm) <= 1e-3 * 1.0001
    cfg = tiny_cfg(cache, optim=OptimConfig(lr=3e-3, max_steps=2), tensorboard=False, precision="bf16",
                   val_every=0, checkpoint_every=0)
    cache_ = PreparedCache.open(cfg.cache)
    train = ClipDataset(cache_, cache_.split("train"), cfg.data, train=True)
    bf = Trainer(cfg, TinyStep(), train, None, tmp_path / "bf16", Runtime.create("cpu", "bf16"))
    out = bf.fit()
    assert out.steps == 2 and all(math.isfinite(v) for _, v in out.history)


def test_every_trainable_encoder_parameter_gets_a_gradient():
    """DDP (without find_unused_parameters) needs a gradient for every trainable parameter: the
    MobileNetV2 classifier, kept only for the official state-dict layout, must be frozen (the ICT face
    encoder has none)."""
    from spectre.models import load_face_model
    from spectre.nets.face_encoder import FaceCodeEncoder
    from spectre.nets.perceptual import PerceptualEncoder
    from spectre.train.encoder_step import encoder_spec_for
    from spectre.train.step import trainable_module as _trainable

    ict = FaceCodeEncoder(encoder_spec_for(load_face_model("ict"), 32, 5))
    for enc in (_trainable(PerceptualEncoder()), _trainable(ict)):
        out = enc(torch.rand(1, 5, 3, 32, 32))
        sum(o.sum() for o in (out.values() if isinstance(out, dict) else out)).backward()
        missing = [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing
        classifier = getattr(enc.encoder, "classifier", None)
        assert classifier is None or not any(p.requires_grad for p in classifier.parameters())
