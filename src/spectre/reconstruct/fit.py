"""The default ``fit`` backend: batched optimisation of a :class:`FaceModel` to a tracked face.

Objective (in track-normalised image coordinates, face size ≈ 1), built from SPECTRE's geometric
constraints (SPEC §5, :mod:`spectre.losses`) and extended for a landmark-only fit:

* robust L1 on contour, brows, eyes and nose with SPECTRE's per-landmark weights;
* the relative mouth term on the 7 intra-mouth distances, plus an absolute term on the 20 lip points
  (without an image term the lips need absolute positions to get width and aperture right);
* with the tracker's 478 MediaPipe points, a robust L1 (Huber) term on the 40 dense lip-contour points
  against their corresponding model vertices (:mod:`.mp_lips`; ICT only);
* priors on identity and expression, and second-difference temporal smoothness of expression, rotation
  and camera (frames without a detection get no data term: the smoothness fills them in).

One identity per track is estimated on a subsample of frames, then the per-frame parameters are solved in
windows of ``window`` frames (warm-started, ``overlap`` frames shared), so cost is linear in the clip
length and memory stays flat. For linear models (ICT) the landmarks are evaluated from a small
precomputed point basis (never all vertices per iteration); other models use their full forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import axis_angle_to_matrix, project_to_crop
from ..losses import landmark_weights_68, rel_dis
from ..models.base import FaceModel

__all__ = ["FitConfig", "TrackFit", "PointEvaluator", "fit_track", "matrix_to_axis_angle"]


@dataclass
class FitConfig:
    """Weights and schedule of the landmark fit (all weights are relative to the landmark L1 term)."""

    landmark: float = 1.0          # weighted robust L1 on non-mouth points (SPECTRE weights)
    relative_mouth: float = 1.0    # L1 on the 7 intra-mouth distances
    lips: float = 8.0              # absolute L2-ish term on the 20 lip points
    #: robust L1 (Huber) on the 40 dense MediaPipe lip points (needs ``points478`` and a model with a
    #: correspondence table, i.e. ICT; 0 turns it off)
    dense_lips: float = 2.0
    identity_prior: float = 2e-4   # L2 on identity coefficients (in model std units)
    expression_prior: float = 1e-3  # L2 on expression coefficients
    #: extra L2 on blendshapes that open the lips without the jaw (ICT/ARKit names below), so an open
    #: mouth is explained by the jaw first, as in speech
    lip_opening_prior: float = 1e-2
    lip_opening_shapes: tuple = ("mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
                                 "mouthUpperUpRight", "mouthLowerDown_L", "mouthLowerDown_R",
                                 "mouthUpperUp_L", "mouthUpperUp_R", "mouthClose", "mouthRollLower",
                                 "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper")
    smooth_expression: float = 0.2  # second differences, per frame
    smooth_pose: float = 10.0
    smooth_camera: float = 10.0
    identity_frames: int = 48      # frames (spread over the track) used to estimate the identity
    identity_iterations: int = 150
    iterations: int = 80           # per window, warm-started
    window: int = 200
    overlap: int = 8
    lr: float = 0.05
    robust_delta: float = 0.01     # Huber/L1 transition, in normalised units (≈ 1% of the face size)


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

    def cam_in_crop(self, tforms: np.ndarray, size: int = 224) -> np.ndarray:
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
        origin_q = origin_crop / half - 1.0
        t_new = np.stack([origin_q[:, 0] / s_new, -origin_q[:, 1] / s_new], -1)
        out = np.concatenate([s_new[:, None], t_new], -1).astype(np.float32)
        assert out.shape == (T, 3)
        return out


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(…, 3, 3) rotation matrices -> (…, 3) axis-angle (inverse of ``axis_angle_to_matrix``)."""
    cos = ((R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
    angle = torch.acos(cos)
    w = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = torch.sin(angle)
    factor = torch.where(sin.abs() > 1e-6, angle / (2 * sin), torch.full_like(sin, 0.5))
    return w * factor[..., None]


# ------------------------------------------------------------------------------------------------
class PointEvaluator:
    """Evaluates the 68 model landmarks for batches of parameters, as cheaply as the model allows.

    ``subset``: the model offers ``landmark_vertices(params)`` (the few vertices its landmarks need, e.g.
    ICT); their linear basis is probed once and ``model.landmarks`` picks the landmarks from them.
    ``fast``: for other models linear in their non-rotation parameters (checked numerically), a point basis
    (68×3 per coefficient, one per yaw bin for the dynamic contour) is probed once from the model; the
    rotation is applied here. The result is verified against ``model.forward`` up to a per-frame 2D
    translation (which the camera absorbs); if the check fails the full forward is used instead.
    """

    YAW_BINS_DEG = np.arange(-45, 46, 5)

    def __init__(self, model: FaceModel, try_fast: bool = True):
        from .mp_lips import model_lip_vertices

        self.model = model
        #: model vertices of the dense MediaPipe lip points, evaluated with the landmarks (subset kind only)
        self.lip_idx = model_lip_vertices(model) if try_fast else None
        self.L = 0
        self.rot = model.rotation_param
        self.coef_names = [p.name for p in model.param_specs if p.name != self.rot]
        self.sizes = [model.spec[n].size for n in self.coef_names]
        self.kind = "full"
        self.fixed = None
        if try_fast and callable(getattr(model, "landmark_vertices", None)):
            # the model exposes the few vertices its landmarks need (ICT): probe their linear basis once
            try:
                self._build_subset()
                if self._verify():
                    self.kind = "subset"
            except (RuntimeError, ValueError, IndexError, KeyError):
                self.kind = "full"
        if self.kind == "full" and try_fast:
            try:
                self._build_fast()
                if self._verify():
                    self.kind = "fast"
            except (RuntimeError, ValueError, IndexError, KeyError):
                self.kind = "full"
        if self.kind == "full":
            self.mean = self.basis = None
            self.defaults = torch.cat([model.complete({})[n] for n in self.coef_names], -1)[0]

    # -- helpers
    def _split(self, coef: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.coef_names, torch.split(coef, self.sizes, dim=-1)))

    @torch.no_grad()
    def _build_fast(self) -> None:
        m = self.model
        K = sum(self.sizes)
        dev = m.faces.device
        base = m.complete({})
        defaults = torch.cat([base[n] for n in self.coef_names], -1)[0]  # (K,)
        coefs = defaults.repeat(2 * K + 1, 1)
        coefs[1:K + 1] += torch.eye(K, device=dev)
        coefs[K + 1:] += 2 * torch.eye(K, device=dev)
        params = self._split(coefs)
        params[self.rot] = torch.zeros(2 * K + 1, 3, device=dev)
        V2 = m.vertices(m.complete(params))  # (2K+1, V, 3), rotation 0
        # linearity check of every coefficient: f(d + 2 e_k) - f(d) == 2 (f(d + e_k) - f(d))
        extent = float((V2[0].amax(0) - V2[0].amin(0)).max())
        dev_lin = (V2[K + 1:] - V2[0] - 2 * (V2[1:K + 1] - V2[0])).abs().max()
        if float(dev_lin) > 1e-4 * extent:
            raise ValueError("model is not linear in its coefficients")
        V = V2[:K + 1]
        params = self._split(coefs[:K + 1])
        params[self.rot] = torch.zeros(K + 1, 3, device=dev)
        # rotation convention: v_rot = v @ R^T + c (or v @ R + c)
        r = torch.tensor([[0.2, -0.3, 0.1]], device=dev)
        p3 = {n: base[n] for n in self.coef_names}
        p3[self.rot] = r
        v3 = m.vertices(m.complete(p3))[0]
        R = axis_angle_to_matrix(r)[0]
        err_t = (v3 - V[0] @ R.T); err_t = (err_t - err_t.mean(0)).abs().max()
        err_n = (v3 - V[0] @ R); err_n = (err_n - err_n.mean(0)).abs().max()
        self.transpose = bool(err_t <= err_n)
        # landmark basis per yaw bin (the contour may follow the yaw given in the parameters)
        means, bases = [], []
        for deg in self.YAW_BINS_DEG:
            pr = dict(params)
            pr[self.rot] = torch.tensor([[0.0, math.radians(float(deg)), 0.0]], device=dev).repeat(K + 1, 1)
            L = m.landmarks(V, m.complete(pr))  # (K+1, 68, 3)
            means.append(L[0])
            bases.append((L[1:] - L[0]).permute(1, 2, 0))  # (68, 3, K)
        self.mean = torch.stack(means)      # (Y, 68, 3)
        self.basis = torch.stack(bases)     # (Y, 68, 3, K)
        self.defaults = defaults

    @torch.no_grad()
    def _build_subset(self) -> None:
        m = self.model
        K = sum(self.sizes)
        dev = m.faces.device
        base = m.complete({})
        defaults = torch.cat([base[n] for n in self.coef_names], -1)[0]
        coefs = defaults.repeat(K + 1, 1)
        coefs[1:] += torch.eye(K, device=dev)
        params = self._split(coefs)
        params[self.rot] = torch.zeros(K + 1, 3, device=dev)
        V = m.landmark_vertices(m.complete(params))  # (K+1, S, 3)
        self.S = V.shape[1]
        if self.lip_idx is not None:
            # the lip vertices ride along in the same small basis (S + L points per matmul)
            lips = m.vertices(m.complete(params), vertex_idx=self.lip_idx)
            self.L = lips.shape[1]
            V = torch.cat([V, lips], 1)
        self.sub_mean = V[0].reshape(-1)                       # (S*3,)
        self.sub_basis = (V[1:] - V[0]).reshape(K, -1)          # (K, S*3)
        self.defaults = defaults
        self.transpose = True

    def specialise(self, fixed_mask: torch.Tensor, fixed_values: torch.Tensor) -> "PointEvaluator":
        """A copy whose coefficients under ``fixed_mask`` are folded into the mean (their columns are
        ignored), so each iteration multiplies only the free coefficients (e.g. identity fixed)."""
        import copy

        ev = copy.copy(self)
        if self.kind != "subset":
            return ev
        free = ~fixed_mask
        delta = fixed_values - self.defaults[fixed_mask]
        ev.sub_mean = self.sub_mean + delta @ self.sub_basis[fixed_mask]
        ev.sub_basis = self.sub_basis[free].contiguous()
        ev.defaults = self.defaults.clone()
        ev.defaults[fixed_mask] = fixed_values
        ev.free = free
        return ev

    def _rotate(self, pts: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        R = axis_angle_to_matrix(rot)  # (B, 3, 3)
        return pts @ (R.transpose(1, 2) if self.transpose else R)

    def _yaw_bin(self, rot: torch.Tensor) -> torch.Tensor:
        from ..geometry import matrix_to_euler_y
        yaw = torch.rad2deg(matrix_to_euler_y(axis_angle_to_matrix(rot.detach())))
        b = torch.round((yaw - float(self.YAW_BINS_DEG[0])) / 5.0).long()
        return b.clamp(0, len(self.YAW_BINS_DEG) - 1)

    @torch.no_grad()
    def _verify(self) -> bool:
        m = self.model
        g = torch.Generator().manual_seed(0)
        B = 4
        parts = []
        for n, s in zip(self.coef_names, self.sizes):
            spec = m.spec[n]
            x = torch.randn(B, s, generator=g) * 0.3
            if spec.low is not None and spec.high is not None:
                x = torch.rand(B, s, generator=g) * 0.3 * (spec.high - spec.low) + spec.low
            parts.append(x)
        coef = torch.cat(parts, -1).to(self.defaults)
        rot = torch.tensor([[0.1, 0.4, 0.05], [-0.1, -0.35, 0.0], [0.2, 0.05, -0.1], [0.0, 0.6, 0.0]]).to(coef)
        fast = self.landmarks(coef, rot)
        p = self._split(coef)
        p[self.rot] = rot
        full = m(m.complete(p)).landmarks
        d = (fast - full)[..., :2]
        d = d - d.mean(1, keepdim=True)
        size = float((full[..., :2].amax(1) - full[..., :2].amin(1)).max())
        return bool(d.abs().max() <= 2e-3 * size)

    # -- public
    @property
    def has_lips(self) -> bool:
        """Whether :meth:`points` also returns the dense lip vertices."""
        return self.kind == "subset" and self.L > 0

    def points(self, coef: torch.Tensor, rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (B, 68, 3) landmarks and (B, L, 3) dense lip vertices (None without :attr:`has_lips`),
        both model space, rotated, from one evaluation."""
        if self.kind != "subset":
            return self.landmarks(coef, rot), None
        free = getattr(self, "free", None)
        d = coef - self.defaults
        if free is not None:
            d = d[:, free]
        verts = self._rotate((self.sub_mean + d @ self.sub_basis).view(coef.shape[0], self.S + self.L, 3), rot)
        lmk = self.model.landmarks(verts[:, :self.S])
        return lmk, (verts[:, self.S:] if self.L else None)

    def landmarks(self, coef: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        """(B, K) coefficients + (B, 3) rotation -> (B, 68, 3) model-space landmarks (rotated)."""
        if self.kind == "subset":
            return self.points(coef, rot)[0]
        if self.kind == "fast":
            b = self._yaw_bin(rot)
            pts = self.mean[b] + torch.einsum("bpck,bk->bpc", self.basis[b], coef - self.defaults)
            return self._rotate(pts, rot)
        p = self._split(coef)
        p[self.rot] = rot
        return self.model(self.model.complete(p)).landmarks


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


def _huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    a = x.abs()
    return torch.where(a < delta, 0.5 * a * a / delta, a - 0.5 * delta)


def _second_diff(x: torch.Tensor) -> torch.Tensor:
    if x.shape[0] < 3:
        return x.new_zeros(())
    return ((x[2:] - 2 * x[1:-1] + x[:-2]) ** 2).sum(-1).mean()


class _Objective:
    def __init__(self, cfg: FitConfig, evaluator: PointEvaluator, device):
        self.cfg = cfg
        self.ev = evaluator
        w = landmark_weights_68(device)
        self.w = w / w.sum()
        self.exp_prior = None  # (E,) per-coefficient prior weights on the non-identity coefficients
        self.mouth = torch.arange(48, 68, device=device)

    def predict(self, coef, rot, cam):
        """-> (T, 68, 2) landmarks and (T, L, 2) dense lip points (or None) in normalised image
        coordinates (x right, y down)."""
        pts, lips = self.ev.points(coef, rot)
        cam_lin = torch.cat([cam[:, :1].exp(), cam[:, 1:]], -1)
        pred = project_to_crop(pts, cam_lin)[..., :2]
        return pred, (project_to_crop(lips, cam_lin)[..., :2] if lips is not None else None)

    def __call__(self, coef, rot, cam, target, valid, id_part, exp_part, smooth=True,
                 lip_target=None, lip_valid=None):
        cfg = self.cfg
        pred, pred_lips = self.predict(coef, rot, cam)
        v = valid.to(pred.dtype)
        nv = v.sum().clamp(min=1)
        res = _huber(pred - target, cfg.robust_delta).sum(-1)  # (T, 68)
        l_lmk = ((res * self.w).sum(-1) * v).sum() / nv
        l_rel = ((rel_dis(pred) - rel_dis(target)).abs().mean(-1) * v).sum() / nv
        l_lip = ((((pred[:, self.mouth] - target[:, self.mouth]) ** 2).sum(-1).mean(-1)) * v).sum() / nv
        loss = cfg.landmark * l_lmk + cfg.relative_mouth * l_rel + cfg.lips * l_lip
        if lip_target is not None and pred_lips is not None and cfg.dense_lips:
            lv = lip_valid.to(pred.dtype)
            res_l = _huber(pred_lips - lip_target, cfg.robust_delta).sum(-1).mean(-1)  # (T,)
            loss = loss + cfg.dense_lips * (res_l * lv).sum() / lv.sum().clamp(min=1)
        loss = loss + cfg.identity_prior * (id_part ** 2).sum(-1).mean()
        prior = cfg.expression_prior if self.exp_prior is None else self.exp_prior
        loss = loss + ((exp_part ** 2) * prior).sum(-1).mean()
        if smooth:
            loss = loss + cfg.smooth_expression * _second_diff(exp_part) \
                + cfg.smooth_pose * _second_diff(rot) + cfg.smooth_camera * _second_diff(cam)
        return loss


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
    lm = np.asarray(landmarks, dtype=np.float64)[..., :2]
    T = lm.shape[0]
    valid = np.ones(T, bool) if valid is None else np.asarray(valid, bool)
    if T == 0 or not valid.any():
        raise ValueError("no valid frame to fit")
    ev = evaluator or PointEvaluator(model)
    dev = model.faces.device
    torch_dtype = torch.float32
    center, scale = _normalise(lm, valid)
    target_np = (lm - center) / scale
    target_np[~valid] = 0.0
    target = torch.as_tensor(target_np, dtype=torch_dtype, device=dev)
    vmask = torch.as_tensor(valid, device=dev)
    lip_target = lip_valid = None
    if points478 is not None and cfg.dense_lips and ev.has_lips:
        from .mp_lips import MP_LIPS

        pts = np.asarray(points478, dtype=np.float64)
        if pts.shape[:2] != (T, 478):
            raise ValueError(f"points478 must be (T={T}, 478, 2|3), got {pts.shape}")
        lips_px = pts[:, list(MP_LIPS), :2]
        lv = valid & np.isfinite(lips_px).all((1, 2))
        lips_np = np.where(lv[:, None, None], (lips_px - center) / scale, 0.0)
        lip_target = torch.as_tensor(lips_np, dtype=torch_dtype, device=dev)
        lip_valid = torch.as_tensor(lv, device=dev)

    names, sizes = ev.coef_names, ev.sizes
    roles = [model.spec[n].role for n in names]
    K = sum(sizes)
    id_mask = torch.zeros(K, dtype=torch.bool, device=dev)
    lo = torch.full((K,), -float("inf"), device=dev)
    hi = torch.full((K,), float("inf"), device=dev)
    o = 0
    for n, s, role in zip(names, sizes, roles):
        id_mask[o:o + s] = role == "identity"
        sp = model.spec[n]
        if sp.low is not None:
            lo[o:o + s] = sp.low
        if sp.high is not None:
            hi[o:o + s] = sp.high
        o += s
    defaults = torch.cat([model.complete({})[n] for n in names], -1)[0].to(dev, torch_dtype)
    objective = _Objective(cfg, ev, dev)
    names_e = list(getattr(model, "expression_names", ()))
    if cfg.lip_opening_prior and names_e:
        prior = torch.full((int((~id_mask).sum()),), cfg.expression_prior, device=dev)
        o = 0
        for n, s_ in zip(names, sizes):
            if model.spec[n].role == "identity":
                continue
            if n == "expression" and len(names_e) == s_:
                for j, en in enumerate(names_e):
                    if en in cfg.lip_opening_shapes:
                        prior[o + j] += cfg.lip_opening_prior
            o += s_
        objective.exp_prior = prior
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra threads only spin (and fight other processes)
    try:
        return _fit(model, cfg, ev, objective, dev, torch_dtype, target, vmask, target_np, valid, T, center, scale,
                    names, sizes, id_mask, lo, hi, defaults, identity, lip_target, lip_valid)
    finally:
        torch.set_num_threads(threads)


def _fit(model, cfg, ev, objective, dev, torch_dtype, target, vmask, target_np, valid, T, center, scale,
         names, sizes, id_mask, lo, hi, defaults, identity, lip_target=None, lip_valid=None) -> TrackFit:

    # ---- rigid initialisation (closed-form orthographic Procrustes per frame on the neutral face)
    with torch.no_grad():
        neutral = ev.landmarks(defaults[None], torch.zeros(1, 3, device=dev))[0].cpu().numpy().astype(np.float64)
    rigid = list(range(17, 48))  # brows, nose, eyes: stable under expression
    img = target_np[:, rigid].copy()
    img[..., 1] *= -1  # y up, as the model
    R, s, tr = _procrustes_init_batch(neutral[rigid], img)
    rot0 = matrix_to_axis_angle(torch.as_tensor(R)).numpy()
    cam0 = np.concatenate([np.log(np.maximum(s, 1e-6))[:, None], tr], -1)
    # frames without a detection start from the nearest valid one
    vi = np.flatnonzero(valid)
    pos = np.clip(np.searchsorted(vi, np.arange(T)), 1, max(len(vi) - 1, 1))
    left, right = vi[np.maximum(pos - 1, 0)], vi[np.minimum(pos, len(vi) - 1)]
    nearest = np.where(np.abs(np.arange(T) - left) <= np.abs(right - np.arange(T)), left, right)
    rot0, cam0 = rot0[nearest], cam0[nearest]

    def clamp_(coef):
        coef.data = torch.maximum(torch.minimum(coef.data, hi), lo)

    def run(frames: np.ndarray, coef_init: torch.Tensor, rot_init, cam_init, iters: int, fix_identity: bool,
            smooth: bool, anchor: int = 0):
        coef = coef_init.clone().requires_grad_(True)
        rot = rot_init.clone().requires_grad_(True)
        cam = cam_init.clone().requires_grad_(True)
        opt = torch.optim.Adam([coef, rot, cam], lr=cfg.lr)
        tgt, vm = target[frames], vmask[frames]
        lt = lip_target[frames] if lip_target is not None else None
        lv = lip_valid[frames] if lip_valid is not None else None
        grad_mask = (~id_mask).to(torch_dtype) if fix_identity else None
        if not fix_identity:
            # one identity shared by every frame of the track
            shared = coef.detach()[:, id_mask].mean(0)
            coef.data[:, id_mask] = shared
        loss = None
        for _ in range(iters):
            opt.zero_grad(set_to_none=True)
            loss = objective(coef, rot, cam, tgt, vm, coef[:, id_mask], coef[:, ~id_mask], smooth=smooth,
                             lip_target=lt, lip_valid=lv)
            loss.backward()
            if grad_mask is not None:
                coef.grad.mul_(grad_mask)
            else:
                coef.grad[:, id_mask] = coef.grad[:, id_mask].mean(0, keepdim=True)
            if anchor:
                # frames shared with the previous window stay as solved there
                coef.grad[:anchor] = 0
                rot.grad[:anchor] = 0
                cam.grad[:anchor] = 0
            opt.step()
            clamp_(coef)
        return coef.detach(), rot.detach(), cam.detach(), float(loss.detach()) if loss is not None else float("nan")

    rot_t = torch.as_tensor(rot0, dtype=torch_dtype, device=dev)
    cam_t = torch.as_tensor(cam0, dtype=torch_dtype, device=dev)

    # ---- stage A: identity from a spread subsample of valid frames
    if identity is None:
        n_id = min(cfg.identity_frames, len(vi))
        sel = vi[np.linspace(0, len(vi) - 1, n_id).round().astype(int)]
        coef_a = defaults.repeat(len(sel), 1)
        coef_a, _, _, _ = run(sel, coef_a, rot_t[sel], cam_t[sel], cfg.identity_iterations,
                              fix_identity=False, smooth=False)
        id_vec = coef_a[0, id_mask]
    else:
        id_vec = torch.as_tensor(np.asarray(identity).reshape(-1), dtype=torch_dtype, device=dev)
    base = defaults.clone()
    base[id_mask] = id_vec
    objective.ev = ev.specialise(id_mask, id_vec)

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
        c, r, k, final_loss = run(frames, c_init, rot_out[a:b], cam_out[a:b], cfg.iterations,
                                  fix_identity=True, smooth=True, anchor=anchor)
        coef_out[a:b], rot_out[a:b], cam_out[a:b] = c, r, k
        start = b

    # ---- exact landmarks from the model's own forward; the fast evaluator may differ from it by a
    # per-frame translation (rotation pivot), which moves into the camera
    cam_lin = torch.cat([cam_out[:, :1].exp(), cam_out[:, 1:]], -1)
    lips2d = None
    if ev.has_lips:
        # the subset evaluator is exact for the lip vertices: project them with the fitted camera
        with torch.no_grad():
            lips = torch.cat([objective.ev.points(coef_out[a:a + 64], rot_out[a:a + 64])[1] for a in range(0, T, 64)])
            lips2d = (project_to_crop(lips, cam_lin)[..., :2].cpu().numpy() * scale + center).astype(np.float32)
    lmk3d = torch.empty(T, 68, 3, device=dev)
    with torch.no_grad():
        for a in range(0, T, 64):
            sl = slice(a, min(a + 64, T))
            approx = ev.landmarks(coef_out[sl], rot_out[sl])
            p = ev._split(coef_out[sl])
            p[ev.rot] = rot_out[sl]
            exact = model(model.complete(p)).landmarks.to(approx)
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
