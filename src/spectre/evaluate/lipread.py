"""Lip reading of renders and inputs: mouth crops -> VSR lipreader -> WER/CER and viseme rates.

Protocol (SPEC §7, §1.3-1.4, §2.3): the face is cropped to 224x224 at scale 1.6 from the *input's*
landmarks (the render lives in the same pixel frame, so it gets the same crop); the mouth is cut from
that crop with the official ``cut_mouth`` (96x96 grayscale around the smoothed mouth landmarks: the
reconstruction's projected landmarks for the render, the tracked ones for the input), centre-cropped
to 88 and normalised; the lipreader decodes with beam 1, CTC weight 0.1, no language model. The
input video is scored the same way, as the ceiling.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..assets import AssetStore
from ..device import Runtime
from ..errors import AssetError, InputError
from ..faces.crop import (
    FACE_CROP_SCALE,
    FACE_CROP_SIZE,
    cut_mouth,
    face_crop_transform,
    interpolate_landmarks,
    mouth_transform,
    transform_points,
    warp_crop_fast,
)
from ..geometry import pixels_to_crop
from ..io.video import VIDEO_SUFFIXES, open_video
from ..nets.checkpoints import load_lipreader
from ..nets.lipreader import DecodeOptions
from .inputs import LandmarkSequence, find_by_name, read_arrays
from .options import EvaluationOptions
from .visemes import G2P, find_viseme_map, make_g2p, normalize_transcript, text_to_visemes

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

#: names of a result's render looked for beside it
RENDER_SUFFIXES = ("_render", "_textured", "_shape")


# --------------------------------------------------------------------------------- text scoring
@dataclass(frozen=True)
class TranscriptScores:
    """Error rates (fractions) of one hypothesis against its transcript; viseme rates None without a table."""

    hypothesis: str
    wer: float
    cer: float
    vwer: float | None = None
    ver: float | None = None
    visemes_hypothesis: str | None = None
    visemes_reference: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _rate(measure: Callable[[str, str], float], reference: str, hypothesis: str) -> float:
    if not reference:
        return math.nan if not hypothesis else 1.0
    return float(measure(reference, hypothesis))


def score_transcript(hypothesis: str, transcript: str, g2p: G2P | None = None,
                     table: dict[str, str] | None = None) -> TranscriptScores:
    """WER/CER of upper-cased, punctuation-free texts (jiwer); viseme WER/CER when ``g2p`` and ``table`` are given."""
    import jiwer

    hyp, ref = normalize_transcript(hypothesis), normalize_transcript(transcript)
    wer, cer = _rate(jiwer.wer, ref, hyp), _rate(jiwer.cer, ref, hyp)
    if g2p is None or table is None:
        return TranscriptScores(hyp, wer, cer)
    vh, vr = text_to_visemes(hyp, g2p, table), text_to_visemes(ref, g2p, table)
    return TranscriptScores(hyp, wer, cer, _rate(jiwer.wer, vr, vh), _rate(jiwer.cer, vr, vh), vh, vr)


_LRS3_TEXT = re.compile(r"^\s*Text:\s*(.*)$", re.MULTILINE)


def load_transcripts(path: str | Path) -> dict[str, str]:
    """Ground-truth transcripts by video name.

    A file: one ``<name> <transcript>`` per line (the official MEAD list format; blank lines and
    ``#`` comments skipped). A folder: ``<name>.txt`` files, plain text or LRS3's ``Text:  ...`` header.
    """
    path = Path(path)
    out: dict[str, str] = {}
    try:
        if path.is_dir():
            for f in sorted(path.glob("*.txt")):
                text = f.read_text(encoding="utf-8", errors="replace")
                m = _LRS3_TEXT.search(text)
                out[f.stem] = normalize_transcript(m.group(1) if m else text)
        else:
            for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split(maxsplit=1)
                if len(parts) < 2:
                    raise InputError(f"{path} line {lineno}: expected '<name> <transcript>'")
                name = Path(parts[0]).stem if "/" in parts[0] or "." in parts[0] else parts[0]
                out[name] = normalize_transcript(parts[1])
    except FileNotFoundError:
        raise InputError(f"{path}: transcripts not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read transcripts: {exc.strerror or exc}") from None
    if not out:
        raise InputError(f"{path}: no transcripts found")
    return out


# ---------------------------------------------------------------------------------- mouth crops
def _filled(points: np.ndarray, what: str) -> np.ndarray:
    filled = interpolate_landmarks(np.asarray(points, dtype=np.float64))
    if filled is None:
        raise InputError(f"{what}: no valid landmarks to crop the mouth")
    return np.asarray(filled, dtype=np.float64)


def read_face_crops(path: Path, transforms: np.ndarray, start: int = 0, half: str = "full") -> np.ndarray:
    """Frames ``start .. start+T-1`` of a video, warped by per-frame 3x3 ``transforms`` to 224x224,
    float32 RGB in [0, 1]; streamed so full-HD clips never sit in memory."""
    T = transforms.shape[0]
    out = np.zeros((T, FACE_CROP_SIZE, FACE_CROP_SIZE, 3), dtype=np.float32)
    got = 0
    for chunk in open_video(path, warn_fps=False).chunks_ahead(16):  # decoded beside the warps
        frames, idx = chunk.frames, np.asarray(chunk.indices) - start
        keep = (idx >= 0) & (idx < T)
        if not keep.any():
            if idx.min() >= T:
                break
            continue
        frames, idx = frames[keep], idx[keep]
        if half != "full":
            w = frames.shape[2] // 2
            frames = frames[:, :, :w] if half == "left" else frames[:, :, w:2 * w]
        out[idx] = warp_crop_fast(np.ascontiguousarray(frames), transforms[idx], FACE_CROP_SIZE)
        got += len(idx)
    if got < T:
        raise InputError(f"{path}: has fewer frames than its landmarks ({start + got} < {start + T})")
    return out


def mouth_sequence(crops: np.ndarray, crop_landmarks: np.ndarray) -> torch.Tensor:
    """224x224 face crops (T,224,224,3) + landmarks in crop pixels (T,68,2) -> lipreader input (T,88,88)."""
    import torch


    images = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2))).float()
    lm = torch.from_numpy(pixels_to_crop(crop_landmarks, FACE_CROP_SIZE)).float()
    mouths = cut_mouth(images.unsqueeze(0), lm.unsqueeze(0), convert_grayscale=True)
    return mouth_transform(mouths)[0]


# ------------------------------------------------------------------------------ render lookup
def reconstruct_render(result: Path, arrays: dict) -> tuple[Path, str] | None:
    """The render video ``spectre reconstruct`` wrote beside ``<name>.npz`` and the half holding the
    render: ``<name>.mp4`` with layout ``grid`` (render | input) -> left, ``render`` -> full."""
    video = result.with_suffix(".mp4")
    if not video.is_file() or "config" not in arrays:
        return None
    try:
        import yaml

        cfg = yaml.safe_load(str(np.asarray(arrays["config"]).reshape(-1)[0])) or {}
        layout = cfg.get("layout")
    except Exception:  # an unreadable config just means: not a spectre render
        return None
    recorded = str(np.asarray(arrays.get("video", "")).reshape(-1)[0]) if "video" in arrays else ""
    if recorded and Path(recorded).resolve() == video.resolve():
        return None  # that is the input itself
    if _face_window(cfg, int(np.asarray(arrays.get("height", 0)).reshape(-1)[0]), layout):
        return None  # a face-centred window (--video-frame): not in the landmarks' pixel frame
    if layout == "grid":
        return video, "left"
    if layout == "render":
        return video, "full"
    if layout == "overlay":
        raise InputError(f"{video}: an overlay render cannot be lip-read; reconstruct with --layout grid or render")
    return None


def _face_window(cfg: dict, height: int, layout) -> bool:
    """Whether ``spectre reconstruct`` made the video in a face-centred window (its ``video_frame``:
    ``face``, or ``auto`` for a grid of an input taller than ``video_height``) rather than the input's frame."""
    mode = cfg.get("video_frame", "full")
    return mode == "face" or (mode == "auto" and layout == "grid" and height > int(cfg.get("video_height", 512)))


# ----------------------------------------------------------------------------------- evaluator
@dataclass
class FrameSource:
    """A video whose frames are in the landmarks' pixel frame: ``path``, side ``half``, first frame ``start``."""

    path: Path
    half: str = "full"
    start: int = 0


class LipreadEvaluator:
    """Reads the render's and the input's lips for each video and scores both against the transcript."""

    def __init__(self, decode: Callable[[torch.Tensor], str], transcripts: dict[str, str],
                 g2p: G2P | None = None, table: dict[str, str] | None = None,
                 videos: str | None = None, renders: str | None = None, half: str = "full",
                 description: dict | None = None):
        self.decode = decode
        self.transcripts = transcripts
        self.g2p = g2p
        self.table = table
        self.videos = Path(videos) if videos else None
        self.renders = Path(renders) if renders else None
        self.half = half
        self.description = description or {}

    @classmethod
    def from_options(cls, options: EvaluationOptions) -> LipreadEvaluator:
        """Load the lipreader assets, the transcripts, the G2P and the viseme table (missing table: no viseme rates)."""
        import torch

        if not options.transcripts:
            raise InputError("--lipread needs --transcripts (a '<name> <TRANSCRIPT>' file or a folder of <name>.txt)")
        transcripts = load_transcripts(options.transcripts)
        store = AssetStore(options.assets)
        runtime = Runtime.create(options.device)
        model = load_lipreader(store).to(runtime.device).eval()
        decode_options = DecodeOptions()

        def decode(mouths: torch.Tensor) -> str:
            with torch.inference_mode():
                return model.decode(mouths.to(runtime.device), decode_options)

        try:
            table = find_viseme_map(store)
            g2p = make_g2p(options.g2p)
        except AssetError as exc:
            log.warning("viseme rates skipped: %s", exc)
            table, g2p = None, None
        description = {"decode": asdict(decode_options), "device": str(runtime.device),
                       "g2p": getattr(g2p, "name", None)}
        return cls(decode, transcripts, g2p, table, options.video, options.render,
                   options.half, description)

    def describe(self) -> dict:
        return dict(self.description)

    # -- frame sources ------------------------------------------------------------------------
    def render_source(self, name: str, path: Path, pred: LandmarkSequence) -> FrameSource:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return FrameSource(path, self.half, pred.offset)
        if self.renders is not None:
            if self.renders.is_file():
                return FrameSource(self.renders, self.half, pred.offset)

            found = find_by_name(self.renders, name, VIDEO_SUFFIXES)
            if found is not None:
                return FrameSource(found, self.half, pred.offset)
        written = reconstruct_render(path, pred.extras.get("arrays", {}))
        if written is not None:
            return FrameSource(written[0], written[1], pred.offset)
        for suffix in RENDER_SUFFIXES:
            for ext in (".mp4", ".avi", ".mkv"):
                candidate = path.parent / f"{name}{suffix}{ext}"
                if candidate.is_file():
                    return FrameSource(candidate, "full", pred.offset)
        raise InputError(f"{path}: lip reading needs the reconstruction rendered in the input's pixel frame: "
                         f"run spectre reconstruct with --layout grid or render, or pass --render")

    def input_source(self, name: str, path: Path, ref: LandmarkSequence) -> FrameSource | None:
        if self.videos is not None:
            if self.videos.is_dir():
                found = find_by_name(self.videos, name, VIDEO_SUFFIXES)
                if found is None:
                    raise InputError(f"{name}: no input video of that name in {self.videos}")
                return FrameSource(found, "full", ref.offset)
            return FrameSource(self.videos, "full", ref.offset)
        if ref.video is not None:
            return FrameSource(Path(ref.video), ref.half, ref.offset)
        if path.suffix.lower() == ".npz":
            written = reconstruct_render(path, ref.extras.get("arrays") or read_arrays(path))
            if written is not None and written[1] == "left":  # the grid's right half is the input
                return FrameSource(written[0], "right", ref.offset)
        return None

    # -- reading -------------------------------------------------------------------------------
    def read_lips(self, source: FrameSource, mouth_points: np.ndarray, crop_points: np.ndarray) -> str:
        transforms = np.asarray(face_crop_transform(crop_points, scale=FACE_CROP_SCALE, size=FACE_CROP_SIZE))
        crops = read_face_crops(source.path, transforms, source.start, source.half)
        mouth_in_crop = np.asarray(transform_points(transforms, mouth_points))
        return self.decode(mouth_sequence(crops, mouth_in_crop))

    def evaluate(self, name: str, path: Path, pred: LandmarkSequence, ref: LandmarkSequence) -> dict[str, Any]:
        """``{"transcript", "render": scores, "input": scores | None}`` for one video."""
        transcript = self.transcripts.get(name)
        if transcript is None:
            raise InputError(f"{name}: no transcript for this video")
        ref_pts = _filled(ref.points, f"{ref.source}")
        pred_pts = _filled(pred.points, f"{pred.source}")
        out: dict[str, Any] = {"transcript": transcript}
        render_text = self.read_lips(self.render_source(name, path, pred), pred_pts, ref_pts)
        out["render"] = score_transcript(render_text, transcript, self.g2p, self.table).as_dict()
        src = self.input_source(name, path, ref)
        out["input"] = None if src is None else \
            score_transcript(self.read_lips(src, ref_pts, ref_pts), transcript, self.g2p, self.table).as_dict()
        return out
