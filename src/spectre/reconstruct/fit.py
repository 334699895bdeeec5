"""The default ``fit`` backend: batched optimisation of a :class:`FaceModel` to a tracked face.

Objective (in track-normalised image coordinates, face size ≈ 1), built from SPECTRE's geometric
constraints (SPEC §5, :mod:`spectre.losses`) and extended for a landmark-only fit:

* robust L1 on contour, brows, eyes and nose with SPECTRE's per-landmark weights;
* the relative mouth term on the 7 intra-mouth distances, plus an absolute term on the 20 lip points
  (without an image term the lips need absolute positions to get width and aperture right);
* with the tracker's 478 MediaPipe points, a robust L1 (Huber) term on the 40 dense lip-contour points
  against their corresponding model surface points (:mod:`.mp_lips`; ICT and FLAME);
* priors on identity and expression, and second-difference temporal smoothness of expression, rotation
  and camera (frames without a detection get no data term: the smoothness fills them in).

One identity per track is estimated on a subsample of frames, then the per-frame parameters are solved in
windows of ``window`` frames (warm-started, ``overlap`` frames shared), so cost is linear in the clip
length and memory stays flat. For linear models (ICT) the landmarks are evaluated from a small
precomputed point basis (never all vertices per iteration); other models use their full forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import setting
from ..faces.crop import FACE_CROP_SIZE
from ..faces.landmarks import IBUG68_BROWS, IBUG68_EYES
from ..geometry import matrix_to_axis_angle, pixels_to_crop, project_to_crop
from ..models.base import FaceModel
from .adam import Adam
from .evaluator import PointEvaluator, mask_columns
from .mp_lips import MP_LIPS
from .objective import Objective, contact_weights, make_objective

__all__ = ["FitConfig", "TrackFit", "fit_track"]


@dataclass
class FitConfig:
    """Weights and schedule of the landmark fit (all weights are relative to the landmark L1 term).

    The one home of the fit's loss weights (docs/reconstruct.md describes the terms); the terms are in
    :mod:`spectre.losses`; training's weights are ``LossWeights`` in :mod:`spectre.train`."""

    landmark: float = setting(1.0, min=0)          # weighted robust L1 on non-mouth points (SPECTRE weights)
    relative_mouth: float = setting(1.0, min=0)    # L1 on the 7 intra-mouth distances
    lips: float = setting(8.0, min=0)              # absolute L2-ish term on the 20 lip points
    #: robust L1 (Huber) on the 40 dense MediaPipe lip points (needs ``points478`` and a model with
    #: ``mediapipe_lip_points()``: ICT and FLAME; 0 turns it off)
    dense_lips: float = setting(2.0, min=0)
    #: robust L1 (Huber) on all 478 MediaPipe points against their barycentric points on the model surface,
    #: weighted by each correspondence's reliability (models with ``mediapipe_surface()``; 0 turns it off)
    dense_face: float = setting(0.0, min=0)
    #: share (0-1) of the dense lip term's 20 inner points matched to the model's *visible* inner-lip edge
    #: (``FaceModel.inner_lip_strips``: per point the candidate across the lip that is the extreme across the
    #: mouth opening in the image) instead of their fixed vertices; 0 (default) turns it off, 1 replaces them
    lip_edge: float = setting(0.0, min=0, max=1)
    identity_prior: float = setting(2e-4, min=0)   # L2 on identity coefficients (in model std units)
    expression_prior: float = setting(1e-3, min=0)  # L2 on expression coefficients
    #: extra L2 on blendshapes that open the lips without the jaw (the model's
    #: ``lip_opening_blendshapes``), so an open mouth is explained by the jaw first, as in speech
    lip_opening_prior: float = setting(1e-2, min=0)
    #: lip contact (needs ``points478`` and the dense lip vertices): where the tracked inner lips meet (gap /
    #: inter-ocular distance below ``contact_closed``, fading out by ``contact_open``) the model's inner lips
    #: are pulled together to the touching height of its rest mouth, in the face's own vertical (3D)
    lip_contact: float = setting(4.0, min=0)
    lip_cross: float = setting(4.0, min=0)        # penalty on the upper inner lip below the lower one, all frames
    contact_closed: float = setting(0.015, min=0)
    contact_open: float = setting(0.04, above=0)
    #: L1 on blendshape weights (expression coefficients bounded below by 0, e.g. ICT/ARKit): a shape must
    #: explain more than landmark noise to leave 0, so the curves an animator reads stay sparse
    expression_l1: float = setting(0.006, min=0)
    #: extra L1 on the model's ``implausible_speech_blendshapes`` (shapes landmarks barely determine and
    #: speech rarely uses: gaze, cheek puff, nose sneer, jaw slide)
    implausible_l1: float = setting(0.03, min=0)
    smooth_expression: float = setting(0.2, min=0)  # second differences, per frame
    smooth_pose: float = setting(10.0, min=0)
    smooth_camera: float = setting(10.0, min=0)
    identity_frames: int = setting(48, min=1)      # frames (spread over the track) used to estimate the identity
    identity_iterations: int = setting(150, min=1)
    iterations: int = setting(80, min=1)           # per window, warm-started
    window: int = setting(200, min=2)
    overlap: int = setting(8, min=0)
    lr: float = setting(0.05, above=0, max=10)
    robust_delta: float = setting(0.01, above=0)     # Huber/L1 transition, in normalised units (≈ 1% of the face size)


@dataclass
class TrackFit:
    """Per-frame parameters of one face track and the camera that maps the model into the frame."""

    params: dict[str, np.ndarray]   # name -> (T, n), identity repeated on every frame
    cam: np.ndarray                 # (T, 3) [s, tx, ty] into track-normalised image coordinates
    center: np.ndarray              # (2,) pixel centre of the normalised frame
    scale: float                    # pixels per normalised unit
    landmarks2d: np.ndarray         # (T, 68, 2) fitted landmarks in input pixels
    landmarks3d: np.ndarray         # (T, 68, 3) model-space landmarks (rigid rotation applied)
    final_loss: float = float("nan")
    evaluator: str = ""
    #: (T, 40, 2) projected model vertices of the dense MediaPipe lip points (``mp_lips.MP_LIPS`` order) in
    #: input pixels; None when the model has no lip correspondence
    lips2d: np.ndarray | None = None

    def cam_in_crop(self, tforms: np.ndarray, size: int = FACE_CROP_SIZE) -> np.ndarray:
        """Camera for each frame's crop (``tforms`` (T, 2|3, 3) pixel -> crop-pixel similarity), so the
        result plugs into SPECTRE's ``project_to_crop`` exactly like the learned backend's camera."""
        T = self.cam.shape[0]
        A = np.asarray(tforms, dtype=np.float64)[:, :2, :]
        k = np.sqrt(np.abs(np.linalg.det(A[:, :, :2])))  # crop pixels per input pixel
        s, t = self.cam[:, 0].astype(np.float64), self.cam[:, 1:].astype(np.float64)
        # input pixel p = scale * (x', y') + center with x' = s (x + tx), y' = -s (y + ty)
        # crop-normalised q = (A p + b) / (size/2) - 1 = s' * (...)
        half = size / 2.0
        s_new = s * self.scale * k / half
        # offset of the model origin in crop-normalised coordinates
        origin_px = self.center[None, :] + self.scale * np.stack([s * t[:, 0], -s * t[:, 1]], -1)
        origin_crop = np.einsum("tij,tj->ti", A[:, :, :2], origin_px) + A[:, :, 2]
        origin_q = pixels_to_crop(origin_crop, size)
        t_new = np.stack([origin_q[:, 0] / s_new, -origin_q[:, 1] / s_new], -1)
        out = np.concatenate([s_new[:, None], t_new], -1).astype(np.float32)
        assert out.shape == (T, 3)
        return out


# ------------------------------------------------------------------------------------------------
def _procrustes_init_batch(model_pts: np.ndarray, image_pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthographic rigid init for every frame at once: model points (P, 3), image points (T, P, 2) in a
    y-up frame -> R (T, 3, 3), s (T,), t (T, 2) with ``image ≈ s * (R X)[:2] + s * t``."""
    X = model_pts - model_pts.mean(0)
    Y = image_pts - image_pts.mean(1, keepdims=True)
    pinv = np.linalg.pinv(X)                             # (3, P)
    M = np.einsum("kp,tpc->tck", pinv, Y)                # (T, 2, 3) affine camera
    U, S, Vt = np.linalg.svd(M, full_matrices=False)     # (T,2,2), (T,2), (T,2,3)
    s = S.mean(-1)
    r12 = U @ Vt
    r3 = np.cross(r12[:, 0], r12[:, 1])
    R = np.concatenate([r12, r3[:, None]], 1)
    proj = s[:, None, None] * np.einsum("pk,tck->tpc", model_pts, R[:, :2])
    t = (image_pts.mean(1) - proj.mean(1)) / np.maximum(s, 1e-9)[:, None]
    return R, s, t


@dataclass
class _Problem:
    """One track made ready for the solver: targets in track-normalised coordinates and the layout of the
    evaluator's coefficient vector (K = all non-rotation coefficients, identity first where the model says)."""

    target_np: np.ndarray                 # (T, 68, 2) normalised landmarks, 0 on frames without detection
    target: torch.Tensor                  # the same on the model's device
    valid: np.ndarray                     # (T,) frames with a detection
    vmask: torch.Tensor                   # the same on the model's device
    center: np.ndarray                    # (2,) pixel centre of the normalised frame
    scale: float                          # pixels per normalised unit
    id_mask: torch.Tensor                 # (K,) True on identity coefficients
    lo: torch.Tensor                      # (K,) lower bounds (-inf where none)
    hi: torch.Tensor                      # (K,) upper bounds (+inf where none)
    defaults: torch.Tensor                # (K,) the model's default coefficients
    identity: np.ndarray | None = None    # a known identity (skips stage A)
    lip_target: torch.Tensor | None = None  # (T, 40, 2) normalised dense lip points
    lip_valid: torch.Tensor | None = None   # (T,)
    contact: torch.Tensor | None = None     # (T, P) how closed the tracker sees each LIP_CONTACT_PAIRS pair
    dense_target: torch.Tensor | None = None  # (T, 478, 2) normalised MediaPipe points
    dense_valid: torch.Tensor | None = None   # (T,)

    def window(self, frames: np.ndarray) -> dict:
        """The objective's ``data`` for some frames (absent terms left out)."""
        out = {"target": self.target[frames], "valid": self.vmask[frames]}
        for key in ("lip_target", "lip_valid", "contact", "dense_target", "dense_valid"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value[frames]
        return out

    @property
    def T(self) -> int:
        return self.target_np.shape[0]


def _normalise(landmarks: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float]:
    pts = landmarks[valid]
    center = np.median(pts.mean(1), axis=0)
    size = np.median((pts.max(1) - pts.min(1)).mean(-1))
    return center.astype(np.float64), float(size / 2.0)


def fit_track(model: FaceModel, landmarks: np.ndarray, valid: np.ndarray | None = None,
              config: FitConfig | None = None, evaluator: PointEvaluator | None = None,
              identity: np.ndarray | None = None, points478: np.ndarray | None = None) -> TrackFit:
    """Fit ``model`` to one face track.

    ``landmarks`` (T, 68, 2) iBUG-68 points in input pixels (any values where ``valid`` is False);
    ``valid`` (T,) marks frames with a detection (default: all); ``points478`` (T, 478, 2|3) the tracker's
    MediaPipe points in input pixels (optional: adds the dense lip term where the model supports it).
    Returns a :class:`TrackFit`.
    """
    cfg = config or FitConfig()
    ev = evaluator or PointEvaluator(model, dense=cfg.dense_face > 0)
    prob = _prepare(model, ev, cfg, landmarks, valid, points478, identity)
    objective = make_objective(model, ev, cfg, prob.id_mask)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra threads only spin (and fight other processes)
    try:
        return _fit(model, cfg, ev, objective, prob)
    finally:
        torch.set_num_threads(threads)


def _prepare(model: FaceModel, ev: PointEvaluator, cfg: FitConfig, landmarks, valid, points478,
             identity, norm: tuple[np.ndarray, float] | None = None) -> _Problem:
    """Normalise the track's targets and lay out the coefficient vector (masks, bounds, defaults).
    ``norm``: a fixed (centre, scale) (windows of a streamed track share the first frames')."""
    lm = np.asarray(landmarks, dtype=np.float64)[..., :2]
    T = lm.shape[0]
    valid = np.ones(T, bool) if valid is None else np.asarray(valid, bool)
    if T == 0 or not valid.any():
        raise ValueError("no valid frame to fit")
    dev = model.faces.device
    torch_dtype = torch.float32
    center, scale = _normalise(lm, valid) if norm is None else norm
    target_np = (lm - center) / scale
    target_np[~valid] = 0.0
    target = torch.as_tensor(target_np, dtype=torch_dtype, device=dev)
    vmask = torch.as_tensor(valid, device=dev)
    lip_target = lip_valid = contact = None
    if points478 is not None and cfg.dense_lips and ev.has_lips:
        pts = np.asarray(points478, dtype=np.float64)
        if pts.shape[:2] != (T, 478):
            raise ValueError(f"points478 must be (T={T}, 478, 2|3), got {pts.shape}")
        lips_px = pts[:, list(MP_LIPS), :2]
        lv = valid & np.isfinite(lips_px).all((1, 2))
        lips_np = np.where(lv[:, None, None], (lips_px - center) / scale, 0.0)
        lip_target = torch.as_tensor(lips_np, dtype=torch_dtype, device=dev)
        lip_valid = torch.as_tensor(lv, device=dev)
        if cfg.lip_contact or cfg.lip_cross:
            contact = torch.as_tensor(contact_weights(lips_np, target_np, lv, cfg), dtype=torch_dtype, device=dev)
    dense_target = dense_valid = None
    if points478 is not None and cfg.dense_face and ev.dense_weight is not None:
        pts = np.asarray(points478, dtype=np.float64)[..., :2]
        if pts.shape[:2] != (T, 478):
            raise ValueError(f"points478 must be (T={T}, 478, 2|3), got {pts.shape}")
        dv = valid & np.isfinite(pts).all((1, 2))
        dense_target = torch.as_tensor(np.where(dv[:, None, None], (pts - center) / scale, 0.0), dtype=torch_dtype,
                                       device=dev)
        dense_valid = torch.as_tensor(dv, device=dev)

    K = sum(ev.sizes)
    id_mask = torch.zeros(K, dtype=torch.bool, device=dev)
    lo = torch.full((K,), -float("inf"), device=dev)
    hi = torch.full((K,), float("inf"), device=dev)
    o = 0
    for n, s in zip(ev.coef_names, ev.sizes):
        sp = model.spec[n]
        id_mask[o:o + s] = sp.role == "identity"
        if sp.low is not None:
            lo[o:o + s] = sp.low
        if sp.high is not None:
            hi[o:o + s] = sp.high
        o += s
    defaults = torch.cat([model.complete({})[n] for n in ev.coef_names], -1)[0].to(dev, torch_dtype)
    return _Problem(target_np=target_np, target=target, valid=valid, vmask=vmask, center=center, scale=scale,
                    id_mask=id_mask, lo=lo, hi=hi, defaults=defaults, identity=identity,
                    lip_target=lip_target, lip_valid=lip_valid, contact=contact, dense_target=dense_target,
                    dense_valid=dense_valid)


def _fix_identity(objective: Objective, ev: PointEvaluator, id_mask: torch.Tensor, id_vec: torch.Tensor,
                  base: torch.Tensor) -> None:
    """Stage B's objective: the identity folded into the evaluator's basis, and the rest mouth of this
    identity (lips touching, as the model was built) measured for the lip contact term."""
    objective.ev = ev.specialise(id_mask, id_vec)
    if objective.ev.has_lips:
        with torch.no_grad():
            lips = objective.ev.points(base[None], torch.zeros(1, 3, device=base.device))[1][0]
        objective.rest_gap = (objective.pair_diff @ lips)[:, 1]


def _rigid_init(ev: PointEvaluator, prob: _Problem) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form orthographic Procrustes per frame on the neutral face -> (T, 3) rotation, (T, 3) camera;
    frames without a detection start from the nearest valid one."""
    dev = prob.target.device
    T, valid = prob.T, prob.valid
    with torch.no_grad():
        neutral = ev.landmarks(prob.defaults[None], torch.zeros(1, 3, device=dev))[0].cpu().numpy().astype(np.float64)
    rigid = list(range(IBUG68_BROWS.start, IBUG68_EYES.stop))  # brows, nose, eyes: stable under expression
    img = prob.target_np[:, rigid].copy()
    img[..., 1] *= -1  # y up, as the model
    R, s, tr = _procrustes_init_batch(neutral[rigid], img)
    rot0 = matrix_to_axis_angle(torch.as_tensor(R)).numpy()
    cam0 = np.concatenate([np.log(np.maximum(s, 1e-6))[:, None], tr], -1)
    vi = np.flatnonzero(valid)
    pos = np.clip(np.searchsorted(vi, np.arange(T)), 1, max(len(vi) - 1, 1))
    left, right = vi[np.maximum(pos - 1, 0)], vi[np.minimum(pos, len(vi) - 1)]
    nearest = np.where(np.abs(np.arange(T) - left) <= np.abs(right - np.arange(T)), left, right)
    return rot0[nearest], cam0[nearest]


def _run(objective: Objective, prob: _Problem, lr: float, frames: np.ndarray, coef_init: torch.Tensor,
         rot_init, cam_init, iters: int, fix_identity: bool, smooth: bool, anchor: int = 0):
    """Adam on ``frames``; identity either shared across the frames (stage A) or fixed (stage B); the first
    ``anchor`` frames (shared with the previous window) stay as solved there."""
    id_mask = prob.id_mask
    coef = coef_init.clone().requires_grad_(True)
    rot = rot_init.clone().requires_grad_(True)
    # Adam's step is ~lr in each parameter's own units: the camera translation (model units) is optimised in
    # centimetres whatever the model's units, so a model in metres (FLAME) does not take 5 cm steps
    k = 100.0 / float(objective.ev.model.units_per_metre)
    to_model = None if k == 1.0 else torch.tensor([1.0, 1.0 / k, 1.0 / k], dtype=cam_init.dtype,
                                                  device=cam_init.device)
    cam = (cam_init if to_model is None else cam_init / to_model).clone().requires_grad_(True)
    opt = Adam([coef, rot, cam], lr=lr)
    data = objective.constants(prob.window(frames))
    grad_mask = (~id_mask).to(prob.target.dtype) if fix_identity else None
    if not fix_identity:
        # one identity shared by every frame of the track
        shared = coef.detach()[:, id_mask].mean(0)
        coef.data[:, id_mask] = shared
    loss = None
    id_cols, exp_cols = mask_columns(id_mask), mask_columns(~id_mask)
    for _ in range(iters):
        opt.zero_grad(set_to_none=True)
        loss = objective(coef, rot, cam if to_model is None else cam * to_model, data, coef[:, id_cols],
                         coef[:, exp_cols], smooth=smooth)
        loss.backward()
        if grad_mask is not None:
            coef.grad.mul_(grad_mask)
        else:
            coef.grad[:, id_cols] = coef.grad[:, id_cols].mean(0, keepdim=True)
        if anchor:
            coef.grad[:anchor] = 0
            rot.grad[:anchor] = 0
            cam.grad[:anchor] = 0
        opt.step()
        coef.data = torch.maximum(torch.minimum(coef.data, prob.hi), prob.lo)
    cam = cam.detach() if to_model is None else cam.detach() * to_model
    return coef.detach(), rot.detach(), cam, float(loss.detach()) if loss is not None else float("nan")


def _fit(model: FaceModel, cfg: FitConfig, ev: PointEvaluator, objective: Objective, prob: _Problem) -> TrackFit:
    dev, torch_dtype = prob.target.device, prob.target.dtype
    T, id_mask, defaults = prob.T, prob.id_mask, prob.defaults
    rot0, cam0 = _rigid_init(ev, prob)
    rot_t = torch.as_tensor(rot0, dtype=torch_dtype, device=dev)
    cam_t = torch.as_tensor(cam0, dtype=torch_dtype, device=dev)

    # ---- stage A: identity from a spread subsample of valid frames
    if prob.identity is None:
        vi = np.flatnonzero(prob.valid)
        n_id = min(cfg.identity_frames, len(vi))
        sel = vi[np.linspace(0, len(vi) - 1, n_id).round().astype(int)]
        coef_a = defaults.repeat(len(sel), 1)
        coef_a, _, _, _ = _run(objective, prob, cfg.lr, sel, coef_a, rot_t[sel], cam_t[sel],
                               cfg.identity_iterations, fix_identity=False, smooth=False)
        id_vec = coef_a[0, id_mask]
    else:
        id_vec = torch.as_tensor(np.asarray(prob.identity).reshape(-1), dtype=torch_dtype, device=dev)
    base = defaults.clone()
    base[id_mask] = id_vec
    _fix_identity(objective, ev, id_mask, id_vec, base)

    # ---- stage B: per-frame parameters in overlapping windows, identity fixed
    coef_out = base.repeat(T, 1)
    rot_out, cam_out = rot_t.clone(), cam_t.clone()
    start, final_loss = 0, float("nan")
    W, ov = max(cfg.window, 4), max(min(cfg.overlap, cfg.window // 2), 0)
    while start < T:
        a = max(start - ov, 0) if start > 0 else 0
        b = min(start + W, T)
        frames = np.arange(a, b)
        anchor = start - a
        c_init = coef_out[a:b].clone()
        if anchor:
            # warm start from the end of the previous window
            c_init[anchor:] = coef_out[start - 1]
        c, r, k, final_loss = _run(objective, prob, cfg.lr, frames, c_init, rot_out[a:b], cam_out[a:b],
                                   cfg.iterations, fix_identity=True, smooth=True, anchor=anchor)
        coef_out[a:b], rot_out[a:b], cam_out[a:b] = c, r, k
        start = b
    return _result(model, ev, objective.ev, prob, coef_out, rot_out, cam_out, final_loss)


def _result(model: FaceModel, ev: PointEvaluator, ev_fixed: PointEvaluator, prob: _Problem, coef_out: torch.Tensor,
            rot_out: torch.Tensor, cam_out: torch.Tensor, final_loss: float) -> TrackFit:
    """Exact landmarks from the model's own forward; the fast evaluator may differ from it by a per-frame
    translation (rotation pivot), which moves into the camera."""
    T, center, scale = prob.T, prob.center, prob.scale
    cam_lin = torch.cat([cam_out[:, :1].exp(), cam_out[:, 1:]], -1)
    lips2d = None
    if ev.has_lips:
        # the subset evaluator is exact for the lip vertices: project them with the fitted camera
        with torch.no_grad():
            lips = torch.cat([ev_fixed.points(coef_out[a:a + 64], rot_out[a:a + 64])[1] for a in range(0, T, 64)])
            lips2d = (project_to_crop(lips, cam_lin)[..., :2].cpu().numpy() * scale + center).astype(np.float32)
    lmk3d = torch.empty(T, 68, 3, device=prob.target.device)
    with torch.no_grad():
        for a in range(0, T, 64):
            sl = slice(a, min(a + 64, T))
            approx = ev.landmarks(coef_out[sl], rot_out[sl])
            p = ev._split(coef_out[sl])
            p[ev.rot] = rot_out[sl]
            exact = model.landmarks_only(model.complete(p)).to(approx)
            cam_lin[sl, 1:] += (approx - exact)[..., :2].mean(1)
            lmk3d[sl] = exact
        pred = project_to_crop(lmk3d, cam_lin)[..., :2].cpu().numpy().astype(np.float64)
    lm2d = pred * scale + center
    params = {n: x.cpu().numpy().astype(np.float32) for n, x in ev._split(coef_out).items()}
    params[ev.rot] = rot_out.cpu().numpy().astype(np.float32)
    cam = cam_lin.cpu().numpy().astype(np.float32)
    return TrackFit(params=params, cam=cam, center=center, scale=scale, landmarks2d=lm2d.astype(np.float32),
                    landmarks3d=lmk3d.cpu().numpy().astype(np.float32),
                    final_loss=final_loss, evaluator=ev.kind, lips2d=lips2d)
