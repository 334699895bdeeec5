"""`spectre track`: find and track faces in videos; write one landmarks npz per input."""
from __future__ import annotations

import argparse
import contextlib

from ..allocator import keep_freed_buffers
from ..errors import InputError, OutputError, SpectreError
from ..faces.crop import FACE_CROP_SCALE
from ..faces.landmarks import OneEuroConfig
from ..faces.track import TrackerConfig, track_video
from ..faces.tracks_file import save_tracks
from ..io.inputs import display_path, expand_inputs
from ..io.video import open_video
from ..progress import frame_bar
from .options import add_image_folder

HELP = "detect and track faces (478-point meshes + iBUG-68 landmarks + crop transforms) in videos"
DESCRIPTION = """Track faces in one or more videos (any format FFmpeg reads), folders, globs, .txt lists
or images; folders are searched recursively for videos (image-frame folders with --image-folder).
Writes <output>/<name>.tracks.npz per input, mirroring a folder's subfolders (format: docs/faces.md).
A bad input is reported on one line and the others go on; the exit code is then 1."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="video files, folders (recursive), globs, .txt lists or images")
    p.add_argument("-o", "--output", default=".", help="output folder (default: current folder)")
    p.add_argument("--face", default="largest", help="largest (per frame, official) | all | TRACK_ID")
    p.add_argument("--max-faces", type=int, default=4, help="faces followed at once (1 is fastest)")
    p.add_argument("--max-gap", type=int, default=5, help="interpolate gaps up to N frames; longer gaps split tracks")
    p.add_argument("--smooth", action="store_true", help="One-Euro temporal filter on the landmarks")
    p.add_argument("--crop-scale", type=float, default=FACE_CROP_SCALE, help="face-crop scale stored with the tracks")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    add_image_folder(p)


def run(args: argparse.Namespace) -> int:
    keep_freed_buffers()  # before any child starts: they inherit the policy
    import sys
    from pathlib import Path

    if args.max_faces < 1 or args.max_gap < 0:
        raise InputError("--max-faces must be >= 1 and --max-gap >= 0")
    cfg = TrackerConfig(max_faces=args.max_faces, max_gap=args.max_gap,
                        smoothing=OneEuroConfig() if args.smooth else None)
    out_dir = Path(args.output)
    items = expand_inputs(args.inputs, image_folders=args.image_folder, exclude=[out_dir])
    failed = 0
    bars = not args.quiet and sys.stderr.isatty()
    for i, item in enumerate(items):
        target = out_dir / f"{item.name}.tracks.npz"
        try:
            if target.exists() and not args.overwrite:
                raise OutputError(f"{display_path(target)} already exists (pass --overwrite to replace it)")
            source = open_video(item.path)
            name = f"{i + 1}/{len(items)} {item.name}" if len(items) > 1 else item.name
            with frame_bar(name, source.num_frames) if bars else contextlib.nullcontext() as bar:
                tracks = track_video(source, face=args.face, config=cfg, progress=bar.update if bar else None)
            target.parent.mkdir(parents=True, exist_ok=True)
            save_tracks(tracks, target, overwrite=args.overwrite, crop_scale=args.crop_scale)
            valid = sum(int(t.valid.sum()) for t in tracks.tracks.values())
            print(f"{display_path(item.path)}: {len(tracks)} frames, {len(tracks.tracks)} track(s), {valid} "
                  f"face-frames -> {display_path(target)}")
        except SpectreError as exc:
            if len(items) == 1:
                raise
            failed += 1
            print(f"spectre: error: {exc}", file=sys.stderr)
    return 1 if failed else 0
