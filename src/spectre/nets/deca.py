"""DECA's coarse encoder ``E_flame``: ResNet-50 + MLP -> 236 FLAME/camera/light codes (SPEC §2.1)."""
from __future__ import annotations

import torch
from torch import nn

from .backbones import ResNet50

# cfg.model.param_list of DECA/SPECTRE, in output order, with sizes
DECA_PARAM_SPLIT: tuple[tuple[str, int], ...] = (
    ("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27))
DECA_OUT = sum(n for _, n in DECA_PARAM_SPLIT)  # 236


def split_deca_params(params: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split (..., 236) into shape/tex/exp/pose/cam/light; light becomes (..., 9, 3).

    pose[..., 0:3] is the global rotation and pose[..., 3:6] the jaw (axis-angle).
    """
    if params.shape[-1] != DECA_OUT:
        raise ValueError(f"expected {DECA_OUT} DECA parameters in the last dimension, got {params.shape[-1]}")
    out, start = {}, 0
    for name, size in DECA_PARAM_SPLIT:
        out[name] = params[..., start:start + size]
        start += size
    out["light"] = out["light"].reshape(*params.shape[:-1], 9, 3)
    return out


class DecaEncoder(nn.Module):
    """``E_flame``: images (N,3,224,224) RGB in [0,1], no normalisation -> (N,236) codes.

    State-dict keys match ``deca_model.tar['E_flame']``: ``encoder.*`` (ResNet-50) and
    ``layers.0`` / ``layers.2`` (the MLP).
    """

    def __init__(self, out_features: int = DECA_OUT):
        super().__init__()
        self.encoder = ResNet50()
        self.layers = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, out_features))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The 2048-d pooled ResNet feature."""
        return self.encoder(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encoder(images))

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Codes split as DECA's ``decompose_code`` does."""
        return split_deca_params(self(images))
