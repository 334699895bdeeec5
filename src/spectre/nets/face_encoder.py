"""A learned encoder that predicts a face model's per-frame parameters from face crops.

SPECTRE's perceptual-encoder layout (MobileNetV2 per frame -> Conv1d(k5, zero pad 2) over time -> BN
-> ReLU -> Linear) with a head sized from the face model's parameter spec: one block per predicted
parameter (for ICT: the 53 blendshape weights and the 3 head-rotation values). Identity and camera are
not predicted (the reconstruct backend takes them from the fit's identity stage and the tracked
landmarks, see ``docs/reconstruct.md``), so a few speakers suffice to train it.

A checkpoint (``spectre train --model ict``) holds the weights under ``face_encoder`` and an
:class:`EncoderSpec` under ``face_encoder_spec`` (model, predicted blocks, crop size, clip length, crop
scale): inference builds exactly the trained network from the file, without extra flags.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..faces.crop import FACE_CROP_SCALE, FACE_CROP_SIZE
from ..safeload import load_checkpoint
from .backbones import MobileNetV2
from .checkpoints import describe_checkpoint, load_state_dict_checked

__all__ = ["ENCODER_FORMAT", "EncoderSpec", "FaceCodeEncoder", "load_face_encoder", "encoder_from_checkpoint",
           "verify_encoder_file"]

ENCODER_FORMAT = "spectre.face-encoder/1"
WEIGHTS_KEY = "face_encoder"
SPEC_KEY = "face_encoder_spec"
RELEASE = "a face-encoder checkpoint written by `spectre train --model ict` (RUN/checkpoints/best.pt)"


@dataclass(frozen=True)
class EncoderSpec:
    """What a face-encoder checkpoint needs to be rebuilt and used (stored in every checkpoint)."""

    model: str                              # face model whose parameters are predicted
    outputs: tuple[tuple[str, int], ...]    # (parameter name, size) blocks of the head, in order
    image_size: int = FACE_CROP_SIZE        # square crop side the encoder was trained on
    clip_length: int = 20                   # training window K (inference chunks may be longer)
    crop_scale: float = FACE_CROP_SCALE     # official crop scale at inference (training: 1.4-1.8)
    format: str = ENCODER_FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = [[n, int(s)] for n, s in self.outputs]
        return d

    @classmethod
    def from_dict(cls, d: Any, path: Path | str = "<checkpoint>") -> EncoderSpec:
        if not isinstance(d, Mapping):
            raise CheckpointError(f"{path}: '{SPEC_KEY}' is not a mapping; expected {RELEASE}")
        if d.get("format") != ENCODER_FORMAT:
            raise CheckpointError(f"{path}: face-encoder format {d.get('format')!r} is not supported "
                                  f"(expected {ENCODER_FORMAT!r})")
        try:
            outputs = tuple((str(n), int(s)) for n, s in d["outputs"])
            spec = cls(model=str(d["model"]), outputs=outputs, image_size=int(d["image_size"]),
                       clip_length=int(d["clip_length"]), crop_scale=float(d.get("crop_scale", FACE_CROP_SCALE)))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: incomplete face-encoder spec ({type(exc).__name__}: {exc})") from None
        if not outputs or any(s <= 0 for _, s in outputs) or not 16 <= spec.image_size <= 1024:
            raise CheckpointError(f"{path}: implausible face-encoder spec {spec.to_dict()}")
        return spec

    @property
    def num_outputs(self) -> int:
        return sum(s for _, s in self.outputs)


class FaceCodeEncoder(nn.Module):
    """Images (B,T,3,S,S) or (T,3,S,S) in [0,1] -> {parameter name: (B,T,n) or (T,n)}.

    Clips of a batch are never mixed by the temporal convolution. The two outputs at each end of a
    sequence see zero padding, hence the official chunking with overlap (``reconstruct.chunking``).
    """

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        self.encoder = MobileNetV2()
        del self.encoder.classifier  # the ImageNet classifier never runs: not part of this network
        self.temporal = nn.Sequential(nn.Conv1d(1280, 256, 5, padding=2), nn.BatchNorm1d(256), nn.ReLU())
        self.layers = nn.Sequential(nn.Linear(256, spec.num_outputs))
        with torch.no_grad():  # outputs start near the parameters' zero (as SPECTRE's Trainer.fit)
            self.layers[0].weight.mul_(0.001)
            self.layers[0].bias.mul_(0.001)

    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) -> (N,1280) pooled per-frame features (cacheable across overlapping chunks)."""
        return self.encoder(images)

    def head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,T,1280) per-frame features of B independent sequences -> {name: (B,T,n)}."""
        out = self.layers(self.temporal(features.transpose(1, 2)).transpose(1, 2))
        return dict(zip([n for n, _ in self.spec.outputs], torch.split(out, [s for _, s in self.spec.outputs], -1)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        single = images.ndim == 4
        if single:
            images = images[None]
        if images.ndim != 5:
            raise ValueError(f"expected (T,3,H,W) or (B,T,3,H,W) images, got shape {tuple(images.shape)}")
        b, t = images.shape[:2]
        blocks = self.head(self.frame_features(images.flatten(0, 1)).view(b, t, -1))
        return {k: v[0] for k, v in blocks.items()} if single else blocks

    def checkpoint_state(self) -> dict[str, Any]:
        """The two entries every face-encoder checkpoint carries."""
        return {WEIGHTS_KEY: self.state_dict(), SPEC_KEY: self.spec.to_dict()}


def encoder_from_checkpoint(ck: Any, path: Path | str = "<checkpoint>", strict: bool = True) -> FaceCodeEncoder:
    """Rebuild the trained network from an unpickled checkpoint; a file of another kind (DECA, SPECTRE,
    an ICT run from before face-encoder checkpoints) is named as what it looks like."""
    if not isinstance(ck, Mapping) or WEIGHTS_KEY not in ck or SPEC_KEY not in ck:
        raise CheckpointError(f"{path} is {describe_checkpoint(ck)}; expected {RELEASE}")
    spec = EncoderSpec.from_dict(ck[SPEC_KEY], path)
    weights = ck[WEIGHTS_KEY]
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"{path}: '{WEIGHTS_KEY}' is not a state dict")
    net = FaceCodeEncoder(spec)
    load_state_dict_checked(net, {str(k): v for k, v in weights.items() if isinstance(v, torch.Tensor)},
                            path=path, part=WEIGHTS_KEY, release=RELEASE, strict=strict)
    return net.eval().requires_grad_(False)


def load_face_encoder(path: str | Path) -> FaceCodeEncoder:
    """Load a face-encoder checkpoint (``torch.load(weights_only=True)``, strict keys)."""
    return encoder_from_checkpoint(load_checkpoint(path, what="face-encoder checkpoint"), path)


def verify_encoder_file(path: str | Path, model: str) -> FaceCodeEncoder:
    """Load ``path`` strictly and check that it predicts ``model``'s parameters (``assets add``)."""
    net = load_face_encoder(path)
    if net.spec.model != model:
        raise CheckpointError(f"{path} is an encoder for face model {net.spec.model!r}, not {model!r}")
    return net
