"""One interface for every face model, so pipelines, losses and renderers never branch on the model.

A face model maps a dict of named parameter tensors to vertices in model space (rigid rotation
included, no translation: translation and scale live in the camera) and to the 68 iBUG landmarks.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .lip_edge import SOFTNESS_M, LipStrips, derive_lip_strips, select_lip_edge
from .render_colours import eye_colours, face_colours

Params = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class ParamSpec:
    """One named parameter block of a face model."""

    name: str
    size: int
    role: str  # "identity" (one per face track), "expression" (per frame) or "pose" (rigid, per frame)
    default: float = 0.0
    low: float | None = None  # plausible range, used for clamping and priors
    high: float | None = None
    doc: str = ""


@dataclass
class FaceGeometry:
    vertices: torch.Tensor  # (B, V, 3) model space
    landmarks: torch.Tensor  # (B, 68, 3) iBUG-68 order, dynamic jaw contour


class FaceModel(nn.Module, abc.ABC):
    """Base class. Subclasses set ``name``, ``param_specs``, ``units_per_metre`` and the ``faces`` buffer."""

    name: str = "face"
    param_specs: tuple[ParamSpec, ...] = ()
    #: parameter holding the rigid head rotation (axis-angle, 3 values)
    rotation_param: str = "rotation"
    #: model units per metre (FLAME: 1, ICT: 100); cameras and priors use it to stay unit-free
    units_per_metre: float = 1.0
    faces: torch.Tensor  # (F, 3) int64 triangle indices

    # ---- parameters -------------------------------------------------------------------------
    @property
    def spec(self) -> dict[str, ParamSpec]:
        return {p.name: p for p in self.param_specs}

    def params_with_role(self, role: str) -> tuple[str, ...]:
        return tuple(p.name for p in self.param_specs if p.role == role)

    def default_params(self, batch_size: int = 1, device=None, dtype=None) -> dict[str, torch.Tensor]:
        device = device or self.faces.device
        dtype = dtype or torch.float32
        return {p.name: torch.full((batch_size, p.size), float(p.default), device=device, dtype=dtype)
                for p in self.param_specs}

    def complete(self, params: Params) -> dict[str, torch.Tensor]:
        """Fill missing parameter blocks with defaults and check the sizes of given ones."""
        given = {k: v for k, v in params.items() if v is not None}
        unknown = set(given) - set(self.spec)
        if unknown:
            raise KeyError(f"{self.name} has no parameter(s) {sorted(unknown)}; known: {list(self.spec)}")
        ref = next(iter(given.values()), None)
        batch = ref.shape[0] if ref is not None else 1
        out = self.default_params(batch, device=ref.device if ref is not None else None,
                                  dtype=ref.dtype if ref is not None and ref.is_floating_point() else None)
        for k, v in given.items():
            size = self.spec[k].size
            if v.shape[-1] > size:
                raise ValueError(f"{self.name}.{k} has {v.shape[-1]} values, at most {size} expected")
            out[k] = v if v.shape[-1] == size else torch.cat(
                [v, out[k][..., v.shape[-1]:].to(v)], dim=-1)
        return out

    # ---- geometry ---------------------------------------------------------------------------
    @abc.abstractmethod
    def vertices(self, params: Params) -> torch.Tensor:
        """(B, V, 3) vertices in model space, rigid rotation applied."""

    @abc.abstractmethod
    def landmarks(self, vertices: torch.Tensor, params: Params) -> torch.Tensor:
        """(B, 68, 3) iBUG-68 landmarks on ``vertices``; the jaw contour follows the head yaw."""

    def landmarks_only(self, params: Params) -> torch.Tensor:
        """(B, 68, 3) the landmarks of ``forward``; a model that can compute them from a few vertices
        overrides this (the fit and the learned path need landmarks for every frame, rarely the mesh)."""
        return self(params).landmarks

    def forward(self, params: Params) -> FaceGeometry:
        params = self.complete(params)
        verts = self.vertices(params)
        return FaceGeometry(verts, self.landmarks(verts, params))

    # ---- optional data for rendering/export -------------------------------------------------
    @property
    def uv_coords(self) -> torch.Tensor | None:
        """(T, 2) texture coordinates in [0, 1] or None (subclasses store them as ``_uv_coords``)."""
        return getattr(self, "_uv_coords", None)

    @property
    def uv_faces(self) -> torch.Tensor | None:
        """(F, 3) indices into ``uv_coords`` or None."""
        return getattr(self, "_uv_faces", None)

    def mediapipe_surface(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Optional capability: where MediaPipe's 478 face-mesh points lie on this model's surface, as
        ``(vertex_idx (478, 3) of a triangle, barycentric weights (478, 3), reliability weights (478,))``;
        None when the model has no such table (the fit then has no dense face term)."""
        return None

    def render_faces(self) -> torch.Tensor:
        """Triangles to draw in a visualisation (models may hide parts such as the eye occlusion shell)."""
        return self.faces

    def render_colours(self) -> torch.Tensor | None:
        """(V, 3) float32 per-vertex factors of the video render's grey albedo: lips and brows tinted
        (:mod:`.render_colours`, from the outer lip line of :meth:`mediapipe_lip_points` and the brow
        landmarks on the neutral face); None without the lip table (the render stays grey). Models add their
        own parts (the mouth's inside and teeth, irises and pupils)."""
        cached = self.__dict__.get("_render_colours")
        if cached is None:
            lips = self.mediapipe_lip_points()
            if lips is None or not hasattr(self, "v_template"):
                return None
            idx, bary = (t[:20].cpu() for t in lips)  # the outer lip line, in order around the mouth
            template = self.v_template.detach().cpu().to(torch.float64)
            outer = (template[idx] * bary[..., None].to(torch.float64)).sum(1)
            with torch.no_grad():  # the neutral face's brow lines (17-21, 22-26)
                lm = self.landmarks_only(self.default_params(1)).detach().cpu().to(torch.float64)[0].numpy()
            cached = torch.from_numpy(face_colours(template.numpy(), outer.numpy(), self.units_per_metre,
                                                  [lm[17:22], lm[22:27]]))
            cached = self._colour_parts(cached)
            self.__dict__["_render_colours"] = cached
        return cached

    def _colour_parts(self, colours: torch.Tensor) -> torch.Tensor:
        """Hook for models with named parts (mouth inside, teeth, eyeballs) to colour them in ``colours`` (V, 3)."""
        return colours

    def _colour_eyeballs(self, colours: torch.Tensor, ranges) -> torch.Tensor:
        """Irises and pupils (:func:`.render_colours.eye_colours`) on the eyeballs' vertex ranges ``[a, b)``."""
        for a, b in ranges:
            colours[a:b] = torch.from_numpy(eye_colours(self.v_template[a:b].detach().cpu().numpy()))
        return colours

    # ---- optional capabilities: None where a model lacks one ------------------------------------
    # Code outside ``models/`` asks for these instead of testing a model's name, so a new model is a
    # change in this folder only.

    @property
    def blendshape_names(self) -> tuple[str, ...] | None:
        """Names of the ``expression`` coefficients when they are named linear blendshapes (morph targets
        a GLB can carry), else None."""
        return None

    @property
    def arkit_names(self) -> tuple[str, ...] | None:
        """ARKit name of each ``expression`` coefficient (repeats allowed: halves of one ARKit shape are
        averaged) when the expression is ARKit blendshape weights, else None: the ARKit step then fits
        the reference model's blendshapes to this model's landmark motion (``models.ARKIT_MODEL``)."""
        return None

    @property
    def lip_opening_blendshapes(self) -> tuple[str, ...]:
        """Blendshapes (in :attr:`blendshape_names`) that open the lips without the jaw; the fit gives
        them an extra prior so an open mouth is explained by the jaw first, as in speech. Empty if none."""
        return ()

    @property
    def implausible_speech_blendshapes(self) -> tuple[str, ...]:
        """Blendshapes (in :attr:`blendshape_names`) that landmarks barely determine and speech rarely uses
        (gaze, cheek puff, nose sneer, jaw slide); the fit gives them an extra L1 prior so they do not
        explain landmark noise. Empty if none."""
        return ()

    def mediapipe_lip_vertices(self) -> torch.Tensor | None:
        """Vertex index, in this model's mesh, of each of MediaPipe's 40 lip-contour points (in
        ``spectre.reconstruct.mp_lips.MP_LIPS`` order), or None without a correspondence table."""
        return None

    def mediapipe_lip_points(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """MediaPipe's 40 lip-contour points (``MP_LIPS`` order) on this model's surface, as ``(vertex_idx
        (40, 3) of a triangle, barycentric weights (40, 3))``; None without a table. The fit's dense lip and
        lip-contact terms use this. Default: the vertices of :meth:`mediapipe_lip_vertices` (weight 1 on
        the first corner); models whose table is barycentric (FLAME) override it."""
        idx = self.mediapipe_lip_vertices()
        if idx is None:
            return None
        bary = torch.zeros(len(idx), 3, dtype=torch.float32, device=idx.device)
        bary[:, 0] = 1.0
        return idx[:, None].expand(-1, 3).contiguous(), bary

    def inner_lip_strips(self) -> LipStrips | None:
        """Candidate vertices of the *visible* edge of MediaPipe's 20 inner-lip points (``MP_LIPS_INNER``
        order), derived once from this mesh (:mod:`.lip_edge`: a strip across each lip, from the red outer
        surface into the mouth); None without :meth:`mediapipe_lip_vertices`."""
        cached = self.__dict__.get("_lip_strips")
        if cached is None:
            idx = self.mediapipe_lip_vertices()
            if idx is None or len(idx) != 40:
                return None
            idx = idx.cpu().numpy()
            cached = derive_lip_strips(self.v_template.detach().cpu().numpy(), self.faces.cpu().numpy(),
                                       idx[:20], idx[20:], self.units_per_metre)
            self.__dict__["_lip_strips"] = cached
        return cached.to(self.faces.device)

    def inner_lip_edge(self, candidates: torch.Tensor, rotation: torch.Tensor, rotated: bool = True) -> torch.Tensor:
        """(B, 20, C, 3) strip vertices (:meth:`inner_lip_strips`; ``rotated=False``: before the rotation, which
        is then about the origin) and (B, 3, 3) head rotations -> (B, 20, 3) the visible inner-lip edge, rotated:
        per strip the candidate that is the extreme across the mouth opening in the image (upper lip lowest,
        lower lip highest), a softmax of ~0.3 mm temperature."""
        return select_lip_edge(candidates, rotation, self.inner_lip_strips(), SOFTNESS_M * self.units_per_metre,
                               rotated)

    def visible_inner_lips(self, vertices: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor | None:
        """:meth:`inner_lip_edge` on a full mesh (B, V, 3) (rotation applied); None without strips."""
        strips = self.inner_lip_strips()
        if strips is None:
            return None
        return self.inner_lip_edge(vertices[:, strips.vertex_idx], rotation)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0]) if hasattr(self, "v_template") else -1
