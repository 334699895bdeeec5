"""The objective of the ``fit`` backend: what a set of per-frame parameters costs against one track.

Terms (weights in :class:`~spectre.reconstruct.fit.FitConfig`; the maths in :mod:`spectre.losses`), all in
track-normalised image coordinates (face size ≈ 1):

* robust L1 on the 68 landmarks with SPECTRE's weights, the relative mouth term, an absolute lip term;
* dense lips: Huber on the 40 MediaPipe lip points against their model vertices;
* lip edge: a share ``lip_edge`` of the dense lip term's 20 inner points is matched to the model's *visible*
  inner-lip edge instead of fixed vertices (per point the candidate of a strip across the lip that is the
  extreme across the mouth opening in the image, ``FaceModel.inner_lip_strips``): where the lips roll or the
  head pitches, the tracked edge lies on other surface points;
* dense face: Huber on all 478 MediaPipe points against their barycentric points on the model surface,
  each weighted by the reliability of its correspondence (models offering ``mediapipe_surface``);
* lip contact: where the tracked inner lips meet, the model's inner lips touch in 3D (their height gap in
  the face's own vertical returns to the rest mouth's), and they never cross;
* priors: L2 on identity and expression (more on lip-opening shapes), L1 on blendshape weights (sparse
  curves); second-difference smoothness of expression, rotation and camera.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..geometry import axis_angle_to_matrix, project_to_crop_xy
from ..losses import huber, landmark_weights_68, lip_contact_loss, rel_dis, second_difference
from ..models.base import FaceModel
from .evaluator import PointEvaluator
from .mp_lips import LIP_CONTACT_PAIRS, MP_LIPS, MP_LIPS_OUTER

if TYPE_CHECKING:  # pragma: no cover
    from .fit import FitConfig

__all__ = ["Objective", "make_objective", "contact_weights"]


class Objective:
    """Callable ``(coef, rot, cam, data, id_part, exp_part, smooth) -> loss`` for one window of frames;
    ``data`` holds the window's targets (``target``, ``valid`` and the optional dense ones)."""

    def __init__(self, cfg: FitConfig, evaluator: PointEvaluator, device):
        self.cfg = cfg
        self.ev = evaluator
        w = landmark_weights_68(device)
        self.w = w / w.sum()
        self.exp_prior = None  # (E,) per-coefficient prior weights on the non-identity coefficients
        self.exp_l1 = None     # (E,) L1 weights on the non-identity coefficients (blendshapes)
        self.rest_gap = None   # (P,) upper-minus-lower inner-lip height of the rest mouth (model units)
        self.dense_w = None    # (D,) reliability weights of the dense face points
        self.edge = False      # the lip-edge term is on (the evaluator returns the edge candidates)
        self.mouth = slice(48, 68)  # the 20 mouth landmarks (a slice: a view in every step)
        self.inner = torch.arange(len(MP_LIPS_OUTER), len(MP_LIPS), device=device)  # MP_LIPS_INNER in MP_LIPS
        pairs = torch.as_tensor(LIP_CONTACT_PAIRS, device=device)
        self.up, self.low = pairs[:, 0], pairs[:, 1]
        #: (P, L) +1 at the upper and -1 at the lower point of each pair: one matmul gives all differences
        self.pair_diff = torch.zeros(len(pairs), len(MP_LIPS), device=device)
        self.pair_diff[torch.arange(len(pairs)), self.up] = 1.0
        self.pair_diff[torch.arange(len(pairs)), self.low] = -1.0

    def predict(self, coef, rot, cam):
        """-> (T, 68, 2) landmarks and (T, L, 2) dense lip points (or None) in normalised image
        coordinates (x right, y down)."""
        return self._predict(coef, rot, cam)[:2]

    def _predict(self, coef, rot, cam, R=None):
        pts, lips, dense, edge = self.ev.edge_points(coef, rot, R)
        cam_lin = torch.cat([cam[:, :1].exp(), cam[:, 1:]], -1)
        proj = (lambda x: project_to_crop_xy(x, cam_lin) if x is not None else None)  # noqa: E731
        return proj(pts), proj(lips), lips, proj(dense), proj(edge)

    def lip_gap(self, lips3d, R, cam):
        """(T, P) inner-lip gap in the face's vertical relative to the rest mouth, normalised image units;
        ``R`` (T, 3, 3) the head rotations (points are ``v @ R^T``, so the model's vertical is R's column 1)."""
        d = self.pair_diff @ lips3d                                   # (T, P, 3) upper minus lower
        return ((d * R[:, None, :, 1]).sum(-1) - self.rest_gap) * cam[:, :1].exp()

    def constants(self, data: dict) -> dict:
        """``data`` plus what does not change during a window's iterations (masks as weights, their counts,
        the target's mouth points and intra-mouth distances), computed once instead of every step."""
        out = dict(data)
        target = data["target"]
        out["v"] = data["valid"].to(target.dtype)
        out["nv"] = out["v"].sum().clamp(min=1)
        out["rel_target"] = rel_dis(target)
        out["mouth_target"] = target[:, self.mouth]
        for key, mask in (("lv", "lip_valid"), ("dv", "dense_valid")):
            if data.get(mask) is not None:
                out[key] = data[mask].to(target.dtype)
                out["n" + key] = out[key].sum().clamp(min=1)
        if data.get("contact") is not None:
            out["ncontact"] = data["contact"].sum().clamp(min=1.0)
        return out

    def __call__(self, coef, rot, cam, data: dict, id_part, exp_part, smooth=True):
        """Loss of one window; ``data`` as returned by :meth:`constants`."""
        cfg = self.cfg
        contact = data.get("contact") if self.rest_gap is not None else None
        edge_on = self.edge and data.get("lip_target") is not None and bool(cfg.dense_lips)
        R = axis_angle_to_matrix(rot) if contact is not None or edge_on else None
        pred, pred_lips, lips3d, pred_dense, pred_edge = self._predict(coef, rot, cam, R)
        v, nv = data["v"], data["nv"]
        res = huber(pred - data["target"], cfg.robust_delta).sum(-1)  # (T, 68)
        l_lmk = ((res * self.w).sum(-1) * v).sum() / nv
        l_rel = ((rel_dis(pred) - data["rel_target"]).abs().mean(-1) * v).sum() / nv
        l_lip = ((((pred[:, self.mouth] - data["mouth_target"]) ** 2).sum(-1).mean(-1)) * v).sum() / nv
        loss = cfg.landmark * l_lmk + cfg.relative_mouth * l_rel + cfg.lips * l_lip
        lip_target = data.get("lip_target")
        if lip_target is not None and pred_lips is not None and cfg.dense_lips:
            res_l = huber(pred_lips - lip_target, cfg.robust_delta).sum(-1)  # (T, 40)
            if edge_on and pred_edge is not None:  # inner points: a share moves to the visible edge
                res_e = huber(pred_edge - lip_target[:, self.inner], cfg.robust_delta).sum(-1)  # (T, 20)
                n_out = len(MP_LIPS_OUTER)
                res_l = torch.cat([res_l[:, :n_out], res_l[:, n_out:] + cfg.lip_edge * (res_e - res_l[:, n_out:])], 1)
            loss = loss + cfg.dense_lips * (res_l.mean(-1) * data["lv"]).sum() / data["nlv"]
        dense_target = data.get("dense_target")
        if dense_target is not None and pred_dense is not None and self.dense_w is not None:
            res_d = (huber(pred_dense - dense_target, cfg.robust_delta).sum(-1) * self.dense_w).sum(-1)
            loss = loss + cfg.dense_face * (res_d * data["dv"]).sum() / data["ndv"]
        if contact is not None and lips3d is not None:
            touch, cross = lip_contact_loss(self.lip_gap(lips3d, R, cam), contact, cfg.robust_delta,
                                            data["ncontact"])
            loss = loss + cfg.lip_contact * touch + cfg.lip_cross * cross
        loss = loss + cfg.identity_prior * (id_part ** 2).sum(-1).mean()
        prior = cfg.expression_prior if self.exp_prior is None else self.exp_prior
        reg = (exp_part ** 2) * prior
        if self.exp_l1 is not None:
            reg = reg + exp_part.abs() * self.exp_l1
        loss = loss + reg.sum(-1).mean()
        if smooth:
            loss = loss + cfg.smooth_expression * second_difference(exp_part) \
                + cfg.smooth_pose * second_difference(rot) + cfg.smooth_camera * second_difference(cam)
        return loss


def contact_weights(lips: np.ndarray, target: np.ndarray, valid: np.ndarray, cfg: FitConfig) -> np.ndarray:
    """(T, P) in [0, 1]: 1 where the tracked inner-lip pair is closed (gap / IOD <= contact_closed), 0 where
    open (>= contact_open) or the frame has no lips, linear between. ``lips`` (T, 40, 2) in MP_LIPS order,
    ``target`` (T, 68, 2) landmarks, both normalised."""
    pairs = np.asarray(LIP_CONTACT_PAIRS)
    gap = np.linalg.norm(lips[:, pairs[:, 0]] - lips[:, pairs[:, 1]], axis=-1)
    iod = np.linalg.norm(target[:, 36] - target[:, 45], axis=-1)[:, None]
    g = gap / np.maximum(iod, 1e-6)
    w = np.clip((cfg.contact_open - g) / max(cfg.contact_open - cfg.contact_closed, 1e-6), 0.0, 1.0)
    return np.where(valid[:, None], w, 0.0)


def make_objective(model: FaceModel, ev: PointEvaluator, cfg: FitConfig, id_mask: torch.Tensor) -> Objective:
    """The objective, with per-coefficient priors: extra L2 on the model's lip-opening blendshapes, L1 on
    blendshape weights (expression coefficients bounded below by 0), more on its implausible-in-speech ones."""
    dev = id_mask.device
    objective = Objective(cfg, ev, dev)
    names_e = list(model.blendshape_names or ())
    opening, implausible = model.lip_opening_blendshapes, model.implausible_speech_blendshapes
    if cfg.lip_opening_prior and names_e:
        prior = torch.full((int((~id_mask).sum()),), cfg.expression_prior, device=dev)
        o = 0
        for n, s_ in zip(ev.coef_names, ev.sizes):
            if model.spec[n].role == "identity":
                continue
            if n == "expression" and len(names_e) == s_:
                for j, en in enumerate(names_e):
                    if en in opening:
                        prior[o + j] += cfg.lip_opening_prior
            o += s_
        objective.exp_prior = prior
    if cfg.expression_l1 or cfg.implausible_l1:
        l1 = []
        for n, s_ in zip(ev.coef_names, ev.sizes):
            sp = model.spec[n]
            if sp.role == "identity":
                continue
            w = torch.zeros(s_, device=dev)
            if sp.role == "expression" and sp.low is not None and sp.low >= 0:  # blendshape weights
                w += cfg.expression_l1
                if n == "expression" and len(names_e) == s_:
                    w += cfg.implausible_l1 * torch.tensor([en in implausible for en in names_e],
                                                           dtype=w.dtype, device=dev)
            l1.append(w)
        objective.exp_l1 = torch.cat(l1) if l1 else None
    if cfg.lip_edge and ev.enable_edge():
        objective.edge = True
    if cfg.dense_face and ev.dense_weight is not None:
        w = ev.dense_weight.clone()
        w[list(MP_LIPS)] = 0.0  # the lips have their own term
        objective.dense_w = w / w.sum().clamp(min=1e-9)
    return objective
