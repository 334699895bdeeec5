"""Evaluation runs: per-video results, the aggregate, and their JSON / markdown forms.

A run is a folder holding ``report.json`` (machine-readable, the thing ``--compare`` reads),
``report.md`` (a table per video and the aggregate) and ``plots/``. Aggregates are unweighted means
over videos (as the paper reports them), NaN-aware.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InputError
from .metrics import LandmarkMetrics, compare_landmarks, group_nme, interocular_distance, lip_aperture

REPORT_VERSION = 1

#: (key, column title, format, better) of the geometric table; better: "low", "high" or "" (neutral)
GEOMETRY_COLUMNS = (
    ("nme_all", "NME", "{:.4f}", "low"),
    ("nme_mouth", "NME mouth", "{:.4f}", "low"),
    ("nme_inner_lips", "NME inner lips", "{:.4f}", "low"),
    ("aperture_r", "aperture r", "{:.3f}", "high"),
    ("aperture_mae", "aperture MAE", "{:.4f}", "low"),
    ("width_r", "width r", "{:.3f}", "high"),
    ("jitter_pred", "jitter", "{:.4f}", "low"),
    ("jitter_ref", "jitter ref", "{:.4f}", ""),
    ("closure_recall", "closure recall", "{:.3f}", "high"),
    ("false_closure_rate", "false closures", "{:.3f}", "low"),
    ("closed_frames_ref", "closed ref", "{:.0f}", ""),
    ("frames", "frames", "{:.0f}", ""),
)
#: (key, title, format) of the independent judges' tables (spectre.evaluate.judge)
JUDGE_COLUMNS = (
    ("nme_mouth", "NME mouth", "{:.4f}"),
    ("aperture_r", "aperture r", "{:.3f}"),
    ("aperture_mae", "aperture MAE", "{:.4f}"),
    ("width_r", "width r", "{:.3f}"),
    ("jitter_pred", "jitter", "{:.4f}"),
    ("jitter_ref", "jitter input", "{:.4f}"),
    ("closure_recall", "closure recall", "{:.3f}"),
    ("false_closure_rate", "false closures", "{:.3f}"),
    ("frames", "frames", "{:.0f}"),
)
#: sides a judge scores against its input landmarks: the render, the tracker's landmarks (the ceiling of a
#: landmark-driven fit), the result's own fitted landmarks
JUDGE_SIDES = ("render", "tracked", "fitted")
#: (key, title) of the lip-reading table (percentages, lower is better)
LIPREAD_COLUMNS = (("wer", "WER %"), ("cer", "CER %"), ("vwer", "viseme WER %"), ("ver", "viseme CER %"))

METRIC_NOTES = {
    "nme_all": "mean landmark distance to the reference over all 68 points, / inter-ocular distance (IOD)",
    "nme_mouth": "same over the 20 mouth points 48-67",
    "nme_inner_lips": "same over the 8 inner-lip points 60-67",
    "aperture_r": "Pearson correlation of inner-lip opening over time, reconstruction vs reference (1 = same rhythm)",
    "aperture_mae": "mean absolute difference of inner-lip opening, / IOD",
    "width_r": "Pearson correlation of mouth width (corners 48-54) over time",
    "jitter_pred": "mean norm of the second temporal difference of the landmarks, / IOD (0 = smooth)",
    "jitter_ref": "the same for the reference landmarks",
    "closure_recall": "share of reference frames with closed lips (opening/IOD < 0.03) that the reconstruction also closes",
    "false_closure_rate": "share of reference frames with open lips that the reconstruction closes",
    "closed_frames_ref": "number of reference frames with closed lips",
    "wer": "word error rate of the lipreader's transcript against the ground truth",
    "cer": "character error rate of the same",
    "vwer": "word error rate on viseme strings (phonemes mapped to mouth shapes; one token per word)",
    "ver": "character error rate on viseme strings",
}


@dataclass
class VideoResult:
    """Everything measured on one video. ``series`` holds per-frame signals for plots (not saved in JSON)."""

    name: str
    prediction: str
    reference: str
    geometry: dict[str, float]
    groups: dict[str, float]
    lipread: dict[str, Any] | None = None
    judges: dict[str, Any] | None = None   #: judge name -> spectre.evaluate.judge.judge_video output
    arkit: dict[str, Any] | None = None    #: spectre.evaluate.judge.arkit_activity of the result
    series: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        out = {"name": self.name, "prediction": self.prediction, "reference": self.reference,
               "geometry": self.geometry, "groups": self.groups}
        if self.lipread is not None:
            out["lipread"] = self.lipread
        if self.judges:
            out["judges"] = self.judges
        if self.arkit is not None:
            out["arkit"] = self.arkit
        return out


def evaluate_geometry(name: str, pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None, *,
                      prediction: str = "", reference: str = "", fps: float = 25.0) -> VideoResult:
    """Geometric metrics of one video plus the per-frame signals the plots draw."""
    m: LandmarkMetrics = compare_landmarks(pred, ref, valid)
    iod = interocular_distance(np.asarray(ref, dtype=np.float64))
    series = {
        "time": np.arange(len(iod)) / float(fps or 25.0),
        "aperture_pred": lip_aperture(np.asarray(pred, dtype=np.float64)) / iod,
        "aperture_ref": lip_aperture(np.asarray(ref, dtype=np.float64)) / iod,
    }
    if valid is not None:
        for key in ("aperture_pred", "aperture_ref"):
            series[key] = np.where(np.asarray(valid, bool), series[key], np.nan)
    return VideoResult(name, prediction, reference, m.as_dict(), group_nme(pred, ref, valid), series=series)


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def aggregate(results: Sequence[VideoResult]) -> dict:
    """Unweighted mean over videos of every numeric metric (NaN entries skipped)."""
    return aggregate_videos([r.to_json() for r in results])


def aggregate_videos(videos: Sequence[dict]) -> dict:
    """``aggregate`` on the JSON form of the videos (``report["videos"]``); None counts as NaN."""
    out: dict[str, Any] = {"videos": len(videos)}
    if not videos:
        return out
    geo_keys = list(videos[0]["geometry"])
    out["geometry"] = {k: _nanmean([v["geometry"].get(k) for v in videos]) for k in geo_keys}
    out["geometry"]["frames"] = int(sum(v["geometry"].get("frames") or 0 for v in videos))
    out["geometry"]["closed_frames_ref"] = int(sum(v["geometry"].get("closed_frames_ref") or 0 for v in videos))
    out["groups"] = {k: _nanmean([v["groups"].get(k) for v in videos]) for k in videos[0]["groups"]}
    lip = [v["lipread"] for v in videos if v.get("lipread") and "error" not in v["lipread"]]
    if lip:
        out["lipread"] = {}
        for side in ("render", "input"):
            rows = [x[side] for x in lip if x.get(side)]
            if rows:
                out["lipread"][side] = {k: _nanmean([row.get(k) for row in rows]) for k, _ in LIPREAD_COLUMNS}
    judged = [v["judges"] for v in videos if v.get("judges")]
    if judged:
        out["judges"] = {}
        for name in sorted({n for j in judged for n in j}):
            runs = [j[name] for j in judged if isinstance(j.get(name), dict) and "error" not in j[name]]
            out["judges"][name] = {side: {k: _nanmean([r[side].get(k) for r in runs if r.get(side)])
                                          for k, _, _ in JUDGE_COLUMNS}
                                   for side in JUDGE_SIDES if any(r.get(side) for r in runs)}
    act = [v["arkit"]["active_per_frame"] for v in videos if v.get("arkit")]
    if act:
        out["arkit_active_per_frame"] = _nanmean(act)
    return out


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    return obj


def build_report(results: Sequence[VideoResult], settings: dict | None = None) -> dict:
    """The JSON document of a run (NaN written as null)."""
    return _json_safe({"version": REPORT_VERSION, "settings": settings or {},
                       "videos": [r.to_json() for r in results], "aggregate": aggregate(results)})


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return fmt.format(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    """Markdown: geometric table (one row per video + mean), lip-reading table, metric glossary."""
    videos, agg = report["videos"], report["aggregate"]
    parts = ["# spectre evaluate", ""]
    header = ["video"] + [title for _, title, _, _ in GEOMETRY_COLUMNS]
    rows = [[v["name"]] + [_fmt(v["geometry"].get(k), f) for k, _, f, _ in GEOMETRY_COLUMNS] for v in videos]
    if videos:
        rows.append(["**mean**"] + [_fmt(agg["geometry"].get(k), f) for k, _, f, _ in GEOMETRY_COLUMNS])
    parts += ["## Geometry (against the reference landmarks)", "", _table(header, rows), ""]
    if videos:
        group_names = list(videos[0]["groups"])
        g_rows = [[v["name"]] + [_fmt(v["groups"].get(g), "{:.4f}") for g in group_names] for v in videos]
        g_rows.append(["**mean**"] + [_fmt(agg["groups"].get(g), "{:.4f}") for g in group_names])
        parts += ["## NME per landmark group", "", _table(["video"] + group_names, g_rows), ""]
    lip_videos = [v for v in videos if v.get("lipread") and "error" not in v["lipread"]]
    if lip_videos:
        header = ["video", "source"] + [t for _, t in LIPREAD_COLUMNS] + ["transcript / hypothesis"]
        rows = []
        for v in lip_videos:
            lr = v["lipread"]
            for side in ("input", "render"):
                if lr.get(side):
                    s = lr[side]
                    rows.append([v["name"], side] + [_fmt(_pct(s.get(k)), "{:.1f}") for k, _ in LIPREAD_COLUMNS]
                                + [f"{lr.get('transcript', '')} / {s.get('hypothesis', '')}"])
        for side in ("input", "render"):
            s = agg.get("lipread", {}).get(side)
            if s:
                rows.append(["**mean**", side] + [_fmt(_pct(s.get(k)), "{:.1f}") for k, _ in LIPREAD_COLUMNS] + [""])
        parts += ["## Lip reading (input = ceiling, render = reconstruction)", "", _table(header, rows), ""]
    parts += _judge_tables(videos, agg)
    parts += ["## Metrics", ""]
    parts += [f"- **{k}**: {v}" for k, v in METRIC_NOTES.items()]
    return "\n".join(parts) + "\n"


def _judge_tables(videos: Sequence[dict], agg: dict) -> list[str]:
    parts: list[str] = []
    names = sorted({n for v in videos for n in (v.get("judges") or {})})
    for name in names:
        header = ["video", "vs input"] + [t for _, t, _ in JUDGE_COLUMNS]
        rows = []
        for v in videos:
            j = (v.get("judges") or {}).get(name)
            if not j:
                continue
            if "error" in j:
                rows.append([v["name"], "error: " + str(j["error"])] + [""] * len(JUDGE_COLUMNS))
                continue
            for side in JUDGE_SIDES:
                if j.get(side):
                    rows.append([v["name"], side] + [_fmt(j[side].get(k), f) for k, _, f in JUDGE_COLUMNS])
        for side, m in agg.get("judges", {}).get(name, {}).items():
            rows.append(["**mean**", side] + [_fmt(m.get(k), f) for k, _, f in JUDGE_COLUMNS])
        parts += [f"## Independent judge: {name} (68 landmarks re-detected on the render and on the input)", "",
                  _table(header, rows), ""]
    act = [(v["name"], v["arkit"]) for v in videos if v.get("arkit")]
    if act:
        rows = [[n, f"{a['active_per_frame']:.2f}", ", ".join(f"{k} {x:.2f}" for k, x in a["top"].items())]
                for n, a in act]
        parts += ["## ARKit curves (weights > 0.1 per frame; shapes by share of frames active)", "",
                  _table(["video", "active / frame", "most active"], rows), ""]
    return parts


def _pct(v: Any) -> Any:
    return None if v is None else 100.0 * v


def write_run(out_dir: str | Path, report: dict, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    js = atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n", overwrite)
    md = atomic_write_text(out_dir / "report.md", markdown_report(report), overwrite)
    return js, md


def load_run(path: str | Path) -> dict:
    """Read a run's ``report.json`` (a folder or the file itself)."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{file}: no evaluation report here") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{file}: not a readable evaluation report ({' '.join(str(exc).split())})") from None
    if not isinstance(report, dict) or "videos" not in report or "aggregate" not in report:
        raise InputError(f"{file}: not an evaluation report (no 'videos'/'aggregate')")
    return report


def compare_runs(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> str:
    """Side-by-side text table of two runs: the means (over the videos both runs scored, when their
    video sets differ), then each shared video's key metrics."""
    lines = []
    va = {v["name"]: v for v in a["videos"]}
    vb = {v["name"]: v for v in b["videos"]}
    shared = [n for n in va if n in vb]
    agg_a, agg_b = a["aggregate"], b["aggregate"]
    if set(va) != set(vb) and shared:
        agg_a = aggregate_videos([va[n] for n in shared])
        agg_b = aggregate_videos([vb[n] for n in shared])
        lines.append(f"means over the {len(shared)} video(s) in both runs")
    elif not shared:
        lines.append("the runs share no video: means over different videos")
    rows = [("videos", agg_a.get("videos"), agg_b.get("videos"), "{:.0f}", "")]
    for k, title, fmt, better in GEOMETRY_COLUMNS:
        rows.append((title, agg_a.get("geometry", {}).get(k), agg_b.get("geometry", {}).get(k), fmt, better))
    for side in ("input", "render"):
        la, lb = agg_a.get("lipread", {}).get(side), agg_b.get("lipread", {}).get(side)
        if la or lb:
            for k, title in LIPREAD_COLUMNS:
                rows.append((f"{title} ({side})", _pct((la or {}).get(k)), _pct((lb or {}).get(k)), "{:.1f}", "low"))
    lines.append(_side_by_side(rows, name_a, name_b))
    if shared:
        lines += ["", f"per video ({len(shared)} in both): NME mouth / aperture r"]
        width = max(len(n) for n in shared)
        for n in shared:
            ga, gb = va[n]["geometry"], vb[n]["geometry"]
            lines.append(f"  {n:<{width}}  {_fmt(ga.get('nme_mouth'), '{:.4f}'):>8} {_fmt(ga.get('aperture_r'), '{:.3f}'):>6}"
                         f"   |  {_fmt(gb.get('nme_mouth'), '{:.4f}'):>8} {_fmt(gb.get('aperture_r'), '{:.3f}'):>6}")
    only = sorted(set(va) ^ set(vb))
    if only:
        lines.append(f"videos in only one run: {', '.join(only)}")
    return "\n".join(lines)


def _side_by_side(rows, name_a: str, name_b: str) -> str:
    w0 = max(len(r[0]) for r in rows)
    wa = max(10, len(name_a))
    wb = max(10, len(name_b))
    out = [f"{'metric':<{w0}}  {name_a:>{wa}}  {name_b:>{wb}}  better"]
    for title, va, vb, fmt, better in rows:
        mark = ""
        if (better and va is not None and vb is not None and math.isfinite(va) and math.isfinite(vb)
                and _fmt(va, fmt) != _fmt(vb, fmt)):  # no winner within the printed precision
            a_wins = va < vb if better == "low" else va > vb
            mark = "A" if a_wins else "B"
        out.append(f"{title:<{w0}}  {_fmt(va, fmt):>{wa}}  {_fmt(vb, fmt):>{wb}}  {mark}")
    return "\n".join(out)
