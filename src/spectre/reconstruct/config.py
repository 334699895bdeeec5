"""What decides a reconstruction: :class:`ReconstructConfig` (saved, resolved, next to every output),
the learned backend's settings, and :func:`make_config` (defaults <- YAML <- explicit overrides)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import check_fields, from_dict, load_yaml, setting, to_dict
from ..device import PRECISIONS, resolve_device, resolve_precision
from ..errors import ConfigError
from ..faces.crop import FACE_CROP_SCALE
from ..io.video import CHUNK_MB
from ..models import DEFAULT_MODEL, MODEL_NAMES
from .encoder_backend import encoder_model
from .fit import FitConfig
from .learned import LEARNED_MODEL
from .window import VIDEO_FRAMES

__all__ = ["ARKIT_FORMATS", "BACKENDS", "LAYOUTS", "MESH_FORMATS", "LearnedConfig", "PipelineConfig",
           "ReconstructConfig", "make_config"]

BACKENDS = ("fit", "learned")
LAYOUTS = ("grid", "overlay", "render", "none")
#: the video render's colours: ``tinted`` (the model's ``render_colours()``: red lips, a dark mouth inside,
#: eyes and brows on the grey face) or the official uniform ``grey``
RENDER_COLOURS = ("tinted", "grey")
MESH_FORMATS = ("obj", "ply", "glb")
#: ARKit curve files: ours (``<name>_arkit.csv``), Live Link Face's (``<name>_livelink.csv``) or both
ARKIT_FORMATS = ("csv", "livelink", "both")


@dataclass
class LearnedConfig:
    """Official SPECTRE inference settings (SPEC §1.3, §1.5)."""

    chunk_length: int = setting(50, min=5)
    chunk_overlap: int = setting(4, min=0)  # and below chunk_length
    edge_padding: int = setting(2, min=0)
    fast: bool = True  # channels-last + reduced precision where the device supports it
    #: a face-encoder checkpoint (``spectre train --model ict``: RUN/checkpoints/best.pt); None: the official
    #: encoders for FLAME, the installed ``<model>-encoder`` asset for other models
    weights: str | None = None


@dataclass
class PipelineConfig:
    """How the default job is scheduled (docs/performance.md): decode, track, fit, render and encode
    overlap in bounded queues; the fit's identity comes from the first ``identity_span`` frames and its
    windows of ``window`` frames are solved as soon as they are tracked."""

    overlap: bool = True
    identity_span: int = setting(128, min=1)
    window: int = setting(128, min=4)
    #: decoded frames held per tracking chunk, in MB (1080p: about 10 frames)
    chunk_mb: int = setting(CHUNK_MB, min=1)


@dataclass
class ReconstructConfig:
    """Everything that decides a reconstruction; saved (resolved) next to every output. The types,
    ranges and choices below are the schema :func:`spectre.config.check_fields` enforces."""

    backend: str = setting("fit", choices=BACKENDS)
    model: str | None = setting(None, choices=MODEL_NAMES)  # resolved by validate(): DEFAULT_MODEL / LEARNED_MODEL
    face: str = "largest"  # largest | all | <track id>
    device: str = "auto"
    precision: str = setting("auto", choices=PRECISIONS)  # resolved by validate(): bf16 where native, else fp32
    layout: str = setting("grid", choices=LAYOUTS)
    render_colours: str = setting("tinted", choices=RENDER_COLOURS)
    #: what the video shows: auto (face above ``video_height`` px high, else full) | face (a face-centred
    #: window at most ``video_height`` px high) | full (the whole frame at the input's resolution)
    video_frame: str = setting("auto", choices=VIDEO_FRAMES)
    video_height: int = setting(512, min=64, max=4096)
    meshes: str | None = setting(None, choices=MESH_FORMATS)
    crop_scale: float = setting(FACE_CROP_SCALE, min=1.0, max=3.0)
    assets: str | None = None
    arkit: bool = True
    arkit_format: str = setting("csv", choices=ARKIT_FORMATS)  # ours, Live Link Face's, or both
    track_chunk: int = setting(64, min=1, max=4096)
    fit: FitConfig = field(default_factory=FitConfig)
    learned: LearnedConfig = field(default_factory=LearnedConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def validate(self, where: str = "config") -> ReconstructConfig:
        """Check every value against the schema (one-line ``ConfigError``, exit 2) and resolve the
        defaults that depend on others; idempotent."""
        if isinstance(self.fit, dict) or isinstance(self.learned, dict):  # built by hand with plain dicts
            self.fit = from_dict(FitConfig, self.fit, f"{where}: fit") if isinstance(self.fit, dict) else self.fit
            self.learned = (from_dict(LearnedConfig, self.learned, f"{where}: learned")
                            if isinstance(self.learned, dict) else self.learned)
        if isinstance(self.pipeline, dict):
            self.pipeline = from_dict(PipelineConfig, self.pipeline, f"{where}: pipeline")
        if isinstance(self.face, int) and not isinstance(self.face, bool):
            self.face = str(self.face)
        check_fields(self, where)
        if self.learned.chunk_overlap >= self.learned.chunk_length:
            raise ConfigError(f"{where}: learned.chunk_overlap = {self.learned.chunk_overlap} is not allowed (below "
                              f"learned.chunk_length = {self.learned.chunk_length})")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r} (choose from {', '.join(BACKENDS)})")
        if self.model is None:
            self.model = LEARNED_MODEL if self.backend == "learned" else DEFAULT_MODEL
        if self.model not in MODEL_NAMES:
            raise ConfigError(f"unknown model {self.model!r} (choose {' or '.join(MODEL_NAMES)})")
        if self.learned.weights is not None:
            self.learned.weights = str(self.learned.weights)
        if self.layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {self.layout!r} (choose from {', '.join(LAYOUTS)})")
        if self.meshes is not None and self.meshes not in MESH_FORMATS:
            raise ConfigError(f"unknown mesh format {self.meshes!r} (choose from {', '.join(MESH_FORMATS)})")
        face = str(self.face)
        if face not in ("largest", "all") and not face.lstrip("-").isdigit():
            raise ConfigError(f"--face must be largest, all or a track id, not {face!r}")
        if not 1.0 <= float(self.crop_scale) <= 3.0:
            raise ConfigError(f"crop_scale {self.crop_scale} out of range [1, 3]")
        # the saved config must say what ran: 'auto' becomes the precision this machine uses
        self.precision = resolve_precision(self.precision, resolve_device(self.device))
        return self

    @property
    def uses_face_encoder(self) -> bool:
        """The learned backend runs a trained face encoder (``--weights`` or a model without official
        encoders) rather than the official DECA + SPECTRE encoders."""
        return self.backend == "learned" and (self.learned.weights is not None or self.model != LEARNED_MODEL)

    def to_yaml(self) -> str:
        return yaml.safe_dump(to_dict(self), sort_keys=False)


def make_config(config_file: str | Path | None = None, **overrides: Any) -> ReconstructConfig:
    """Defaults <- YAML file <- explicit overrides (``None`` = not given). Nested keys as dicts."""
    data = load_yaml(config_file) if config_file else {}
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    if data.get("backend") == "learned" and "model" not in data:
        weights = (data.get("learned") or {}).get("weights") if isinstance(data.get("learned"), dict) else None
        # a face-encoder checkpoint names its model; else the official encoders, which predict FLAME
        data["model"] = encoder_model(weights) if weights else LEARNED_MODEL
    where = str(config_file) if config_file else "config"
    return from_dict(ReconstructConfig, data, where).validate(where)
