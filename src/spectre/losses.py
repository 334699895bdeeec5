"""SPECTRE's losses, one function each, shared by the ``fit`` backend and the trainer.

Only the terms live here; their weights live with their users: the fit's in
:class:`spectre.reconstruct.fit.FitConfig`, training's in ``LossWeights`` (:mod:`spectre.train`).

All functions are plain torch, differentiable, device-agnostic (no ``.cuda()``, SPEC §9.1) and accept
any leading batch shape ``(..., 68, C)``. Landmarks are in normalised crop coordinates ([-1, 1], x right,
y down) unless a caller chooses otherwise; the losses themselves are unit-free.

Numbers reproduce the official ``lossfunc.py`` / ``Trainer.step`` (golden ``losses.npz``) except where
SPEC §9 lists a bug: the ``r == 40`` case of the non-linear expression regulariser gets the upper weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .faces.landmarks import IBUG68_MOUTH, IBUG68_NOSE

__all__ = [
    "MOUTH_PAIRS", "landmark_weights_68", "batch_kp_2d_l1_loss", "weighted_landmark_loss", "landmark_loss",
    "rel_dis", "relative_landmark_loss", "lip_landmark_loss", "lipread_loss", "lipread_mse_loss",
    "expression_loss", "expression_regularizer", "expression_regularizer_per_frame", "jaw_regularizer",
    "loss_frame_indices", "valid_frame_mask", "huber", "second_difference", "lip_contact_loss",
]

#: intra-mouth landmark pairs of the relative mouth term (SPEC §5): lower lip-chin, upper lip-nose,
#: outer and inner mouth width, three inner-lip openings
MOUTH_PAIRS: tuple[tuple[int, int], ...] = ((57, 8), (51, 33), (48, 54), (60, 64), (61, 67), (62, 66), (63, 65))


def landmark_weights_68(device=None, dtype=torch.float32) -> torch.Tensor:
    """Per-landmark weights of SPECTRE's landmark loss: chin sides 2, nose 1.5 (tip/wings 3), mouth 0."""
    w = torch.ones(68, device=device, dtype=dtype)
    w[5:7] = 2.0
    w[10:12] = 2.0
    w[IBUG68_NOSE] = 1.5
    w[[30, 31, 35]] = 3.0
    w[IBUG68_MOUTH] = 0.0
    return w


def _with_visibility(gt: torch.Tensor) -> torch.Tensor:
    """(…, 68, 2|3) -> (…, 68, 3); a missing visibility column means 'all visible'."""
    if gt.shape[-1] == 3:
        return gt
    return torch.cat([gt, gt.new_ones(gt.shape[:-1] + (1,))], dim=-1)


def batch_kp_2d_l1_loss(gt: torch.Tensor, pred: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Visibility-weighted L1 over x and y: ``Σ w·v·(|dx|+|dy|) / (2·Σ w·v + 1e-8)``.

    ``gt`` is (…, K, 3) with the visibility in the last column (or (…, K, 2): all visible); ``pred`` (…, K, ≥2).
    Unlike the official function, ``gt`` is not modified in place.
    """
    gt = _with_visibility(gt)
    vis = gt[..., 2]
    if weights is not None:
        vis = vis * weights.to(vis)
    diff = (gt[..., :2] - pred[..., :2]).abs().sum(-1)
    return (diff * vis).sum() / (vis.sum() * 2.0 + 1e-8)


def weighted_landmark_loss(pred: torch.Tensor, gt: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """SPECTRE's ``landmark`` term: :func:`batch_kp_2d_l1_loss` with :func:`landmark_weights_68`."""
    if weights is None:
        weights = landmark_weights_68(pred.device, pred.dtype)
    return batch_kp_2d_l1_loss(gt, pred, weights)


def landmark_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Unweighted L1 landmark loss (every point, all visible unless ``gt`` carries a visibility column)."""
    return batch_kp_2d_l1_loss(gt, pred)


def rel_dis(landmarks: torch.Tensor, pairs=MOUTH_PAIRS) -> torch.Tensor:
    """(…, 68, ≥2) -> (…, len(pairs)) Euclidean 2D distances of the mouth landmark pairs."""
    a = landmarks[..., [p[0] for p in pairs], :2]
    b = landmarks[..., [p[1] for p in pairs], :2]
    return ((a - b) ** 2).sum(-1).sqrt()


def relative_landmark_loss(pred: torch.Tensor, gt: torch.Tensor, pairs=MOUTH_PAIRS) -> torch.Tensor:
    """SPECTRE's ``relative_landmark`` term: mean |d_pred − d_gt| over frames and mouth pairs (an L1)."""
    return (rel_dis(pred, pairs) - rel_dis(gt, pairs)).abs().mean()


def lip_landmark_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """MSE of the 20 mouth points 48–67 (x, y); computed but weighted 0 by the official trainer."""
    return F.mse_loss(pred[..., IBUG68_MOUTH, :2], gt[..., IBUG68_MOUTH, :2])


def lipread_loss(feats_pred: torch.Tensor, feats_gt: torch.Tensor) -> torch.Tensor:
    """``1 − mean_t cos(f_pred,t, f_gt,t)`` over the lip-reader features (…, D); no epsilon, as official."""
    dot = (feats_pred * feats_gt).sum(-1)
    cos = dot / (feats_pred.norm(dim=-1) * feats_gt.norm(dim=-1))
    return 1.0 - cos.mean()


def lipread_mse_loss(feats_pred: torch.Tensor, feats_gt: torch.Tensor) -> torch.Tensor:
    """MSE variant of the lip-reading loss (a smoother alternative for optimisation-based fitting)."""
    return F.mse_loss(feats_pred, feats_gt)


def expression_loss(feats_pred: torch.Tensor, feats_gt: torch.Tensor) -> torch.Tensor:
    """SPECTRE's ``expression`` term: MSE between emotion-network features of render and input."""
    return F.mse_loss(feats_pred, feats_gt)


def expression_regularizer_per_frame(exp: torch.Tensor, exp_ref: torch.Tensor) -> torch.Tensor:
    """r_t = ½‖exp_t − exp_ref,t‖² for every frame (…, E) -> (…)."""
    return 0.5 * ((exp - exp_ref) ** 2).sum(-1)


def expression_regularizer(exp: torch.Tensor, exp_ref: torch.Tensor, threshold: float = 40.0,
                           low: float = 1e-3, high: float = 2e-3) -> torch.Tensor:
    """SPECTRE's 'nonlinear' expression regulariser: mean_t w_t·r_t with w_t = 2e-3 if r_t ≥ 40 else 1e-3.

    The official code gives weight 1 when r_t == 40 exactly (SPEC §9.5); here that case takes ``high``.
    """
    r = expression_regularizer_per_frame(exp, exp_ref)
    w = torch.where(r >= threshold, torch.full_like(r, high), torch.full_like(r, low))
    return (w.detach() * r).mean()


def jaw_regularizer(jaw: torch.Tensor, jaw_ref: torch.Tensor) -> torch.Tensor:
    """SPECTRE's ``jaw_reg``: mean over frames and the 3 axis-angle components of (jaw − jaw_ref)², halved."""
    return ((jaw - jaw_ref) ** 2).mean() / 2.0


def loss_frame_indices(num_frames: int, margin: int = 2) -> torch.Tensor:
    """Frames whose temporal-convolution output saw no zero padding (``2 … N−3``), SPEC §5.

    Sequences shorter than ``2·margin + 1`` keep every frame instead of returning an empty set (SPEC §9.4).
    """
    if num_frames <= 2 * margin:
        return torch.arange(num_frames)
    return torch.arange(margin, num_frames - margin)


def valid_frame_mask(batch_size: int, clip_length: int, device=None) -> torch.Tensor:
    """(B*K,) bool: :func:`loss_frame_indices` of **each** K-frame clip of a flattened batch (official:
    2..N-3 of the flattened batch, SPEC §9.3 fixed)."""
    one = torch.zeros(clip_length, dtype=torch.bool, device=device)
    one[loss_frame_indices(clip_length).to(one.device)] = True
    return one.repeat(batch_size)

def huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Elementwise Huber penalty scaled to meet |x| at the transition: ``x²/(2δ)`` below ``δ``, ``|x| − δ/2``
    above (a robust L1 that stays smooth at 0). The ``fit`` backend's data terms: torch's own Huber loss over
    ``δ`` (one op each way, against six for the written-out form; a fit step runs it several times)."""
    return F.huber_loss(x, torch.zeros_like(x), reduction="none", delta=delta) / delta


def second_difference(x: torch.Tensor) -> torch.Tensor:
    """Temporal smoothness of a (T, …, C) sequence: mean over frames of ‖x_{t+1} − 2x_t + x_{t−1}‖²
    (0 for fewer than 3 frames). The ``fit`` backend's smoothness of expression, pose and camera."""
    if x.shape[0] < 3:
        return x.new_zeros(())
    return ((x[2:] - 2 * x[1:-1] + x[:-2]) ** 2).sum(-1).mean()


def lip_contact_loss(gap: torch.Tensor, closed: torch.Tensor, delta: float,
                     closed_sum: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip contact of the ``fit`` backend. ``gap`` (T, P): upper minus lower inner-lip height of P point pairs,
    in the face's own vertical, relative to the model's closed rest mouth (0 = touching as at rest, < 0 =
    crossing); ``closed`` (T, P) in [0, 1]: how closed the tracker sees each pair. Returns ``(touch, cross)``:
    a robust pull of the gap to 0 where the tracked lips meet, and a penalty on crossing everywhere."""
    touch = (closed * huber(gap, delta)).sum() / closed.sum().clamp(min=1.0)
    cross = huber(torch.relu(-gap), delta).mean()
    return touch, cross
