"""`spectre evaluate` as a library call: inputs -> (prediction, reference) pairs -> metrics -> run folder."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..errors import InputError, SpectreError
from ..io.inputs import IMAGE_FOLDER_HINT, InputItem, display_path
from ..io.inputs import expand_inputs as shared_expand
from .inputs import (ARRAY_SUFFIXES, VIDEO_SUFFIXES, LandmarkSequence, align_lengths, load_landmarks,
                     load_prediction_file, reference_from_result)
from .report import VideoResult, build_report, evaluate_geometry, markdown_report, write_run

NAME_SUFFIXES = ("_grid", "_shape", "_render", "_rendered", "_mouth", "_landmarks", "_result")


@dataclass
class EvaluationOptions:
    reference: Optional[str] = None        #: file, or folder matched by name
    half: str = "full"                     #: half of a side-by-side prediction video
    reference_half: Optional[str] = None   #: half of a reference video (default: other half)
    plots: bool = True
    lipread: bool = False
    transcripts: Optional[str] = None
    video: Optional[str] = None            #: input video(s) for the lip-reading ceiling
    render: Optional[str] = None           #: render video(s) of .npz results, in the input's pixel frame
    g2p: str = "auto"
    assets: Optional[str] = None
    device: str = "auto"


@dataclass
class EvaluationSummary:
    results: list[VideoResult]
    report: dict
    json_path: Path
    md_path: Path
    plot_dir: Optional[Path]
    table: str
    failed: list[tuple[str, str]] = field(default_factory=list)


def video_name(path: Path) -> str:
    """Name shared by a result, its renders and its input: the stem without tool suffixes."""
    stem = path.stem
    for suffix in NAME_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


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


def find_by_name(folder: Path, name: str, suffixes: Sequence[str]) -> Optional[Path]:
    """A file in ``folder`` whose name (without tool suffixes) is ``name``."""
    for q in sorted(folder.iterdir()):
        if q.suffix.lower() in suffixes and video_name(q) == name:
            return q
    return None


def resolve_pair(path: Path, options: EvaluationOptions, single: bool,
                 name: str | None = None) -> tuple[LandmarkSequence, LandmarkSequence]:
    """Prediction and reference landmarks for one input."""
    name = name or video_name(path)
    is_video = path.suffix.lower() in VIDEO_SUFFIXES or path.is_dir()  # a folder: image frames
    pred = load_landmarks(path, options.half, role="prediction") if is_video else load_prediction_file(path)
    other = {"left": "right", "right": "left"}.get(options.half, "full")
    if options.reference:
        ref_half = options.reference_half or "full"
        ref_path = Path(options.reference)
        if ref_path.is_dir():
            found = find_by_name(ref_path, name, ARRAY_SUFFIXES + VIDEO_SUFFIXES)
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
                    overwrite: bool = False, image_folders: bool = False) -> EvaluationSummary:
    """Evaluate every input, write the run folder; per-input failures are collected (one input: raised)."""
    items = input_items(paths, image_folders)
    files = [it.path for it in items]
    names = dict(zip(map(str, files), _names(items)))
    single = len(files) == 1
    results: list[VideoResult] = []
    failed: list[tuple[str, str]] = []
    lipreading = None
    if options.lipread:
        from .lipread import LipreadEvaluator

        lipreading = LipreadEvaluator.from_options(options)
    for path in files:
        name = names[str(path)]
        try:
            pred, ref = resolve_pair(path, options, single, name)
            result = evaluate_geometry(name, pred.points, ref.points, pred.valid & ref.valid,
                                       prediction=pred.source, reference=ref.source, fps=ref.fps)
            results.append(result)
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
    if not results:
        raise InputError("no input could be evaluated: " + "; ".join(f"{p}: {e}" for p, e in failed))
    settings = {"inputs": [str(p) for p in files], "reference": options.reference, "half": options.half,
                "reference_half": options.reference_half, "lipread": options.lipread, "g2p": options.g2p,
                "failed": [{"input": p, "error": e} for p, e in failed]}
    if lipreading is not None:
        settings["lipreader"] = lipreading.describe()
    report = build_report(results, settings)
    json_path, md_path = write_run(out_dir, report, overwrite)
    plot_dir = None
    if options.plots:
        from .plots import plot_aperture, plot_group_errors

        plot_dir = out_dir / "plots"
        for res in results:
            plot_aperture(res, plot_dir / f"{res.name}_aperture.png", overwrite=True)
        plot_group_errors(results, plot_dir / "group_errors.png", overwrite=True)
    table = _console_table(report)
    return EvaluationSummary(results, report, json_path, md_path, plot_dir, table, failed)


def _console_table(report: dict) -> str:
    md = markdown_report(report)
    # the console gets the tables, not the glossary
    return md.split("## Metrics")[0].rstrip()
