"""The SPECTRE training step (SPEC §5-§6) and its model-agnostic interface.

A step owns the frozen networks and the trainable module and turns a batch of K-frame clips into
named loss terms and a weighted total. The trainer only sees :class:`TrainStep`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .ddp import unwrap


@dataclass
class LossWeights:
    """Loss weights (official ``cfg.loss.train`` defaults, SPEC §5)."""

    landmark: float = 50.0
    relative_landmark: float = 50.0
    lipread: float = 2.0
    expression: float = 0.5
    jaw_reg: float = 200.0
    expression_reg: float = 1.0  # scales the built-in non-linear weights (1e-3 / 2e-3)
    lip_landmarks: float = 0.0
    photometric_texture: float = 0.0
    lipread_kind: str = "cosine"  # "cosine" (official) or "mse" (more stable, later work)


@dataclass
class StepOutput:
    total: torch.Tensor  # weighted sum, what is back-propagated
    losses: dict[str, torch.Tensor]  # named terms as logged (unweighted)
    visuals: dict[str, torch.Tensor] | None = None  # (n,C,H,W) rows for the image grid
    extras: dict[str, Any] = field(default_factory=dict)  # intermediate tensors (tests, debugging)


class TrainStep:
    """Interface the trainer drives. ``trainable`` holds every optimised parameter; the forward pass
    must call it through ``runner`` (the trainer replaces ``runner`` with a DDP wrapper)."""

    face_model_name = "face"

    def __init__(self, trainable: nn.Module):
        self.trainable = trainable
        self.runner: nn.Module = trainable

    def set_train(self, flag: bool) -> None:
        """Only the trainable module switches mode; frozen networks stay in eval (SPEC §2.1)."""
        self.trainable.train(flag)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"E_expression": unwrap(self.trainable).state_dict()}

    def load_checkpoint_state(self, ck: dict[str, Any]) -> None:
        if "E_expression" not in ck:
            raise CheckpointError("checkpoint has no 'E_expression' weights")
        try:
            unwrap(self.trainable).load_state_dict(ck["E_expression"], strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"E_expression weights do not match the trained encoder: {first}") from None

    def __call__(self, batch: dict, train: bool) -> StepOutput:
        return self.forward(batch, train)

    def forward(self, batch: dict, train: bool) -> StepOutput:  # pragma: no cover - interface
        raise NotImplementedError


def valid_frame_mask(batch_size: int, clip_length: int, device=None) -> torch.Tensor:
    """(B*K,) bool: frames 2..K-3 of **each** clip, the frames whose temporal-conv output saw no
    zero padding (official: 2..N-3 of the flattened batch, SPEC §9.3 fixed)."""
    idx = torch.arange(clip_length, device=device)
    one = (idx >= 2) & (idx <= clip_length - 3)
    return one.repeat(batch_size)
