"""The ICT-FaceKit face model (ICT Face Model Light, MIT): the default face model of spectre.

A face is ``neutral + identity_basis @ identity + expression_basis @ expression``, rotated rigidly
about a pivot near the head centre. Identity coefficients are in standard deviations of the
identity PCA, expression coefficients are ARKit-style blendshape weights in [0, 1]. Units are
centimetres. Both blendshape sets are evaluated as one matmul, over all vertices or over a subset
(``vertices(params, vertex_idx=...)``, ``landmarks_only(params)``) so landmark fits stay cheap.

The package ships a compact copy (``spectre/data/ict_compact.npz``: no back of the head or eye
shells, int8 deltas; see ``scripts/make_compact_ict.py``); the full npz made by
``spectre assets convert-ict`` is used with ``full=True`` when installed as asset ``ict``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..assets import BUNDLED_ICT, AssetStore, bundled_path
from ..errors import AssetError
from ..faces.landmarks import IBUG68_MOUTH
from ..geometry import axis_angle_to_matrix
from .base import FaceModel, Params, ParamSpec
from .ict_lips import ICT_LIPS_SOURCE_VERTEX
from .render_colours import MOUTH_INSIDE, TEETH, TONGUE

#: rotation pivot in the source mesh's coordinates (cm): x on the mid-plane, y halfway between the
#: chin (-7.6) and the crown (14.5), z halfway between the back of the head (-9.2) and the nose tip (13.1)
HEAD_PIVOT_CM = (0.0, 3.5, 1.9)
#: vertices [0, NARROW_FACE_END) are the "narrow face area" (no ears, no neck) in both layouts
NARROW_FACE_END = 6706
#: parts left out of ``render_faces()`` (thin shells that look wrong without their special shaders)
HIDDEN_PARTS = ("Lacrimal fluid left", "Lacrimal fluid right", "Eye blend left", "Eye blend right",
                "Eye occlusion left", "Eye occlusion right", "Eyelashes left", "Eyelashes right")
N_EXPRESSIONS = 53
#: blendshapes that open the lips without the jaw (ARKit and source spellings)
LIP_OPENING_SHAPES = ("mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
                      "mouthLowerDown_L", "mouthLowerDown_R", "mouthUpperUp_L", "mouthUpperUp_R", "mouthClose",
                      "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper")
#: ARKit shapes with an extra L1 prior in the fit: the most active shapes on neutral LRS3 talking clips when
#: only an L2 prior held them (they explained landmark noise); gaze and cheek puff barely move landmarks
IMPLAUSIBLE_SPEECH_SHAPES = ("eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
                             "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "cheekPuff",
                             "noseSneerLeft", "noseSneerRight", "jawForward", "jawLeft", "jawRight", "mouthLeft",
                             "mouthRight", "cheekSquintLeft", "cheekSquintRight")
_MOUTH_RADIUS_CM = 1.5
_CONTOUR_TUBE_CM = 0.35


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as exc:  # not a zip, truncated, pickled object arrays ...
        raise AssetError(f"{path} is not a readable ICT face model npz ({type(exc).__name__}: {exc})") from None


def load_ict_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read a full (``ict_face_model.npz``) or compact (``ict_compact.npz``) ICT model into one layout:
    float32 ``neutral`` and ``deltas`` (identity rows, then expression rows; ``identity`` and ``expression`` are
    views of it), int64 ``triangles``, ``triangle_part``,
    ``part_names``/``part_vertex_range`` (half-open), uv data, landmarks and jawline chains."""
    path = Path(path)
    d = _read_npz(path)
    need = {"neutral_vertices", "triangles", "landmarks68_vertex_idx", "expression_names"}
    if "format" in d:  # compact layout
        need |= {"identity_codes", "identity_scale", "expression_codes", "expression_scale", "quant_block_range"}
    else:
        need |= {"identity_deltas", "expression_deltas", "triangle_to_face", "part_face_range"}
    missing = need - set(d)
    if missing:
        raise AssetError(f"{path} is not an ICT face model npz (missing {sorted(missing)})")
    out: dict[str, np.ndarray] = {}
    compact = "format" in d
    parts = [d[f"{key}_codes" if compact else f"{key}_deltas"] for key in ("identity", "expression")]
    if any(p.ndim != 3 for p in parts) or parts[0].shape[1:] != parts[1].shape[1:]:
        raise AssetError(f"{path}: identity and expression deltas have shapes {parts[0].shape} and {parts[1].shape}")
    # both written into one float32 buffer: the model's basis as it is (no 42 MB concatenation of the two,
    # and no float copy of the codes before scaling; fresh pages are most of the model's load time)
    out["deltas"] = np.empty((len(parts[0]) + len(parts[1]), *parts[0].shape[1:]), np.float32)
    out["identity"], out["expression"] = out["deltas"][:len(parts[0])], out["deltas"][len(parts[0]):]
    if compact:
        blocks = d["quant_block_range"].astype(np.int64).reshape(-1, 2)
        if len(blocks) == 0 or blocks[0, 0] != 0 or blocks[-1, 1] != out["deltas"].shape[1] or \
                (blocks[1:, 0] != blocks[:-1, 1]).any() or (blocks[:, 1] <= blocks[:, 0]).any():
            raise AssetError(f"{path}: quant_block_range does not split the vertices into consecutive blocks")
        for key, codes in zip(("identity", "expression"), parts):
            scale = d[f"{key}_scale"].astype(np.float32)
            for i, (a, b) in enumerate(blocks):  # each block of vertices: int8 -> float32, times its scale
                np.multiply(codes[:, a:b], scale[:, i, None, None], out=out[key][:, a:b])
        out["triangle_part"] = d["triangle_part"].astype(np.int64)
    else:
        out["identity"][...], out["expression"][...] = parts
        face_end = d["part_face_range"][:, 1].astype(np.int64)
        out["triangle_part"] = np.searchsorted(face_end, d["triangle_to_face"].astype(np.int64), side="right")
    V = len(d["neutral_vertices"])
    if out["expression"].shape[0] != N_EXPRESSIONS or out["expression"].shape[1:] != (V, 3):
        raise AssetError(f"{path}: expression deltas have shape {out['expression'].shape}, "
                         f"expected ({N_EXPRESSIONS}, {V}, 3)")
    out["neutral"] = d["neutral_vertices"].astype(np.float32)
    out["triangles"] = d["triangles"].astype(np.int64)
    if out["triangles"].max() >= V:
        raise AssetError(f"{path}: triangle indices exceed the {V} vertices")
    for key in ("part_names", "part_vertex_range", "expression_names", "expression_arkit_names", "uv_coords",
                "uv_triangles", "vertex_map", "landmarks68_vertex_idx", "jawline_left_vertex_idx", "jawline_right_vertex_idx"):
        if key in d:
            out[key] = d[key]
    return out


def _bundled_compact() -> Path:
    p = bundled_path(BUNDLED_ICT)
    if p is None:
        raise AssetError(f"the bundled face model spectre/data/{BUNDLED_ICT} is missing from this installation; "
                         "reinstall spectre-face or run `spectre assets convert-ict` on the ICT-FaceKit download")
    return p


def _points_near_polyline(points: np.ndarray, polyline: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of ``points`` within ``radius`` of any segment of ``polyline``."""
    best = np.full(len(points), np.inf)
    for a, b in zip(polyline[:-1], polyline[1:]):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return best <= radius


def contour_candidates(neutral: np.ndarray, landmarks: np.ndarray, jaw_right: np.ndarray,
                       jaw_left: np.ndarray) -> list[np.ndarray]:
    """For each of the 17 jaw-contour landmarks, the vertices it may move to as the head turns.

    Landmark k (right side 0-7, left side 9-16) pairs its static vertex v_k with the jawline vertex j_k
    that ICT-FaceKit suggests as its substitute (the mandible edge, further back). Candidates are the
    narrow-face-area vertices within 3.5 mm of the segment j_k -> v_k (the near side of a turned head,
    where the silhouette moves back to the jaw edge) plus the skin vertices at v_k's height (+-3.5 mm)
    from v_k forward to halfway towards the mid-line (the cheek silhouette of the far side).
    The chin (8) stays fixed. ``landmarks()`` takes the candidate that is outermost in x after rotation
    (softly, see there), i.e. on the silhouette seen by the orthographic camera.
    """
    face = neutral[:NARROW_FACE_END]
    front_z = float(face[:, 2].max())
    out = []
    for k in range(17):
        v_idx = int(landmarks[k])
        if k == 8:
            out.append(np.array([v_idx]))
            continue
        j_idx = int(jaw_right[k]) if k < 8 else int(jaw_left[k - 9])
        v, j = neutral[v_idx], neutral[j_idx]
        mid = np.array([0.0, v[1], max(front_z - 3.0, v[2])])
        end = v + 0.5 * (mid - v)
        side = np.sign(v[0])
        back = _points_near_polyline(face, np.stack([j, v]), _CONTOUR_TUBE_CM)
        front = ((np.abs(face[:, 1] - v[1]) <= _CONTOUR_TUBE_CM) & (face[:, 2] >= v[2])
                 & (face[:, 2] <= end[2]) & (face[:, 0] * side >= abs(end[0])))
        mask = (back | front) & (face[:, 0] * side > 0.3)
        cand = np.union1d(np.flatnonzero(mask), [v_idx, j_idx])
        out.append(cand.astype(np.int64))
    return out


class ICTFaceModel(FaceModel):
    """ICT Face Model Light: identity (PCA, std units) + 53 ARKit-named blendshapes + rigid rotation; cm."""

    name = "ict"
    rotation_param = "rotation"
    units_per_metre = 100.0

    def __init__(self, arrays: dict[str, np.ndarray], n_identity: int = 100, source: str = "",
                 contour_softness_cm: float = 0.1):
        super().__init__()
        #: temperature of the soft silhouette pick (cm of outward x); 0 picks the single outermost vertex
        self.contour_softness_cm = float(contour_softness_cm)
        n_avail = arrays["identity"].shape[0]
        if not 0 <= n_identity <= n_avail:
            raise AssetError(f"{source or 'ICT model'} has {n_avail} identity modes; {n_identity} requested")
        self.source = source
        self.n_identity = n_identity
        self.param_specs = (
            ParamSpec("identity", n_identity, "identity", 0.0, -3.0, 3.0,
                      "identity PCA coefficients in standard deviations"),
            ParamSpec("expression", N_EXPRESSIONS, "expression", 0.0, 0.0, 1.0,
                      "blendshape weights (ARKit names in expression_names)"),
            ParamSpec("rotation", 3, "pose", 0.0, -math.pi / 2, math.pi / 2,
                      "head rotation, axis-angle (radians) about HEAD_PIVOT_CM"),
        )
        arkit = arrays.get("expression_arkit_names")
        #: blendshape names in the source spelling (``mouthSmile_L``) and in ARKit spelling (``mouthSmileLeft``);
        #: ICT splits browInnerUp and cheekPuff into _L/_R, so their ARKit names repeat
        self.source_expression_names = tuple(str(n) for n in arrays["expression_names"])
        self.expression_names = tuple(str(n) for n in arkit) if arkit is not None else self.source_expression_names

        neutral = arrays["neutral"]
        V = neutral.shape[0]
        if n_identity == n_avail and "deltas" in arrays:  # identity then expression rows in one buffer
            basis = arrays["deltas"]
        else:
            basis = np.concatenate([arrays["identity"][:n_identity], arrays["expression"]], axis=0)  # (K, V, 3)
        self.register_buffer("v_template", torch.from_numpy(neutral - np.float32(HEAD_PIVOT_CM)))
        self.register_buffer("basis", torch.from_numpy(np.ascontiguousarray(basis.reshape(len(basis), V * 3))))
        self.register_buffer("faces", torch.from_numpy(arrays["triangles"]))
        #: index of each vertex in the full ICT mesh (identity for the full model)
        self.register_buffer("source_vertex_idx", torch.from_numpy(
            arrays["vertex_map"].astype(np.int64) if "vertex_map" in arrays else np.arange(V)))
        self.register_buffer("triangle_part", torch.from_numpy(arrays["triangle_part"]))
        self.part_names = tuple(str(n) for n in arrays.get("part_names", ()))
        self.part_vertex_range = {n: (int(a), int(b)) for n, (a, b) in
                                  zip(self.part_names, arrays.get("part_vertex_range", np.zeros((0, 2))))}
        if "uv_coords" in arrays and "uv_triangles" in arrays:
            self.register_buffer("_uv_coords", torch.from_numpy(arrays["uv_coords"].astype(np.float32)))
            self.register_buffer("_uv_faces", torch.from_numpy(arrays["uv_triangles"].astype(np.int64)))
        else:
            self._uv_coords = self._uv_faces = None

        lmk = arrays["landmarks68_vertex_idx"].astype(np.int64)
        cands = contour_candidates(neutral, lmk, arrays["jawline_right_vertex_idx"].astype(np.int64),
                                   arrays["jawline_left_vertex_idx"].astype(np.int64))
        subset = np.unique(np.concatenate([lmk] + cands))
        local = np.searchsorted(subset, np.arange(V)).clip(0, len(subset) - 1)  # full index -> subset index
        width = max(len(c) for c in cands)
        cand = np.stack([np.pad(c, (0, width - len(c)), mode="edge") for c in cands])
        valid = np.stack([np.arange(width) < len(c) for c in cands])  # padding repeats the last candidate
        side = np.sign(neutral[lmk[:17], 0]).astype(np.float32)  # outward direction of each contour point
        self.register_buffer("landmark_vertex_idx", torch.from_numpy(subset))
        self.register_buffer("static_landmark_idx", torch.from_numpy(lmk))
        self.register_buffer("contour_candidates", torch.from_numpy(cand))
        self.register_buffer("_candidate_valid", torch.from_numpy(valid))
        # the valid candidates alone, for _landmarks_exact (not saved: derived from the mesh above)
        pos = np.flatnonzero(valid)  # their places in the padded (17, width) table
        row = pos // width
        self.register_buffer("_candidate_pos", torch.from_numpy(pos), persistent=False)
        self.register_buffer("_candidate_sign", torch.from_numpy(side[row]), persistent=False)
        self.register_buffer("_candidate_rows", torch.from_numpy((row[None] == np.arange(17)[:, None])
                                                                 .astype(np.float32)), persistent=False)
        for name, (s_idx, c_idx) in {"_gather": (lmk, cand), "_local_gather": (local[lmk], local[cand])}.items():
            # every vertex the 68 landmarks read: the valid candidates, then the 51 fixed inner points
            self.register_buffer(name, torch.from_numpy(np.concatenate([c_idx.reshape(-1)[pos], s_idx[17:]])),
                                 persistent=False)
        self.register_buffer("_landmark_basis", self.basis.view(-1, V, 3)[:, torch.from_numpy(subset)]
                             .reshape(len(basis), -1).contiguous())

        lips = neutral[lmk[IBUG68_MOUTH]]
        face_end = self.part_vertex_range.get("Face", (0, NARROW_FACE_END))[1]
        near_lips = np.flatnonzero(np.min(np.linalg.norm(neutral[:face_end, None] - lips[None], axis=2), axis=1)
                                   <= _MOUTH_RADIUS_CM)
        inner = [np.arange(*self.part_vertex_range[p]) for p in ("Mouth socket", "Gums and tongue", "Teeth")
                 if p in self.part_vertex_range]
        self.register_buffer("mouth_vertex_idx", torch.from_numpy(np.concatenate([near_lips] + inner)))

    def mediapipe_surface(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """MediaPipe-478 points on the ICT surface (``spectre/data/ict_mp478.npz``, derived from data by
        ``scripts/make_mp478_correspondence.py``; full-ICT vertex indices mapped to this mesh); None when the
        table is missing or this mesh lacks one of its vertices."""
        path = Path(__file__).resolve().parents[1] / "data" / "ict_mp478.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as d:
            table = torch.from_numpy(d["source_vertex"].astype(np.int64)).to(self.source_vertex_idx.device)
            bary = torch.from_numpy(d["barycentric"].astype(np.float32))
            weight = torch.from_numpy(d["weight"].astype(np.float32))
        order = torch.argsort(self.source_vertex_idx)
        pos = torch.searchsorted(self.source_vertex_idx[order], table.reshape(-1)).clamp(max=len(order) - 1)
        local = order[pos]
        if not bool((self.source_vertex_idx[local] == table.reshape(-1)).all()):
            return None
        return local.view(-1, 3), bary.to(self.v_template), weight.to(self.v_template)

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, n_identity: int = 100, **kwargs) -> ICTFaceModel:
        return cls(load_ict_arrays(path), n_identity=n_identity, source=str(path), **kwargs)

    @classmethod
    def from_store(cls, store=None, n_identity: int = 100, full: bool = False, **kwargs) -> ICTFaceModel:
        """The bundled compact model, or with ``full=True`` the full npz installed as asset ``ict``
        (falls back to the bundled copy when no full model is installed)."""
        if full:
            return cls.from_file(AssetStore.coerce(store).path("ict"), n_identity, **kwargs)
        return cls.from_file(_bundled_compact(), n_identity, **kwargs)

    # ---- geometry ---------------------------------------------------------------------------
    def _coefficients(self, params: Params) -> torch.Tensor:
        return torch.cat([params["identity"], params["expression"]], dim=-1).to(self.basis.dtype)

    def vertices(self, params: Params, vertex_idx: torch.Tensor | None = None) -> torch.Tensor:
        """(B, V, 3) rotated vertices in cm about the head pivot; with ``vertex_idx`` only those vertices."""
        params = self.complete(params)
        coeffs = self._coefficients(params)
        if vertex_idx is None:
            template, basis = self.v_template, self.basis
        else:
            idx = torch.as_tensor(vertex_idx, device=self.basis.device, dtype=torch.long)
            template = self.v_template[idx]
            basis = self.basis.view(self.basis.shape[0], -1, 3)[:, idx].reshape(self.basis.shape[0], -1)
        return self._pose(template, basis, coeffs, params["rotation"])

    def _pose(self, template, basis, coeffs, rotation) -> torch.Tensor:
        # geometry stays in the model's dtype even under bf16/fp16 autocast: centimetre coordinates in
        # bf16 would be off by ~0.5 mm and flip contour choices
        with torch.autocast(device_type=coeffs.device.type, enabled=False):
            return self._pose_exact(template, basis, coeffs, rotation)

    def _pose_exact(self, template, basis, coeffs, rotation) -> torch.Tensor:
        verts = torch.addmm(template.to(coeffs).reshape(1, -1), coeffs, basis.to(coeffs)).view(coeffs.shape[0], -1, 3)
        R = axis_angle_to_matrix(rotation.to(coeffs))
        return verts @ R.transpose(1, 2)

    def landmark_vertices(self, params: Params) -> torch.Tensor:
        """Only the vertices the 68 landmarks need (static points + contour candidates), one small matmul."""
        params = self.complete(params)
        coeffs = self._coefficients(params)
        return self._pose(self.v_template[self.landmark_vertex_idx], self._landmark_basis, coeffs,
                          params["rotation"])

    def landmarks_only(self, params: Params) -> torch.Tensor:
        """(B, 68, 3) landmarks without computing the full mesh."""
        return self.landmarks(self.landmark_vertices(params))

    def landmarks(self, vertices: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        """iBUG-68 landmarks. ``vertices`` is the full mesh or ``landmark_vertices()``; the rotation is
        already in the vertices, so the contour needs no parameters.

        Each contour landmark is the candidate vertex outermost in x (on the silhouette the orthographic
        camera sees), taken as a softmax over the candidates' outward x with temperature
        ``contour_softness_cm``: where two candidates are nearly equally far out the landmark blends
        them, so it glides instead of jumping from vertex to vertex as the head turns. Differentiable
        w.r.t. the vertices (and through them every parameter)."""
        if vertices.shape[1] == self.v_template.shape[0]:
            gather = self._gather
        elif vertices.shape[1] == self.landmark_vertex_idx.shape[0]:
            gather = self._local_gather
        else:
            raise ValueError(f"expected {self.v_template.shape[0]} or {self.landmark_vertex_idx.shape[0]} "
                             f"vertices, got {vertices.shape[1]}")
        with torch.autocast(device_type=vertices.device.type, enabled=False):
            return self._landmarks_exact(vertices, gather)

    def _landmarks_exact(self, vertices, gather) -> torch.Tensor:
        # this runs in every fit iteration, so: one gather of the points the landmarks read (coordinates
        # first, so the products and sums below run along contiguous rows, and the backward pass fills one
        # gradient buffer), the valid candidates only (a third of the padded table), and each contour point
        # as a matmul with the 0/1 matrix of which candidates are its own
        B, n = vertices.shape[0], self._candidate_pos.shape[0]
        pts = vertices.transpose(1, 2).index_select(2, gather)  # (B, 3, n + 51)
        cand, inner = pts.split([n, pts.shape[2] - n], dim=2)
        outward = cand[:, 0] * self._candidate_sign.to(cand)  # (B, n)
        table = outward.new_full((B, self._candidate_valid.numel()), float("-inf"))
        table = table.index_copy(1, self._candidate_pos, outward).view(B, *self._candidate_valid.shape)
        if self.contour_softness_cm > 0:
            weights = torch.softmax(table / self.contour_softness_cm, dim=2)
        else:
            weights = F.one_hot(table.argmax(dim=2), table.shape[2]).to(cand)
        weights = weights.reshape(B, -1).index_select(1, self._candidate_pos)  # (B, n)
        contour = (weights.unsqueeze(1) * cand) @ self._candidate_rows.to(cand).T  # (B, 3, 17)
        return torch.cat([contour, inner], dim=2).transpose(1, 2)

    # ---- capabilities (see FaceModel) -------------------------------------------------------
    @property
    def blendshape_names(self) -> tuple[str, ...]:
        return self.expression_names

    @property
    def arkit_names(self) -> tuple[str, ...]:
        return self.expression_names

    @property
    def lip_opening_blendshapes(self) -> tuple[str, ...]:
        return LIP_OPENING_SHAPES

    @property
    def implausible_speech_blendshapes(self) -> tuple[str, ...]:
        return IMPLAUSIBLE_SPEECH_SHAPES

    def mediapipe_lip_vertices(self) -> torch.Tensor | None:
        """From the full-ICT table (:mod:`.ict_lips`) to this mesh's indices; None when the mesh lacks
        one of the table's vertices."""
        if ICT_LIPS_SOURCE_VERTEX is None:
            return None
        source = self.source_vertex_idx
        table = torch.as_tensor(ICT_LIPS_SOURCE_VERTEX, dtype=torch.long, device=source.device)
        order = torch.argsort(source)
        pos = torch.searchsorted(source[order], table).clamp(max=len(source) - 1)
        local = order[pos]
        if not bool((source[local] == table).all()):
            return None
        return local

    # ---- parts, rendering, texture ----------------------------------------------------------
    def part_vertex_idx(self, part: str) -> torch.Tensor:
        if part not in self.part_vertex_range:
            raise KeyError(f"ICT model has no part {part!r}; parts: {', '.join(self.part_names)}")
        a, b = self.part_vertex_range[part]
        return torch.arange(a, b, device=self.faces.device)

    def part_faces(self, *parts: str) -> torch.Tensor:
        """Triangles belonging to the named parts."""
        ids = [self.part_names.index(p) for p in parts if p in self.part_names]
        mask = torch.isin(self.triangle_part, torch.tensor(ids, device=self.faces.device, dtype=torch.long))
        return self.faces[mask]

    def render_faces(self) -> torch.Tensor:
        return self.part_faces(*[p for p in self.part_names if p not in HIDDEN_PARTS])

    def _colour_parts(self, colours: torch.Tensor) -> torch.Tensor:
        for part, colour in (("Mouth socket", MOUTH_INSIDE), ("Gums and tongue", TONGUE), ("Teeth", TEETH)):
            if part in self.part_vertex_range:
                a, b = self.part_vertex_range[part]
                colours[a:b] = torch.tensor(colour, dtype=colours.dtype)
        eyes = [self.part_vertex_range[p] for p in ("Eyeball left", "Eyeball right") if p in self.part_vertex_range]
        return self._colour_eyeballs(colours, eyes)
