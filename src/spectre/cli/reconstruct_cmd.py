"""`spectre reconstruct INPUT... -o OUTDIR`: 3D face parameters, ARKit weights and renders for videos."""
from __future__ import annotations

import argparse
import os
import sys

from ..allocator import keep_freed_buffers
from ..collector import imports_kept
from ..errors import SpectreError
from ..io.inputs import display_path, expand_inputs
from ..io.video import open_video
from ..progress import frame_bar
from ..reconstruct.stagespawn import SpawnedStages, clip_uses_processes
from ..reconstruct.tracked import CutSettings
from ..reconstruct.trackproc import TrackProcess, queued_chunks
from .options import add_image_folder, check_workers

HELP = "reconstruct 3D faces from videos (parameters, ARKit CSV, render video)"
DESCRIPTION = """\
Reconstruct the face in each input video and write, per video, into OUTDIR:
  <name>.npz        per-frame face-model parameters, camera, landmarks, crop transforms (docs/reconstruct.md)
  <name>_arkit.csv  per-frame ARKit blendshape weights (--arkit-format livelink: <name>_livelink.csv in
                    the Live Link Face app's layout, with head and eye angles, for Unreal/MetaHuman)
  <name>.mp4        render with the input's audio (--layout grid|overlay|render; none to skip)
  <name>.yaml       the resolved config and the list of outputs (marks the video as finished)
INPUT may be video files, folders (searched recursively; OUTDIR mirrors their subfolders:
lrs3/spk1/00001.mp4 -> OUTDIR/spk1/00001.npz), globs or .txt files listing paths. Finished videos are
skipped (resume) when the finished result is of the same video; --overwrite redoes them. The exit code
is 1 if any video failed (see the summary).

backends: fit (default; landmark fit of the ICT model, nothing to download) or learned (official
SPECTRE encoders, which need the FLAME, DECA and SPECTRE assets, see `spectre assets`; or with
--model ict an encoder you trained: --weights RUN/checkpoints/best.pt or asset ict-encoder)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders (recursive), globs or .txt lists")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--backend", choices=("fit", "learned"), help="reconstruction backend (default fit)")
    p.add_argument("--model", choices=("ict", "flame"), help="face model (default: ict for fit; for learned the "
                   "--weights file's model, else flame with the official encoders)")
    p.add_argument("--weights", metavar="CKPT", help="learned backend: a face-encoder checkpoint "
                   "(`spectre train --model ict`: RUN/checkpoints/best.pt); picks --model from the file")
    p.add_argument("--face", metavar="largest|all|ID", help="which face track(s) to reconstruct (default largest)")
    p.add_argument("--layout", choices=("grid", "overlay", "render", "none"),
                   help="render video layout (default grid: mesh | input side by side)")
    p.add_argument("--render-colours", choices=("tinted", "grey"),
                   help="colours of the rendered mesh: tinted (default: red lips, a dark mouth inside, eyes and brows "
                        "on the grey face, so the mouth reads) or grey (the official uniform grey shape)")
    p.add_argument("--video-frame", choices=("auto", "face", "full"),
                   help="what the video shows: face (a face-centred window, at most 512 px high), full (the "
                        "whole frame) or auto (default: face for inputs taller than 512 px, else full)")
    p.add_argument("--meshes", choices=("obj", "ply", "glb"),
                   help="also export meshes: obj/ply per frame, or glb: one animated scene for Blender/Unreal "
                        "(ARKit shape keys, head motion in metres, a node per face)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="network precision of the learned backend (default auto: bf16 where the CPU/GPU has native "
                        "bf16, else fp32)")
    p.add_argument("--config", metavar="FILE", help="YAML config (keys as in a saved <name>.yaml 'config')")
    p.add_argument("--assets", metavar="DIR", help="asset folder (else $SPECTRE_HOME, then the user data dir)")
    p.add_argument("--no-arkit", action="store_true", help="do not write the ARKit CSV")
    p.add_argument("--arkit-format", choices=("csv", "livelink", "both"),
                   help="ARKit curves as our CSV (default), as a Live Link Face CSV (<name>_livelink.csv), or both")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="videos processed in parallel (processes)")
    p.add_argument("--ray", metavar="ADDRESS", help="run the videos on a Ray cluster (needs spectre-face[ray]; "
                                                   "'local' starts an in-process one)")
    p.add_argument("--overwrite", action="store_true", help="redo finished videos and replace their outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_image_folder(p)


def run(args: argparse.Namespace) -> int:
    keep_freed_buffers()  # before any child starts: they inherit the policy
    workers = check_workers(args.workers)
    items = expand_inputs(args.inputs, image_folders=args.image_folder, exclude=[args.output])
    # the default job's stage process and its tracking need no torch here: start both now, on the core
    # that importing torch and loading the face model leave idle (each is stopped if the job does not use it)
    spawned = ahead = bar = None
    if (items and workers == 1 and not args.ray and args.backend != "learned" and not args.weights
            and args.face in (None, "largest")):
        try:
            first = open_video(items[0].path, warn_fps=False)
        except SpectreError:  # not a readable video (its job says so): no process for it
            first = None
        if first is not None:
            video = args.layout != "none"
            settings = CutSettings(video=video).with_given(layout=args.layout, video_frame=args.video_frame)
            size = (first.width, first.height)
            # tracked in a process of its own while this one imports torch (as a thread here it shared one
            # GIL with the import: the 41-frame README clip took 1 s longer); with torch already imported
            # (the command called from Python) there is nothing to hide and the job tracks at once itself
            early = "torch" not in sys.modules
            if video and clip_uses_processes(first.num_frames):
                # with a queue for the tracking process's windows, which then never pass through this one
                spawned = SpawnedStages(("video",), frames=queued_chunks(settings, *size) if early else 0)
            if early:
                ahead = TrackProcess(items[0].path, settings, size=size,
                                     frames_to=spawned.frames if spawned is not None else None)
            if len(items) == 1 and _shows_progress(args):  # shown now, not after torch's import
                bar = frame_bar(items[0].path.name, first.num_frames)
    try:
        return _run(args, workers, items, ahead, spawned, bar)
    finally:
        for early in (ahead, spawned, bar):
            if early is not None:
                early.close()  # a no-op once the job used it


def _shows_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _run(args: argparse.Namespace, workers: int, items, ahead: TrackProcess | None,
         spawned: SpawnedStages | None, bar) -> int:
    with imports_kept():
        from ..reconstruct.batch import run_batch
        from ..reconstruct.config import make_config

    cfg = make_config(args.config, backend=args.backend, model=args.model, face=args.face, layout=args.layout,
                      render_colours=args.render_colours,
                      video_frame=args.video_frame, meshes=args.meshes, device=args.device,
                      precision=args.precision, assets=args.assets, arkit=False if args.no_arkit else None,
                      arkit_format=args.arkit_format,
                      learned={"weights": args.weights} if args.weights else None)
    progress = _shows_progress(args)

    def report(outcome):  # as it happens in a batch; the summary lists every failure once more at the end
        if outcome.status == "failed" and not progress and len(items) > 1:
            print(f"spectre: {display_path(outcome.video)}: {outcome.message}", file=sys.stderr)

    summary = run_batch(items, args.output, cfg, overwrite=args.overwrite, workers=workers,
                        ray_address=args.ray, progress=progress, on_done=report, stage_processes=True,
                        track_ahead=ahead, spawned_stages=spawned, first_bar=bar)
    print(summary.text(), file=sys.stderr)
    line = wrote_line(summary.outcomes, args.output)
    if line:
        print(line, file=sys.stderr)
    return summary.exit_code


def wrote_line(outcomes, output: str) -> str:
    """The last line: where the outputs are (``wrote out/clip.{npz,mp4,yaml,_arkit.csv}`` for one video)."""
    from pathlib import Path

    done = [o for o in outcomes if o.status == "ok" and o.outputs]
    if not done:
        return ""
    if len(done) > 1:
        return f"wrote {len(done)} videos' outputs to {display_path(Path(output))}{os.sep}"
    paths = [Path(p) for p in done[0].outputs]
    stem = next((p.stem for p in paths if p.suffix == ".yaml"), paths[0].stem)
    tails = [p.name[len(stem):] for p in paths if p.name.startswith(stem)]
    tails = [t[1:] if t.startswith(".") else t for t in tails]
    tails.sort(key=lambda t: t.startswith("_"))  # extensions first, then suffixed names (stable)
    return display_path(f"wrote {Path(output) / stem}.{{{','.join(tails)}}}")
