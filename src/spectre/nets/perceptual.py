"""SPECTRE's perceptual encoder ``E_expression`` and its combination with DECA (SPEC §2.2).

MobileNetV2 features -> pooled 1280-d per frame -> Conv1d(k5, zero pad 2) over time -> BN -> ReLU
-> Linear(256, 53) = expression residual (50) + jaw residual (3); ReLU on the jaw-x residual.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import MobileNetV2

N_EXP = 50
N_JAW = 3
JAW_OPEN_INDEX = 50  # index of the jaw-x (mouth opening) residual in the 53 outputs


class PerceptualEncoder(nn.Module):
    """Images -> (expression residual, jaw residual).

    * (T,3,H,W): one sequence of T frames (as the official demo and trainer call it) -> (T,50), (T,3).
    * (B,T,3,H,W): B independent clips -> (B,T,50), (B,T,3). Unlike the official code, which
      flattens the clips into one sequence (SPEC §9.3), the temporal convolution never mixes clips.

    Input RGB in [0,1], no normalisation. The 2 outputs at each sequence end see zero padding.
    """

    def __init__(self):
        super().__init__()
        self.encoder = MobileNetV2()
        self.temporal = nn.Sequential(nn.Conv1d(1280, 256, 5, padding=2), nn.BatchNorm1d(256), nn.ReLU())
        self.layers = nn.Sequential(nn.Linear(256, N_EXP + N_JAW))

    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> (N,1280) pooled MobileNetV2 features."""
        return self.encoder(images)

    def head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,T,1280) per-frame features -> (B,T,50), (B,T,3)."""
        x = self.temporal(features.transpose(1, 2)).transpose(1, 2)
        out = self.layers(x)
        exp = out[..., :N_EXP]
        jaw = torch.cat([F.relu(out[..., JAW_OPEN_INDEX:JAW_OPEN_INDEX + 1]), out[..., JAW_OPEN_INDEX + 1:]], -1)
        return exp, jaw

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim == 4:
            exp, jaw = self.head(self.frame_features(images).unsqueeze(0))
            return exp[0], jaw[0]
        if images.ndim != 5:
            raise ValueError(f"expected (T,3,H,W) or (B,T,3,H,W) images, got shape {tuple(images.shape)}")
        b, t = images.shape[:2]
        feats = self.frame_features(images.reshape(b * t, *images.shape[2:])).reshape(b, t, -1)
        return self.head(feats)


def combine_with_deca(deca_codes: dict[str, torch.Tensor], exp_res: torch.Tensor,
                      jaw_res: torch.Tensor) -> dict[str, torch.Tensor]:
    """SPECTRE's final codes: exp = DECA exp + residual; jaw (pose[3:6]) = DECA jaw + residual.

    Shape, tex, global rotation, cam and light stay DECA's. DECA's exp/jaw are detached, as in the
    official code (they are copies of a no-grad output), so gradients reach only the residuals.
    """
    out = dict(deca_codes)
    pose = deca_codes["pose"]
    out["exp"] = exp_res + deca_codes["exp"].detach()
    out["pose"] = torch.cat([pose[..., :3], jaw_res + pose[..., 3:6].detach()], dim=-1)
    return out
