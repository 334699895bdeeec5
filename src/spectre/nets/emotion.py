"""SPECTRE's emotion network for the expression loss (``ExpressionLossNet``, SPEC §2.4, golden §5).

EMOCA's ResNet-50 emotion weights run through DECA's ResNet-50 variant (stride in the 3x3 conv),
exactly as the official SPECTRE code does (SPEC §9.11: EMOCA itself trained them on a Caffe-style
ResNet; reproducing the official loss means reproducing that mismatch). The loss compares the
2048-d pooled feature; the 10-way ``linear`` head is kept for completeness.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbones import ResNet50


class EmotionNet(nn.Module):
    """Images (N,3,224,224) RGB in [0,1], no normalisation -> (N,2048) features."""

    def __init__(self, n_outputs: int = 10):
        super().__init__()
        self.backbone = ResNet50()
        self.linear = nn.Sequential(nn.Linear(2048, n_outputs))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def head(self, images: torch.Tensor) -> torch.Tensor:
        """The 10-way output (official ``forward2``); its semantic split is not documented."""
        return self.linear(self.backbone(images))


def remap_emoca_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EMOCA ``EmoCnnModule`` names -> ours: keep ``backbone.*`` except the face-ID ``backbone.fc``,
    move ``linear.{weight,bias}`` to ``linear.0.*``; everything else in the Lightning checkpoint is dropped."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("backbone.fc."):
            continue
        if k.startswith("backbone."):
            out[k] = v
        elif k in ("linear.weight", "linear.bias"):
            out["linear.0." + k.split(".", 1)[1]] = v
    return out
