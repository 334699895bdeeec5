"""`spectre evaluate` as a library call: inputs -> (prediction, reference) pairs -> metrics -> run folder."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..errors import InputError, SpectreError
from ..io.video import VIDEO_SUFFIXES
from .inputs import (
    ARRAY_SUFFIXES,
    LandmarkSequence,
    align_lengths,
    expand_inputs,
    find_by_name,
    load_landmarks,
    load_prediction_file,
    reference_from_result,
    video_name,
)
from .lipread import LipreadEvaluator
from .options import EvaluationOptions
from .plots import plot_aperture, plot_group_errors
from .report import VideoResult, build_report, evaluate_geometry, markdown_report, write_run

__all__ = ["EvaluationOptions", "EvaluationSummary", "evaluate_inputs", "expand_inputs", "find_by_name",
           "resolve_pair", "video_name"]

@dataclass
class EvaluationSummary:
    results: list[VideoResult]
    report: dict
    json_path: Path
    md_path: Path
    plot_dir: Optional[Path]
    table: str
    failed: list[tuple[str, str]] = field(default_factory=list)


def resolve_pair(path: Path, options: EvaluationOptions, single: bool) -> tuple[LandmarkSequence, LandmarkSequence]:
    """Prediction and reference landmarks for one input."""
    name = video_name(path)
    is_video = path.suffix.lower() in VIDEO_SUFFIXES
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
                    overwrite: bool = False) -> EvaluationSummary:
    """Evaluate every input, write the run folder; per-input failures are collected (one input: raised)."""
    files = expand_inputs(paths)
    single = len(files) == 1
    results: list[VideoResult] = []
    failed: list[tuple[str, str]] = []
    lipreading = None
    if options.lipread:
        lipreading = LipreadEvaluator.from_options(options)
    for path in files:
        name = video_name(path)
        try:
            pred, ref = resolve_pair(path, options, single)
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
