"""`spectre evaluate` as a library call: inputs -> (prediction, reference) pairs -> metrics -> run folder."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, SpectreError
from ..io.inputs import IMAGE_FOLDER_HINT, InputItem, display_path
from ..io.inputs import expand_inputs as shared_expand
from ..io.video import VIDEO_SUFFIXES
from .inputs import (
    ARRAY_SUFFIXES,
    LandmarkSequence,
    align_lengths,
    find_by_name,
    load_landmarks,
    load_prediction_file,
    reference_from_result,
    video_name,
)
from .judge import VideoSide, arkit_activity, judge_video, make_judges
from .lipread import RENDER_SUFFIXES, LipreadEvaluator, reconstruct_render
from .options import EvaluationOptions
from .plots import plot_aperture, plot_group_errors
from .report import VideoResult, build_report, evaluate_geometry, markdown_report, write_run


@dataclass
class EvaluationSummary:
    results: list[VideoResult]
    report: dict
    json_path: Path
    md_path: Path
    plot_dir: Path | None
    table: str
    failed: list[tuple[str, str]] = field(default_factory=list)


def input_items(paths: Sequence[Path], image_folders: bool = False) -> list[InputItem]:
    """Files as given; a folder (walked recursively, :mod:`spectre.io.inputs`) contributes its .npz/.npy
    files, or else its videos (and, with ``image_folders``, its image-frame folders)."""
    out: list[InputItem] = []
    for p in paths:
        if p.is_dir():
            try:
                out += shared_expand([p], suffixes=ARRAY_SUFFIXES)
            except InputError:
                try:
                    out += shared_expand([p], suffixes=VIDEO_SUFFIXES, image_folders=image_folders)
                except InputError:
                    hint = "" if image_folders else f" ({IMAGE_FOLDER_HINT} to evaluate frames)"
                    raise InputError(f"{display_path(p)}: folder holds no result files, landmark arrays or "
                                     f"videos{hint}") from None
        elif p.exists():
            out.append(InputItem(p, p.stem))
        else:
            raise InputError(f"{display_path(p)}: file not found")
    return out


def expand_inputs(paths: Sequence[Path], image_folders: bool = False) -> list[Path]:
    return [it.path for it in input_items(paths, image_folders)]


def _names(items: Sequence[InputItem]) -> list[str]:
    """Report names: the file's name without tool suffixes; in a tree where two share one, the
    relative folder joins it (``spk1_00001``)."""
    names = [video_name(it.path) for it in items]
    if len(set(names)) < len(names):
        names = [video_name(Path(it.name.replace("/", "_") + it.path.suffix)) for it in items]
    return names


def resolve_pair(path: Path, options: EvaluationOptions, single: bool, name: str | None = None,
                 folder: str = "") -> tuple[LandmarkSequence, LandmarkSequence]:
    """Prediction and reference landmarks for one input (``folder``: its subfolder in a walked tree,
    where a reference folder is searched first: ``ref/spk1/00001.mp4`` for ``results/spk1/00001.npz``)."""
    name = name or video_name(path)
    is_video = path.suffix.lower() in VIDEO_SUFFIXES or path.is_dir()  # a folder: image frames
    pred = load_landmarks(path, options.half, role="prediction") if is_video else load_prediction_file(path)
    other = {"left": "right", "right": "left"}.get(options.half, "full")
    if options.reference:
        ref_half = options.reference_half or "full"
        ref_path = Path(options.reference)
        if ref_path.is_dir():
            found = None
            if folder and (ref_path / folder).is_dir():
                found = find_by_name(ref_path / folder, video_name(path), ARRAY_SUFFIXES + VIDEO_SUFFIXES)
            found = found or find_by_name(ref_path, name, ARRAY_SUFFIXES + VIDEO_SUFFIXES)
            if found is None:
                raise InputError(f"{path}: no reference named {name!r} in {ref_path}")
            ref_path = found
        elif not single:
            raise InputError(f"--reference {ref_path} is one file but there are several inputs: give a folder")
        ref = load_landmarks(ref_path, ref_half, role="reference")
    elif not is_video:
        ref = reference_from_result(path, pred.extras.get("arrays"))
        if ref is None:
            raise InputError(f"{path}: holds no tracked landmarks to compare with: pass --reference")
    elif options.half != "full":  # the other half of the same side-by-side video
        ref = load_landmarks(path, options.reference_half or other, role="reference")
    else:
        raise InputError(f"{path}: a rendered video needs --reference (the input video or its landmarks) "
                         "or --half for a side-by-side video")
    return align_lengths(pred, ref, name)


def evaluate_inputs(paths: Sequence[Path], out_dir: Path, options: EvaluationOptions,
                    overwrite: bool = False, image_folders: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> EvaluationSummary:
    """Evaluate every input, write the run folder; per-input failures are collected (one input: raised).
    ``progress(done, total)`` is told how many inputs are done: 0 before the first, then after each."""
    items = input_items(paths, image_folders)
    files = [it.path for it in items]
    names = dict(zip(map(str, files), _names(items)))
    folders = {str(it.path): it.name.rpartition("/")[0] for it in items}
    single = len(files) == 1
    results: list[VideoResult] = []
    failed: list[tuple[str, str]] = []
    judges = make_judges(options.judges)
    skipped_judge: list[str] = []
    lipreading = None
    if options.lipread:
        lipreading = LipreadEvaluator.from_options(options)
    for done, path in enumerate(files):
        if progress is not None:
            progress(done, len(files))
        name = names[str(path)]
        try:
            pred, ref = resolve_pair(path, options, single, name, folders[str(path)])
            result = evaluate_geometry(name, pred.points, ref.points, pred.valid & ref.valid,
                                       prediction=pred.source, reference=ref.source, fps=ref.fps)
            results.append(result)
            if judges:
                _judge(result, path, name, pred, ref, options, judges, skipped_judge, failed, single)
            if path.suffix.lower() == ".npz":
                result.arkit = arkit_activity(path.with_name(f"{path.stem}_arkit.csv"))
            if lipreading is not None:
                try:
                    result.lipread = lipreading.evaluate(name, path, pred, ref)
                except SpectreError as exc:  # keep the geometry, record why the lips were not read
                    if single:
                        raise
                    result.lipread = {"error": str(exc)}
                    failed.append((str(path), f"lip reading: {exc}"))
        except SpectreError as exc:
            if single:
                raise
            failed.append((str(path), str(exc)))
    if progress is not None:
        progress(len(files), len(files))
    if not results:
        raise InputError("no input could be evaluated: " + "; ".join(f"{p}: {e}" for p, e in failed))
    settings = {"inputs": [str(p) for p in files], "reference": options.reference, "half": options.half,
                "reference_half": options.reference_half, "lipread": options.lipread, "g2p": options.g2p,
                "failed": [{"input": p, "error": e} for p, e in failed]}
    settings["judges"] = [j.name for j in judges]
    if skipped_judge:
        settings["judge_skipped"] = skipped_judge
    if lipreading is not None:
        settings["lipreader"] = lipreading.describe()
    report = build_report(results, settings)
    json_path, md_path = write_run(out_dir, report, overwrite)
    plot_dir = None
    if options.plots:
        plot_dir = out_dir / "plots"
        for res in results:
            plot_aperture(res, plot_dir / f"{res.name}_aperture.png", overwrite=True)
        plot_group_errors(results, plot_dir / "group_errors.png", overwrite=True)
    table = _console_table(report)
    return EvaluationSummary(results, report, json_path, md_path, plot_dir, table, failed)


def judge_sides(path: Path, name: str, pred: LandmarkSequence, ref: LandmarkSequence,
                options: EvaluationOptions) -> tuple[VideoSide, VideoSide] | None:
    """(render, input) videos of one evaluated item, in the same pixel frame; None when either is unknown.

    A rendered video input is its own render (``--half``), its input the reference video (``-r``) or the
    other half. A result ``.npz`` uses ``--render`` or the render ``spectre reconstruct`` wrote beside it,
    and ``--video``, the input video it records, or the input half of its grid render."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if ref.video is None:
            return None
        return VideoSide(path, options.half, pred.offset), VideoSide(Path(ref.video), ref.half, ref.offset)
    if path.suffix.lower() != ".npz":
        return None
    arrays = pred.extras.get("arrays") or {}
    render = None
    if options.render:
        rp = Path(options.render)
        found = find_by_name(rp, name, VIDEO_SUFFIXES) if rp.is_dir() else rp
        if found is not None:
            render = VideoSide(found, options.half, pred.offset)
    written = reconstruct_render(path, arrays) if "config" in arrays else None
    if render is None and written is not None:
        render = VideoSide(written[0], written[1], pred.offset)
    if render is None:
        for suffix in RENDER_SUFFIXES:
            cand = path.parent / f"{name}{suffix}.mp4"
            if cand.is_file():
                render = VideoSide(cand, "full", pred.offset)
                break
    if render is None:
        return None
    if options.video:
        vp = Path(options.video)
        found = find_by_name(vp, name, VIDEO_SUFFIXES) if vp.is_dir() else vp
        if found is not None:
            return render, VideoSide(found, "full", ref.offset)
    if ref.video is not None:
        return render, VideoSide(Path(ref.video), ref.half, ref.offset)
    if written is not None and written[1] == "left":  # the grid's right half is the input
        return render, VideoSide(written[0], "right", ref.offset)
    return None


def _judge(result, path, name, pred, ref, options, judges, skipped, failed, single) -> None:
    sides = judge_sides(path, name, pred, ref, options)
    if sides is None:
        skipped.append(f"{name}: no render and input video to re-detect (reconstruct with --layout render, "
                       "or grid with --video-frame full for inputs taller than 512 px)")
        return
    is_result = path.suffix.lower() == ".npz"
    result.judges = {}
    for judge in judges:
        try:
            result.judges[judge.name] = judge_video(judge, sides[0], sides[1], len(pred),
                                                    tracked=ref.points if is_result else None,
                                                    fitted=pred.points if is_result else None)
        except SpectreError as exc:
            if single:
                raise
            result.judges[judge.name] = {"error": str(exc)}
            failed.append((str(path), f"judge {judge.name}: {exc}"))


def _console_table(report: dict) -> str:
    md = markdown_report(report)
    # the console gets the tables, not the glossary
    return md.split("## Metrics")[0].rstrip()
