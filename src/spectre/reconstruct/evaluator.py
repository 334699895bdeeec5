"""The point evaluator of the ``fit`` backend: the 68 landmarks (and dense lip vertices) of a
:class:`FaceModel` for batches of parameters, as cheaply as the model allows.

The fit evaluates the landmarks hundreds of times per window; a full model forward computes every vertex
to keep 68 of them. Linear models get a probed point basis instead (see :class:`PointEvaluator`), always
verified against the model's own forward before it is used.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from ..geometry import axis_angle_to_matrix, matrix_to_euler_y, rotate_points
from ..models.base import FaceModel

__all__ = ["PointEvaluator", "mask_columns"]


def mask_columns(mask: torch.Tensor) -> slice | torch.Tensor:
    """The columns a boolean ``mask`` selects, as a slice when they are one run (a view: no gather forward and
    no scatter backward in every fit step), else as their indices."""
    idx = torch.nonzero(mask.reshape(-1)).reshape(-1)
    if len(idx) and int(idx[-1] - idx[0]) + 1 == len(idx):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


class PointEvaluator:
    """Evaluates the 68 model landmarks for batches of parameters, as cheaply as the model allows.

    With ``dense`` (and a model offering ``mediapipe_surface``) the subset basis also carries MediaPipe's 478
    points on the model surface (:meth:`all_points`), for the fit's dense face term (off by default: they
    nearly triple the basis). MediaPipe's 40 lip points (``mediapipe_lip_points``) ride along whenever the
    model has them. The ``full`` kind (non-linear models such as FLAME) picks both from its full forward.

    ``subset``: the model offers ``landmark_vertices(params)`` (the few vertices its landmarks need, e.g.
    ICT); their linear basis is probed once and ``model.landmarks`` picks the landmarks from them.
    ``fast``: for other models linear in their non-rotation parameters (checked numerically), a point basis
    (68×3 per coefficient, one per yaw bin for the dynamic contour) is probed once from the model; the
    rotation is applied here. The result is verified against ``model.forward`` up to a per-frame 2D
    translation (which the camera absorbs); if the check fails the full forward is used instead.
    """

    YAW_BINS_DEG = np.arange(-45, 46, 5)

    def __init__(self, model: FaceModel, try_fast: bool = True, dense: bool = False):
        self.model = model
        #: the dense MediaPipe lip points on the model surface (triangle vertices, barycentrics), evaluated
        #: with the landmarks (subset and full kinds)
        self._lips = model.mediapipe_lip_points() if try_fast else None
        self.L = 0
        #: MediaPipe-478 points on the model surface (``model.mediapipe_surface()``), subset and full kinds
        self.D = 0
        self.dense_weight: torch.Tensor | None = None
        self._surface = model.mediapipe_surface() if try_fast and dense else None
        #: strips of candidate vertices of the visible inner-lip edge (:meth:`enable_edge`), Q unique vertices
        self._strips = None
        self.Q = 0
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
        if self.kind == "fast":
            self.L, self.D, self.dense_weight = 0, 0, None
        if self.kind == "full":
            self.mean = self.basis = None
            self.defaults = torch.cat([model.complete({})[n] for n in self.coef_names], -1)[0]
            self.transpose = True
            if self._lips is not None:
                self.L = self._lips[0].shape[0]
            if self._surface is not None:
                self.D = self._surface[0].shape[0]
                self.dense_weight = self._surface[2].to(self.defaults)

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
        err_t = v3 - V[0] @ R.T
        err_t = (err_t - err_t.mean(0)).abs().max()
        err_n = v3 - V[0] @ R
        err_n = (err_n - err_n.mean(0)).abs().max()
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
        # barycentric points ride along in the same small basis (S + L + D points per matmul): their basis
        # is the weighted sum of their triangle's vertex bases
        if self._lips is not None:
            lips = self._bary_points(m.complete(params), *self._lips)
            self.L = lips.shape[1]
            V = torch.cat([V, lips], 1)
        if self._surface is not None:
            idx, bary, weight = self._surface
            V = torch.cat([V, self._bary_points(m.complete(params), idx, bary)], 1)
            self.D = idx.shape[0]
            self.dense_weight = weight.to(V)
        if self._strips is not None:
            # laid out as the padded (20, C) strips, so each iteration takes them as a view (no gather)
            uniq, inv = torch.unique(self._strips.vertex_idx.reshape(-1), return_inverse=True)
            V = torch.cat([V, m.vertices(m.complete(params), vertex_idx=uniq)[:, inv]], 1)
            self.Q = inv.numel()
        self.sub_mean = V[0].reshape(-1)                       # (S*3,)
        self.sub_basis = (V[1:] - V[0]).reshape(K, -1)          # (K, S*3)
        self.defaults = defaults
        self.transpose = True

    def _bary_points(self, params, idx: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
        """(B, P, 3) barycentric points of triangles ``idx`` (P, 3), evaluating only their vertices."""
        uniq, inv = torch.unique(idx.reshape(-1), return_inverse=True)
        tri = self.model.vertices(params, vertex_idx=uniq)[:, inv.view(-1, 3)]  # (B, P, 3, 3)
        return (tri * bary.to(tri)[None, :, :, None]).sum(2)

    def specialise(self, fixed_mask: torch.Tensor, fixed_values: torch.Tensor) -> PointEvaluator:
        """A copy whose coefficients under ``fixed_mask`` are folded into the mean (their columns are
        ignored), so each iteration multiplies only the free coefficients (e.g. identity fixed)."""
        ev = copy.copy(self)
        if self.kind != "subset":
            return ev
        free = ~fixed_mask
        delta = fixed_values - self.defaults[fixed_mask]
        ev.sub_mean = self.sub_mean + delta @ self.sub_basis[fixed_mask]
        ev.sub_basis = self.sub_basis[free].contiguous()
        ev.defaults = self.defaults.clone()
        ev.defaults[fixed_mask] = fixed_values
        ev.free = mask_columns(free)
        return ev

    def _rotate(self, pts: torch.Tensor, rot: torch.Tensor, R: torch.Tensor | None = None) -> torch.Tensor:
        R = axis_angle_to_matrix(rot) if R is None else R  # (B, 3, 3)
        return rotate_points(pts, R if self.transpose else R.transpose(1, 2))

    def _yaw_bin(self, rot: torch.Tensor) -> torch.Tensor:
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

    def enable_edge(self) -> bool:
        """Also evaluate the candidate strips of the visible inner-lip edge (``model.inner_lip_strips()``),
        for the fit's lip-edge term; False where the model or this evaluator's kind has none. Idempotent;
        call before :meth:`specialise` (an evaluator built without them stays as cheap as before)."""
        if self._strips is not None:
            return True
        if self.kind == "fast" or not self.L:
            return False
        strips = self.model.inner_lip_strips()
        if strips is None:
            return False
        self._strips = strips
        if self.kind == "subset":
            self._build_subset()
        return True

    @property
    def has_edge(self) -> bool:
        """Whether :meth:`edge_points` returns the inner-lip edge candidates."""
        return self._strips is not None

    # -- public
    @property
    def has_lips(self) -> bool:
        """Whether :meth:`points` also returns the dense lip points."""
        return self.L > 0

    def points(self, coef: torch.Tensor, rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (B, 68, 3) landmarks and (B, L, 3) dense lip vertices (None without :attr:`has_lips`),
        both model space, rotated, from one evaluation."""
        return self.all_points(coef, rot)[:2]

    def all_points(self, coef: torch.Tensor, rot: torch.Tensor, R: torch.Tensor | None = None):
        """:meth:`points` plus the (B, D, 3) MediaPipe-478 surface points (None without them); ``R`` the
        rotation matrices of ``rot`` when the caller has them."""
        return self.edge_points(coef, rot, R)[:3]

    def edge_points(self, coef: torch.Tensor, rot: torch.Tensor, R: torch.Tensor | None = None):
        """:meth:`all_points` plus the (B, 20, 3) visible inner-lip edge (``model.inner_lip_edge``; None
        without :meth:`enable_edge`), from the same evaluation."""
        if self.kind == "full":
            return self._full_points(coef, rot, R)
        if self.kind != "subset":
            return self.landmarks(coef, rot), None, None, None
        free = getattr(self, "free", None)
        d = coef - self.defaults
        if free is not None:
            d = d[:, free]
        e, B = self.S + self.L + self.D, coef.shape[0]
        flat = self.sub_mean + d @ self.sub_basis
        edge = None
        if self.Q:  # the candidates stay unrotated: only the chosen edge points are rotated
            flat, cand = flat.split([3 * e, 3 * self.Q], dim=1)  # split, not slices: no full-size zero grads
            R = axis_angle_to_matrix(rot) if R is None else R
            edge = self.model.inner_lip_edge(cand.view(B, *self._strips.valid.shape, 3),
                                             R if self.transpose else R.transpose(1, 2), rotated=False)
        verts = self._rotate(flat.view(B, e, 3), rot, R)
        lmk = self.model.landmarks(verts[:, :self.S])
        return (lmk, (verts[:, self.S:self.S + self.L] if self.L else None),
                (verts[:, self.S + self.L:e] if self.D else None), edge)

    def _full_points(self, coef: torch.Tensor, rot: torch.Tensor, R: torch.Tensor | None = None):
        """The model's own forward: landmarks plus the barycentric lip and surface points on its vertices
        (and the inner-lip edge candidates)."""
        p = self._split(coef)
        p[self.rot] = rot
        p = self.model.complete(p)
        verts = self.model.vertices(p)
        lmk = self.model.landmarks(verts, p)

        def on_surface(table):
            idx, bary = table[0].to(verts.device), table[1].to(verts)
            return (verts[:, idx] * bary[None, :, :, None]).sum(2)
        return (lmk, on_surface(self._lips) if self.L else None,
                on_surface(self._surface) if self.D else None,
                self.model.visible_inner_lips(verts, axis_angle_to_matrix(rot) if R is None else R)
                if self._strips is not None else None)

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
