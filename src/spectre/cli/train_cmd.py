"""`spectre train`: train the perceptual encoder on a prepared cache (single process or torchrun)."""
from __future__ import annotations

import argparse

from ..config import from_dict, load_yaml, to_dict
from ..errors import ConfigError

HELP = "train the perceptual (lip-reading) encoder on a prepared cache"
DESCRIPTION = """Train SPECTRE's perceptual encoder on a cache made by `spectre prepare`.

With FLAME + DECA (or SPECTRE) + lipreader + emotion assets it reproduces the official training
(--model flame); without FLAME/DECA it trains an ICT face encoder from videos alone, the fit backend
as teacher (--model ict; prepare the cache with --fit; the lipreader/emotion terms are used when those
assets are installed, else skipped with a note), for `spectre reconstruct --backend learned --model ict
--weights RUN/checkpoints/best.pt`. Checkpoints, TensorBoard logs (RUN/logs) and the resolved config
(RUN/config.yaml) are written to the run folder.

  spectre train cache/ -o runs/a                       official defaults (lr 5e-5, 6 epochs, K=20)
  spectre train cache/ -o runs/a --resume              continue exactly where it stopped
  torchrun --nproc_per_node 4 -m spectre train cache/ -o runs/a      DDP (nccl on GPUs, gloo on CPU)
  spectre train cache/ -o runs/b --config my.yaml --weight lipread=3 --lipread-loss mse
  spectre train cache/ -o runs/ict --model ict --image-size 112 --clip-length 16 --lr 1e-3 --precision bf16
  spectre train cache/ -o runs/ict2 --model ict --init runs/ict/checkpoints/best.pt     start from a run
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", metavar="CACHE", help="folder written by `spectre prepare`")
    p.add_argument("-o", "--output", required=True, metavar="RUN", help="run folder (checkpoints, logs, config)")
    p.add_argument("--config", metavar="YAML", help="config file (a run's config.yaml works); options override it")
    p.add_argument("--model", choices=("auto", "flame", "ict"), help="face model (default auto)")
    p.add_argument("--assets", metavar="DIR", help="asset folder searched first")
    p.add_argument("--init", metavar="CKPT", help="start from weights: 'spectre' (installed model) or a checkpoint")
    p.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint (bit-exact)")
    p.add_argument("--overwrite", action="store_true", help="start again in a RUN folder that holds a run")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="mixed precision (default fp32)")
    p.add_argument("--steps", type=int, help="train exactly this many steps (overrides --epochs)")
    p.add_argument("--epochs", type=int, help="epochs (default 6)")
    p.add_argument("--lr", type=float, help="learning rate (default 5e-5)")
    p.add_argument("--grad-clip", type=float, help="clip the gradient norm (default 0 = off)")
    p.add_argument("--batch-size", type=int, help="clips per step and process (default 1)")
    p.add_argument("--clip-length", type=int, help="frames per clip K (default 20)")
    p.add_argument("--image-size", type=int, help="crop size (default 224; ICT may use less)")
    p.add_argument("--workers", type=int, help="data-loader processes (default 2)")
    p.add_argument("--no-augment", action="store_true",
                   help="first K frames at scale 1.6 instead of a random window and scale (overfitting, debugging)")
    p.add_argument("--precise-bn", type=int, metavar="N",
                   help="recalibrate BatchNorm statistics on N training clips before each validation and "
                        "checkpoint (default: 32 for --model ict, 0 = off; official FLAME training: off)")
    p.add_argument("--seed", type=int, help="seed of data order and augmentation (default 0)")
    p.add_argument("--lipread-loss", choices=("cosine", "mse"), help="lip-reading feature distance")
    p.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE",
                   help="loss weight, e.g. lipread=2 (repeatable; names: landmark, relative_landmark, lipread, "
                        "expression, jaw_reg, expression_reg, lip_landmarks, photometric_texture)")
    for name, what in (("log-every", "log scalars every N steps"), ("image-every", "log image grids every N steps"),
                       ("checkpoint-every", "checkpoint every N steps"), ("val-every", "validate every N steps"),
                       ("val-batches", "validation clips per validation (0 = all)")):
        p.add_argument(f"--{name}", type=int, metavar="N", help=what)


def resolve_config(args: argparse.Namespace):
    """Defaults <- --config (or the run's own config.yaml when resuming) <- command-line options."""
    import dataclasses
    from pathlib import Path

    from ..train.trainer import TrainConfig

    data = to_dict(TrainConfig())
    source = args.config or (Path(args.output) / "config.yaml" if args.resume else None)
    if source and Path(source).is_file():
        _merge(data, load_yaml(source))
    elif args.config:
        raise ConfigError(f"config file not found: {args.config}")
    data["cache"] = args.cache
    top = {"model": "face_model", "device": "device", "precision": "precision", "seed": "seed",
           "log_every": "log_every", "image_every": "image_every", "checkpoint_every": "checkpoint_every",
           "val_every": "val_every", "val_batches": "val_batches", "precise_bn": "precise_bn"}
    sections = {"optim": {"steps": "max_steps", "epochs": "epochs", "lr": "lr", "grad_clip": "grad_clip"},
                "data": {"batch_size": "batch_size", "clip_length": "clip_length", "image_size": "image_size",
                         "workers": "workers"},
                "loss": {"lipread_loss": "lipread_kind"}}
    for arg, key in top.items():
        if getattr(args, arg, None) is not None:
            data[key] = getattr(args, arg)
    for section, names in sections.items():
        for arg, key in names.items():
            if getattr(args, arg, None) is not None:
                data[section][key] = getattr(args, arg)
    if args.no_augment:
        data["data"]["augment"] = False
    known = {f.name for f in dataclasses.fields(TrainConfig().loss)} - {"lipread_kind"}
    for item in args.weight:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise ConfigError(f"--weight {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(known))}")
        try:
            data["loss"][name] = float(value)
        except ValueError:
            raise ConfigError(f"--weight {item!r}: {value!r} is not a number") from None
    cfg = from_dict(TrainConfig, data)
    for section in ("data", "optim", "loss"):
        if isinstance(getattr(cfg, section), dict):
            raise ConfigError(f"config section {section!r} is not a mapping")
    return cfg


def _merge(base: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def run(args: argparse.Namespace) -> int:
    import sys

    from ..train.ddp import env_dist_info
    from ..train.trainer import run_training

    cfg = resolve_config(args)
    main = env_dist_info().is_main

    def show(step: int, values: dict) -> None:
        if main:
            print(f"step {step:>7}  loss {values['train/total']:.4f}  lr {values['lr']:.2e}  "
                  f"{values['throughput/steps_per_s']:.2f} steps/s", file=sys.stderr)

    summary = run_training(cfg, args.output, assets=args.assets, resume=args.resume, overwrite=args.overwrite,
                           init=args.init, on_log=show)
    if main:
        print(f"trained {summary.steps} steps; last loss {summary.last_loss:.4f}; best val "
              f"{summary.best_val:.4f}; checkpoints in {summary.run_dir / 'checkpoints'}", file=sys.stderr)
    return 0
