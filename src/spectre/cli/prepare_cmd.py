"""`spectre prepare`: track faces once and store what training needs (landmarks, crops, splits)."""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from .options import add_image_folder, check_workers

HELP = "prepare a training cache from a folder of videos (faces, landmarks, crops, splits)"
DESCRIPTION = """Track the main face of every video under VIDEO_DIR once and store, per clip, its 68
landmarks, face crops and (with --fit) the fit backend's ICT parameters, plus manifest.json and
splits/{train,val,test}.txt. Re-running resumes: finished clips are skipped.

  spectre prepare videos/ -o cache/                         split by folder (speaker/video id)
  spectre prepare lrs3/ -o cache/ --splits LRS3_lists.pkl    the official LRS3 lists
  spectre prepare videos/ -o cache/ --fit --workers 2        also ICT targets (for --model ict training)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", metavar="VIDEO_DIR", help="folder searched recursively for videos (or one video)")
    p.add_argument("-o", "--output", required=True, metavar="CACHE", help="cache folder to create or resume")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--splits", metavar="LISTS", help="official LRS3_lists.pkl, or a folder with train/val/test.txt")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of folders for validation (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of folders for test (default 0.1)")
    p.add_argument("--seed", type=int, default=42, help="seed of the folder split (default 42)")
    p.add_argument("--fit", action="store_true", help="also run the fit backend (targets for ICT training)")
    p.add_argument("--no-crops", action="store_true", help="store landmarks only; training then decodes the videos")
    p.add_argument("--crop-format", choices=("jpg", "raw"), default="jpg", help="stored crop encoding (default jpg)")
    p.add_argument("--crop-size", type=int, default=288, help="stored crop side in pixels (default 288)")
    add_image_folder(p)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..train.prepare import IctFitter, PrepareConfig, prepare_folder, print_progress

    args.workers = check_workers(args.workers)
    if not (0 <= args.val_fraction < 1 and 0 <= args.test_fraction < 1):
        raise ConfigError("--val-fraction and --test-fraction must be in [0, 1)")
    cfg = PrepareConfig(crop_size=args.crop_size, crop_format=args.crop_format, store_crops=not args.no_crops,
                        fit=args.fit, workers=args.workers, val_fraction=args.val_fraction,
                        test_fraction=args.test_fraction, seed=args.seed)
    report = prepare_folder(args.videos, args.output, cfg, split_lists=args.splits,
                            fitter=IctFitter() if args.fit else None, progress=print_progress,
                            image_folders=args.image_folder)
    print(f"prepared {report.prepared} clip(s), {report.skipped_existing} already done, "
          f"{len(report.failed)} failed, in {report.seconds:.1f} s -> {args.output}", file=sys.stderr)
    return 1 if report.failed else 0
