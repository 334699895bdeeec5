"""Training loop: optimiser and schedule (SPEC §6), mixed precision, gradient clipping, checkpoints
(periodic, last, best), bit-exact resume, TensorBoard, DDP.

The loop knows nothing about faces: it drives a :class:`~spectre.train.step.TrainStep`, which owns
the frozen networks, the trainable module and the losses, and returns named loss terms + a total.
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..assets import AssetStore
from ..atomic import atomic_path
from ..config import save_config, to_dict
from ..device import Runtime, configure_threads
from ..errors import CheckpointError, ConfigError, OutputError
from ..safeload import load_checkpoint
from .data import ClipDataConfig, ClipDataset, EpochSampler, PreparedCache, collate, make_loader
from .ddp import (
    DistInfo,
    all_reduce_mean,
    barrier,
    device_for_rank,
    env_dist_info,
    init_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from .kinds import STEP_KINDS, resolve_face_model
from .precise_bn import recalibrate_batchnorm
from .step import LossWeights, StepOutput, TrainStep

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


@dataclass
class OptimConfig:
    """Adam + MultiStepLR stepped per iteration (official: lr 5e-5, milestone 50k, gamma 0.2, 6 epochs)."""

    lr: float = 5e-5
    milestones: list = field(default_factory=lambda: [50000])
    gamma: float = 0.2
    epochs: int = 6
    max_steps: int = 0  # > 0: train exactly this many steps (epochs are then ignored)
    grad_clip: float = 0.0  # max global L2 norm; 0 = off (official)


@dataclass
class TrainConfig:
    cache: str = ""
    face_model: str = "auto"  # flame (DECA + FLAME assets), ict (fit targets), auto: flame if available
    train_split: str = "train"
    val_split: str = "val"
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 uses a gradient scaler)
    seed: int = 0
    log_every: int = 10
    image_every: int = 500
    checkpoint_every: int = 10000
    val_every: int = 10000
    val_batches: int = 0  # 0 = the whole validation split
    keep_step_checkpoints: bool = True  # also keep checkpoints/step_XXXXXXXX.pt
    precise_bn: int = -1  # training clips that recalibrate BatchNorm before validating/saving; -1: model default
    tensorboard: bool = True
    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)


@dataclass
class TrainSummary:
    steps: int
    epochs_done: int
    last_loss: float
    best_val: float
    history: list  # (step, mean train total over the log interval)
    run_dir: Path


class _Logger:
    """TensorBoard (main process) + a ``metrics.jsonl`` that survives without TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool, use_tensorboard: bool):
        self.enabled = enabled
        self.writer = None
        self.jsonl = None
        if not enabled:
            return
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {run_dir}: {exc.strerror or exc}") from None
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional dependency (extra "train")
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(run_dir / "logs"))
        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()

    def image(self, step: int, tag: str, img: torch.Tensor) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, img.clamp(0, 1), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()


def image_grid(visuals: dict[str, torch.Tensor], max_frames: int = 8) -> torch.Tensor:
    """(3, rows*H, n*W) grid: one row per visual (input | render | mouth crops), frames across."""
    rows = []
    ref = next(iter(visuals.values()))
    n = min(ref.shape[0], max_frames)
    h, w = ref.shape[-2:]
    for v in visuals.values():
        v = v[:n].detach().float().cpu()
        if v.shape[1] == 1:
            v = v.expand(-1, 3, -1, -1)
        if v.shape[-2:] != (h, w):
            v = torch.nn.functional.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
        rows.append(torch.cat(list(v), dim=-1))
    return torch.cat(rows, dim=-2).clamp(0, 1)


class Trainer:
    """Runs a :class:`TrainStep` over prepared clips."""

    def __init__(self, cfg: TrainConfig, step: TrainStep, train_set: ClipDataset,
                 val_set: ClipDataset | None, run_dir: str | Path, runtime: Runtime,
                 dist_info: DistInfo = DistInfo()):
        self.cfg = cfg
        self.step_fn = step
        self.train_set = train_set
        self.val_set = val_set
        self.run_dir = Path(run_dir)
        self.rt = runtime
        self.dist = dist_info
        self.device = runtime.device
        params = [p for p in step.trainable.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the training step has no trainable parameters")
        self.params = params
        self.optimizer = torch.optim.Adam(params, lr=cfg.optim.lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(cfg.optim.milestones),
                                                              gamma=cfg.optim.gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=runtime.precision == "fp16")
        step.runner = wrap_ddp(step.trainable, self.device, dist_info)
        self.sampler = EpochSampler(len(train_set), cfg.data.batch_size, shuffle=True, seed=cfg.seed,
                                    rank=dist_info.rank, world_size=dist_info.world_size)
        if self.sampler.batches_per_epoch() == 0:
            raise ConfigError(f"{len(train_set)} training clip(s) is fewer than one batch of "
                              f"{cfg.data.batch_size} x {dist_info.world_size} process(es)")
        self.global_step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_val = math.inf
        self.history: list[tuple[int, float]] = []
        if cfg.precise_bn < 0:  # the face model's default (ICT: on, FLAME: off as official)
            kind = STEP_KINDS.get(step.face_model_name)
            cfg.precise_bn = kind.precise_bn if kind is not None and step.supports_precise_bn else 0
        if cfg.precise_bn > 0 and not step.supports_precise_bn:
            raise ConfigError(f"precise BatchNorm is not available for {step.face_model_name} training "
                              "(use --precise-bn 0)")
        self._calibrated_at = -1
        self._val_loader = None

    # ---- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        state = dict(self.step_fn.checkpoint_state())
        state.update({
            "opt": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "global_step": self.global_step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "batch_size": self.cfg.data.batch_size,
            "world_size": self.dist.world_size,
            "best_val": self.best_val,
            "torch_rng": torch.get_rng_state(),
            "face_model": self.step_fn.face_model_name,
            "config": to_dict(self.cfg),
        })
        return state

    def save(self, name: str) -> Path:
        path = self.run_dir / CHECKPOINT_DIR / name
        if self.dist.is_main:
            with atomic_path(path, overwrite=True) as tmp:
                torch.save(self.state(), tmp)
        return path

    def load(self, path: str | Path) -> None:
        """Restore everything a bit-exact continuation needs (weights, BN statistics, Adam moments,
        schedule, data position, RNG)."""
        ck = load_checkpoint(path, what="training checkpoint")
        if not isinstance(ck, dict) or "global_step" not in ck or "opt" not in ck:
            raise CheckpointError(f"{path} is not a spectre training checkpoint (no optimiser state); "
                                  "use --init to start from weights only")
        if ck.get("face_model") not in (None, self.step_fn.face_model_name):
            raise CheckpointError(f"{path} was trained for face model {ck['face_model']!r}, "
                                  f"not {self.step_fn.face_model_name!r}")
        if int(ck.get("world_size", 1)) != self.dist.world_size or int(ck.get("batch_size", 1)) != \
                self.cfg.data.batch_size:
            raise CheckpointError(f"{path}: resuming needs the same batch size and process count "
                                  f"(saved {ck.get('batch_size')} x {ck.get('world_size')})")
        self.step_fn.load_checkpoint_state(ck)
        try:
            self.optimizer.load_state_dict(ck["opt"])
            self.scheduler.load_state_dict(ck["scheduler"])
            if ck.get("scaler"):
                self.scaler.load_state_dict(ck["scaler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: optimiser state does not match the model ({exc})") from None
        self.global_step = int(ck["global_step"])
        self.epoch = int(ck["epoch"])
        self.batch_in_epoch = int(ck["batch_in_epoch"])
        self.best_val = float(ck.get("best_val", math.inf))
        if isinstance(ck.get("torch_rng"), torch.Tensor):
            torch.set_rng_state(ck["torch_rng"])

    # ---- one optimisation step -----------------------------------------------------------
    def _to_device(self, batch: dict) -> dict:
        def move(v):
            if isinstance(v, dict):
                return {k: move(x) for k, x in v.items()}
            return v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        return move(batch)

    def train_step(self, batch: dict) -> StepOutput:
        self.step_fn.set_train(True)
        batch = self._to_device(batch)
        with self.rt.autocast():
            out = self.step_fn(batch, train=True)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.total).backward()
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return out

    def recalibrate_bn(self) -> int:
        """Precise BatchNorm (``precise_bn.py``): running statistics recomputed with the current weights
        over ``cfg.precise_bn`` training samples (the epochs' windows in order; the global RNG is not
        touched), once per step, before validation and checkpoints use them. Returns the samples used."""
        n = self.cfg.precise_bn
        if n <= 0 or self._calibrated_at == self.global_step:
            return 0
        size = len(self.train_set)
        batches = (self._to_device(collate([self.train_set[(j // size, j % size)]])) for j in range(n))
        used = recalibrate_batchnorm(self.step_fn.trainable, batches, self.step_fn.calibration_forward)
        self._calibrated_at = self.global_step
        return used

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_set is None:
            return {}
        self.recalibrate_bn()
        self.step_fn.set_train(False)
        if self._val_loader is None:  # kept (with its worker processes) across validations
            sampler = EpochSampler(len(self.val_set), 1, shuffle=False, rank=self.dist.rank,
                                   world_size=self.dist.world_size)
            self._val_loader = make_loader(self.val_set, sampler, self.cfg.data.workers, persistent=True)
        loader = self._val_loader
        sums: dict[str, float] = defaultdict(float)
        n = 0
        for i, batch in enumerate(loader):
            if self.cfg.val_batches and i >= self.cfg.val_batches:
                break
            with self.rt.autocast():
                out = self.step_fn(self._to_device(batch), train=False)
            for k, v in out.losses.items():
                sums[k] += float(v)
            sums["total"] += float(out.total)
            n += 1
        means = {k: all_reduce_mean(v / max(n, 1), self.device, self.dist) for k, v in sums.items()}
        return means

    # ---- the loop ------------------------------------------------------------------------
    def total_steps(self) -> int:
        if self.cfg.optim.max_steps > 0:
            return self.cfg.optim.max_steps
        return self.sampler.batches_per_epoch() * self.cfg.optim.epochs

    def fit(self, on_log: Callable[[int, dict], None] | None = None) -> TrainSummary:
        cfg = self.cfg
        log = _Logger(self.run_dir, self.dist.is_main, cfg.tensorboard)
        if self.dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml", overwrite=True)
        total = self.total_steps()
        per_epoch = self.sampler.batches_per_epoch()
        window: dict[str, list[float]] = defaultdict(list)
        t_last, steps_last = time.perf_counter(), self.global_step
        frames_per_batch = cfg.data.batch_size * cfg.data.clip_length * self.dist.world_size
        last_total = math.nan
        # one loader for the whole run: its workers persist, and each epoch's iterator reads the
        # sampler's new epoch / start position (starting workers every epoch cost ~0.6 s on 2 cores)
        loader = make_loader(self.train_set, self.sampler, cfg.data.workers, pin_memory=self.device.type == "cuda",
                             persistent=True)
        try:
            while self.global_step < total:
                if self.batch_in_epoch >= per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
                for batch in loader:
                    out = self.train_step(batch)
                    self.global_step += 1
                    self.batch_in_epoch += 1
                    last_total = float(out.total.detach())
                    for k, v in out.losses.items():
                        window[k].append(float(v.detach()))
                    window["total"].append(last_total)
                    step = self.global_step
                    if step % cfg.log_every == 0 or step == total:
                        now = time.perf_counter()
                        rate = (step - steps_last) / max(now - t_last, 1e-9)
                        values = {f"train/{k}": all_reduce_mean(sum(v) / len(v), self.device, self.dist)
                                  for k, v in window.items()}
                        values.update({"lr": self.optimizer.param_groups[0]["lr"], "throughput/steps_per_s": rate,
                                       "throughput/frames_per_s": rate * frames_per_batch,
                                       "epoch": self.epoch})
                        log.scalars(step, values)
                        self.history.append((step, values["train/total"]))
                        if on_log:
                            on_log(step, values)
                        window.clear()
                        t_last, steps_last = now, step
                    if cfg.image_every and step % cfg.image_every == 0 and out.visuals:
                        log.image(step, "train/input|render|mouths", image_grid(out.visuals))
                    if cfg.val_every and step % cfg.val_every == 0:
                        self._validate_and_keep_best(log, step)
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                        self._checkpoint(step)
                    if step >= total:
                        break
            if self.val_set is not None and cfg.val_every and self.global_step % cfg.val_every != 0:
                self._validate_and_keep_best(log, self.global_step)
            self._checkpoint(self.global_step)
        finally:
            log.close()
        return TrainSummary(self.global_step, self.epoch + 1, last_total, self.best_val, list(self.history),
                            self.run_dir)

    def _checkpoint(self, step: int) -> None:
        self.recalibrate_bn()
        self.save(LAST)
        if self.cfg.keep_step_checkpoints:
            self.save(f"step_{step:08d}.pt")
        barrier(self.dist)

    def _validate_and_keep_best(self, log: _Logger, step: int) -> None:
        if self.val_set is None:
            return
        values = self.validate()
        log.scalars(step, {f"val/{k}": v for k, v in values.items()})
        if values.get("total", math.inf) < self.best_val:
            self.best_val = values["total"]
            self.save(BEST)
        barrier(self.dist)


def prepare_run_dir(run_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """A new run needs an empty (or new) folder; ``resume`` needs an existing last checkpoint."""
    run_dir = Path(run_dir)
    last = run_dir / CHECKPOINT_DIR / LAST
    if resume:
        if not last.is_file():
            raise CheckpointError(f"cannot resume: {last} not found")
        return run_dir
    if (run_dir / CHECKPOINT_DIR).exists() and not overwrite:
        raise OutputError(f"{run_dir} already holds a training run (pass --resume to continue it "
                          "or --overwrite to start again)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {run_dir}: {exc.strerror or exc}") from None
    return run_dir


# ---------------------------------------------------------------------------------------------
# the whole run (what `spectre train` calls)
# ---------------------------------------------------------------------------------------------
def build_step(cfg: TrainConfig, store, init: str | None, face_model: str) -> TrainStep:
    kind = STEP_KINDS[face_model]
    if kind.image_size is not None and cfg.data.image_size != kind.image_size:
        raise ConfigError(f"{face_model} training needs --image-size {kind.image_size} (its encoders' input)")
    return kind.build(store, cfg.loss, init, cfg.data, face_model)


def run_training(cfg: TrainConfig, run_dir: str | Path, *, assets: str | None = None, resume: bool = False,
                 overwrite: bool = False, init: str | None = None,
                 on_log: Callable[[int, dict], None] | None = None) -> TrainSummary:
    """Build everything from ``cfg`` (one process, or one rank of a ``torchrun`` job) and train."""
    info = env_dist_info()
    base = Runtime.create(cfg.device, cfg.precision)
    rt = Runtime(device_for_rank(base.device, info), base.precision)
    if rt.device.type == "cpu" and info.enabled:
        configure_threads(max(1, (torch.get_num_threads() or 1) // info.world_size))
    init_distributed(rt.device, info)
    try:
        if info.is_main:
            run_dir = prepare_run_dir(run_dir, resume, overwrite)
        barrier(info)
        run_dir = Path(run_dir)
        torch.manual_seed(cfg.seed)
        store = AssetStore(assets)
        face_model = resolve_face_model(cfg.face_model, store)
        cfg.face_model = face_model
        cfg.data.with_fit = STEP_KINDS[face_model].needs_fit
        cache = PreparedCache.open(cfg.cache)
        train_set = ClipDataset(cache, cache.split(cfg.train_split), cfg.data, train=True, seed=cfg.seed)
        val_ids = cache.split(cfg.val_split) if (cache.root / "splits" / f"{cfg.val_split}.txt").is_file() else []
        val_set = ClipDataset(cache, val_ids, cfg.data, train=False) if val_ids else None
        step = build_step(cfg, store, init, face_model).to(rt.device)
        trainer = Trainer(cfg, step, train_set, val_set, run_dir, rt, info)
        if resume:
            trainer.load(run_dir / CHECKPOINT_DIR / LAST)
        return trainer.fit(on_log)
    finally:
        shutdown_distributed()
