"""`spectre evaluate`: geometric and lip-reading metrics of reconstructions, reports and plots."""
from __future__ import annotations

import argparse

from ..atomic import atomic_write_text, check_writable
from ..errors import InputError
from ..evaluate.report import compare_runs, load_run
from ..progress import progress_bar
from .options import add_image_folder

HELP = "score reconstructions against the input: landmark/mouth metrics, lip reading, reports, plots"
DESCRIPTION = """Score reconstructions (ours or another tool's) against the input video.

  spectre evaluate results/ -o eval/                      `spectre reconstruct` results vs their tracked landmarks
  spectre evaluate pred.npy -r ref.npy -o eval/           any (T,68,2) landmark arrays
  spectre evaluate clip_grid.mp4 --half left -o eval/     a rendered video, re-tracked; the reference is
                                                          the other half of the same video by default
  spectre evaluate render.mp4 -r input.mp4 -o eval/       a render in the input's pixel frame vs the input
  spectre evaluate RESULTS -o eval/ --lipread --transcripts lrs3_test.txt
  spectre evaluate --compare eval_A/ eval_B/              both runs side by side (-o DIR: also DIR/compare.md)

Writes OUT/report.json, OUT/report.md and OUT/plots/*.png. Landmarks of the prediction and of the
reference must be in the same pixel frame (same video size, or the same crop).
"""

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="result .npz, (T,68,2) .npy/.npz, rendered video, or a folder of them")
    p.add_argument("-r", "--reference", metavar="PATH",
                   help="reference landmarks (array file or video), or a folder with one per input (matched by name)")
    p.add_argument("--half", choices=("full", "left", "right"), default="full",
                   help="for side-by-side videos: the half holding the reconstruction (official grid: left)")
    p.add_argument("--reference-half", choices=("full", "left", "right"), default=None,
                   help="half of a reference video holding the input (default: full for -r, else the other half of "
                        "the --half video)")
    p.add_argument("-o", "--output", metavar="DIR", default=None,
                   help="run folder (default: ./evaluation); with --compare, where compare.md is written")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in the run folder")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    p.add_argument("--judge", action="append", choices=("dlib", "mediapipe", "none"), metavar="dlib|mediapipe|none",
                   help="independent judge re-detecting 68 landmarks on the render and on the input (repeatable; "
                        "default: every installed one; none: off). Needs the render (--layout render or grid)")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                   help="print two runs side by side (and write OUT/compare.md when -o is given) and exit")
    add_image_folder(p)
    lr = p.add_argument_group("lip reading (needs the lipreader assets)")
    lr.add_argument("--lipread", action="store_true",
                    help="decode the mouth of the render and of the input with the lipreader")
    lr.add_argument("--transcripts", metavar="PATH",
                    help="ground truth: a text file of '<name> <TRANSCRIPT>' lines, or a folder of <name>.txt")
    lr.add_argument("--video", metavar="PATH", help="input video (or folder of them, matched by name) for the ceiling")
    lr.add_argument("--render", metavar="PATH",
                    help="render video (or folder, matched by name) of .npz results, in the input's pixel frame "
                         "(default: the <name>.mp4 spectre reconstruct wrote with --layout grid or render)")
    lr.add_argument("--g2p", choices=("auto", "cmudict", "espeak"), default="auto",
                    help="phonemiser for viseme rates (auto: espeak-ng when installed, else cmudict)")
    lr.add_argument("--assets", metavar="DIR", help="asset folder searched first")
    lr.add_argument("--device", default="auto", help="device for the lipreader (auto, cpu, cuda, mps)")


def run(args: argparse.Namespace) -> int:
    import logging
    import sys
    from pathlib import Path

    logging.basicConfig(level=logging.WARNING, format="spectre: warning: %(message)s")
    if args.compare:
        a, b = (load_run(p) for p in args.compare)
        text = f"A = {args.compare[0]}\nB = {args.compare[1]}\n\n{compare_runs(a, b)}\n"
        if args.output is not None:
            target = Path(args.output) / "compare.md"
            check_writable(target, args.overwrite)
            atomic_write_text(target, text, overwrite=args.overwrite)
        print(text, end="")
        if args.output is not None:
            print(f"comparison: {target}")
        return 0
    if not args.inputs:
        raise InputError("nothing to evaluate: give result files, landmark arrays or rendered videos (or --compare A B)")
    from ..evaluate.pipeline import EvaluationOptions, evaluate_inputs

    out = Path(args.output if args.output is not None else "evaluation")
    check_writable(out / "report.json", args.overwrite)
    options = EvaluationOptions(
        reference=args.reference, half=args.half, reference_half=args.reference_half, plots=not args.no_plots,
        lipread=args.lipread, transcripts=args.transcripts, video=args.video, render=args.render, g2p=args.g2p,
        assets=args.assets, device=args.device,
        judges=None if not args.judge else [j for j in dict.fromkeys(args.judge) if j != "none"])
    bar = progress_bar("inputs", None, "input") if not args.quiet and sys.stderr.isatty() else None

    def advance(done: int, total: int) -> None:  # a judged video re-detects landmarks on all its frames: slow
        bar.total, bar.n = total, done
        bar.refresh()

    try:
        summary = evaluate_inputs([Path(p) for p in args.inputs], out, options, overwrite=args.overwrite,
                                  image_folders=args.image_folder, progress=advance if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    print(summary.table)
    for path, error in summary.failed:
        print(f"spectre: failed: {error}" if error.startswith(path) else f"spectre: failed: {path}: {error}",
              file=sys.stderr)
    print(f"report: {summary.json_path}  {summary.md_path}" + (f"  plots: {summary.plot_dir}" if summary.plot_dir else ""))
    return 1 if summary.failed else 0
