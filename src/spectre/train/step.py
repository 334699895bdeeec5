"""The model-agnostic training step interface, the loss weights and how they add up.

A step owns the frozen networks and the trainable module and turns a batch of K-frame clips into
named loss terms and a weighted total. The trainer only sees :class:`TrainStep`. The steps per face
model live in ``flame_step.py`` and ``encoder_step.py``; the terms they share in ``criteria.py``;
``kinds.py`` picks one per face model.

Loss weights live here (``LossWeights``, training); the fit backend's weights are ``FitConfig`` in
``spectre.reconstruct.fit``; both use the same terms from ``spectre.losses``.
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
    #: the trainable module can run alone on a batch's images (``calibration_forward``, precise BatchNorm)
    supports_precise_bn = False

    def __init__(self, trainable: nn.Module):
        self.trainable = trainable
        self.runner: nn.Module = trainable

    def to(self, device) -> TrainStep:
        self.trainable.to(device)
        return self

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

    def calibration_forward(self, batch: dict) -> None:
        """Run the trainable module alone on ``batch`` (BatchNorm recalibration, ``train/precise_bn.py``)."""
        raise NotImplementedError(f"{type(self).__name__} does not support precise BatchNorm")

    def __call__(self, batch: dict, train: bool) -> StepOutput:
        return self.forward(batch, train)

    def forward(self, batch: dict, train: bool) -> StepOutput:  # pragma: no cover - interface
        raise NotImplementedError


def weighted_total(losses: dict[str, torch.Tensor], w: LossWeights, reg: torch.Tensor) -> torch.Tensor:
    total = w.expression_reg * reg
    for name in ("landmark", "relative_landmark", "lip_landmarks", "photometric_texture", "expression",
                 "lipread", "jaw_reg"):
        weight = getattr(w, name)
        if weight and name in losses:
            total = total + weight * losses[name]
    return total


def trainable_module(module: nn.Module) -> nn.Module:
    """Train every parameter the forward pass uses. MobileNetV2's ImageNet classifier stays in the
    state dict (official layout) but never runs: frozen, so DDP does not wait for its gradients."""
    module.requires_grad_(True)
    classifier = getattr(getattr(module, "encoder", None), "classifier", None)
    if classifier is not None:
        classifier.requires_grad_(False)
    return module.train()
