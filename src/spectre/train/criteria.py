"""The perceptual and geometric loss terms every face model's training step shares (SPEC §5)."""
from __future__ import annotations

import torch
from torch import nn

from .. import losses as L
from ..errors import ConfigError
from ..faces.crop import cut_mouth, mouth_transform
from ..nets.checkpoints import load_emotion, load_lipreader
from .step import LossWeights


class PerceptualCriteria:
    """Lip-reading and expression features of input vs render, and the landmark terms (SPEC §5).

    ``lipreader`` (VSR, frozen) compares 512-d ResNet-18 features of grayscale mouth crops cut from
    the input (detected landmarks) and from the render (projected model landmarks); ``emotion``
    (frozen, optional when its weight is 0) compares 2048-d features of the whole frames.
    """

    def __init__(self, lipreader: nn.Module | None, emotion: nn.Module | None, weights: LossWeights):
        if lipreader is None and weights.lipread > 0:
            raise ConfigError("the lip-reading loss needs the lipreader (asset 'lipreader'), or set its weight to 0")
        if emotion is None and weights.expression > 0:
            raise ConfigError("the expression loss needs the emotion network (asset 'emotion'), "
                              "or set its weight to 0")
        if weights.lipread_kind not in ("cosine", "mse"):
            raise ConfigError(f"unknown lipread loss {weights.lipread_kind!r} (cosine or mse)")
        self.lipreader = lipreader
        self.emotion = emotion
        self.w = weights

    def landmarks(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        p, g = pred[mask], gt[mask]
        return {"landmark": L.weighted_landmark_loss(p, g), "relative_landmark": L.relative_landmark_loss(p, g),
                "lip_landmarks": L.lip_landmark_loss(p, g)}

    def mouths(self, images: torch.Tensor, rendered: torch.Tensor, lmk_gt: torch.Tensor,
               lmk_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,K,96,96) grayscale mouth crops of input and render (each clip smoothed on its own)."""
        with torch.no_grad():
            gt = cut_mouth(images, lmk_gt[..., :2])
        return gt, cut_mouth(rendered, lmk_pred[..., :2])

    def lipread(self, mouths_gt: torch.Tensor, mouths_pred: torch.Tensor, mask: torch.Tensor):
        with torch.no_grad():
            f_gt = self.lipreader.resnet_features(mouth_transform(mouths_gt))
        f_pred = self.lipreader.resnet_features(mouth_transform(mouths_pred))
        a, b = f_pred.flatten(0, 1)[mask], f_gt.flatten(0, 1)[mask]
        loss = L.lipread_loss(a, b) if self.w.lipread_kind == "cosine" else L.lipread_mse_loss(a, b)
        return loss, f_gt, f_pred

    def expression(self, images: torch.Tensor, predicted: torch.Tensor, mask: torch.Tensor):
        with torch.no_grad():
            f_gt = self.emotion(images)
        f_pred = self.emotion(predicted)
        return L.expression_loss(f_pred[mask], f_gt[mask]), f_gt, f_pred


def build_criteria(store, weights: LossWeights) -> PerceptualCriteria:
    lip = load_lipreader(store) if weights.lipread > 0 else None
    emo = load_emotion(store) if weights.expression > 0 else None
    return PerceptualCriteria(lip, emo, weights)
