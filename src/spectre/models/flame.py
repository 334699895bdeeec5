"""FLAME (2020 layout, user-supplied ``generic_model.pkl``) as used by SPECTRE/DECA.

Linear blend skinning with 5 joints (root, neck, jaw, left eye, right eye), 100 shape + 50 expression
components by default, and the 68-landmark embedding of the official code: 51 static barycentric
points plus a 17-point jaw contour looked up by the head yaw. Numerically this follows the official
``FLAME.forward`` / ``lbs`` (golden vectors in ``shared/golden/flame_*.npz``); units are metres.

Both input files are untrusted: the model pickle goes through ``spectre.safeload.load_restricted_pickle``
and ``landmark_embedding.npy`` (a pickle holding numpy arrays and torch tensors) through
``load_landmark_embedding``, which only rebuilds arrays and tensors.
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..assets import AssetStore
from ..errors import AssetError, UnsafeFileError
from ..geometry import axis_angle_to_matrix, matrix_to_euler_y
from ..safeload import NUMPY_ARRAY_GLOBALS, RestrictedUnpickler, load_restricted_pickle
from .base import FaceModel, Params, ParamSpec

NECK_JOINT = 1
#: FLAME's two eyeballs: separate components of its 5023-vertex topology (the last 2 x 546 vertices)
EYEBALL_VERTEX_RANGES = ((3931, 4477), (4477, 5023))
#: the contour table has rows for yaw 0..39 deg and 40..78 for -1..-39 deg (official look-up)
MAX_CONTOUR_YAW_DEG = 39
_EMBEDDING_KEYS = ("static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx",
                   "dynamic_lmk_bary_coords", "full_lmk_faces_idx", "full_lmk_bary_coords")


# ---- landmark_embedding.npy: a restricted unpickler ------------------------------------------------
def _storage_from_bytes(data: bytes):
    """Stands in for ``torch.storage._load_from_bytes`` (which would call ``torch.load(weights_only=False)``)."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeFileError("tensor storage is not a byte string")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation, pickle protocol notes
            return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).splitlines() or ["refused"])[0]
        raise UnsafeFileError(f"tensor storage references code or objects outside plain tensors ({first[:160]})") \
            from None


#: what a landmark embedding may reference: numpy arrays, and tensors rebuilt from weights-only storages
_EMBEDDING_GLOBALS: dict[tuple[str, str], Any] = {
    **NUMPY_ARRAY_GLOBALS,
    ("collections", "OrderedDict"): collections.OrderedDict,  # the (empty) backward-hooks slot of a tensor
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
}


def load_landmark_embedding(path: str | Path) -> dict[str, np.ndarray]:
    """Read FLAME's ``landmark_embedding.npy`` (an object-array .npy whose pickle holds a dict of numpy
    arrays and torch tensors) without ``allow_pickle=True``: only array/tensor rebuilds are allowed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AssetError(f"cannot read {path}: {exc.strerror or exc}") from None
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        _, _, dtype = read_header(f)
    except Exception as exc:
        raise AssetError(f"{path} is not a .npy file ({exc})") from None
    if dtype != np.dtype(object):
        raise AssetError(f"{path} is not a FLAME landmark embedding (plain {dtype} array, expected a pickled dict)")
    try:
        obj = RestrictedUnpickler(f, _EMBEDDING_GLOBALS,
                                  holds="a landmark embedding holds only numpy arrays and tensors").load()
    except UnsafeFileError as exc:
        raise UnsafeFileError(f"{path}: {exc}") from None
    except Exception as exc:
        raise AssetError(f"{path} is not a readable landmark embedding ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj[()]
    if not isinstance(obj, dict):
        raise AssetError(f"{path} does not hold a dict (got {type(obj).__name__})")
    missing = [k for k in _EMBEDDING_KEYS if k not in obj]
    if missing:
        raise AssetError(f"{path} is not a FLAME landmark embedding (missing {missing})")
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in obj.items()}


def read_obj_uvs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """UV coordinates (T, 2) and per-face UV indices (F, 3) of an OBJ such as ``head_template.obj``."""
    uvs, uv_faces = [], []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("vt "):
                    uvs.append([float(t) for t in line.split()[1:3]])
                elif line.startswith("f "):
                    corners = line.split()[1:]
                    uv_faces.append([int(c.split("/")[1]) - 1 for c in corners[:3]])
    except (OSError, ValueError, IndexError) as exc:
        raise AssetError(f"cannot read UVs from {path} ({type(exc).__name__}: {exc})") from None
    return np.asarray(uvs, dtype=np.float32), np.asarray(uv_faces, dtype=np.int64)


# ---- the model --------------------------------------------------------------------------------------
def faces_to_landmarks(vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor,
                       bary: torch.Tensor) -> torch.Tensor:
    """Barycentric landmarks: ``face_idx`` (B, L) into ``faces``, ``bary`` (B, L, 3) -> (B, L, 3)."""
    B = vertices.shape[0]
    tri = faces[face_idx]  # (B, L, 3)
    corners = torch.gather(vertices, 1, tri.reshape(B, -1, 1).expand(-1, -1, 3)).view(B, -1, 3, 3)
    return torch.einsum("blfi,blf->bli", corners, bary.to(vertices))


class FLAME(FaceModel):
    """FLAME with SPECTRE's parameter layout; ``global_pose`` is the rigid rotation, units metres."""

    name = "flame"
    rotation_param = "global_pose"
    units_per_metre = 1.0

    def __init__(self, model: dict, embedding: dict, n_shape: int = 100, n_exp: int = 50,
                 uvs: tuple[np.ndarray, np.ndarray] | None = None, source: str = ""):
        super().__init__()
        self.source = source
        shapedirs = np.asarray(model["shapedirs"], dtype=np.float64)
        n_id_avail = min(300, shapedirs.shape[2])
        n_exp_avail = shapedirs.shape[2] - 300
        if not (0 < n_shape <= n_id_avail and 0 <= n_exp <= max(n_exp_avail, 0)):
            raise AssetError(f"{source or 'FLAME'}: {n_shape} shape / {n_exp} expression components requested, "
                             f"the model has {n_id_avail} / {max(n_exp_avail, 0)}")
        self.n_shape, self.n_exp = n_shape, n_exp
        self.param_specs = (
            ParamSpec("shape", n_shape, "identity", 0.0, -3.0, 3.0, "identity PCA coefficients"),
            ParamSpec("expression", n_exp, "expression", 0.0, -3.0, 3.0, "expression PCA coefficients"),
            ParamSpec("jaw_pose", 3, "expression", 0.0, -0.5, 0.5, "jaw rotation, axis-angle (x opens)"),
            ParamSpec("eye_pose", 6, "expression", 0.0, -0.5, 0.5, "left and right eyeball rotations"),
            ParamSpec("global_pose", 3, "pose", 0.0, -math.pi / 2, math.pi / 2, "head rotation, axis-angle"),
            # SPECTRE keeps the neck at zero; bounds of 0 keep fits from solving it: it duplicates the head
            # rotation about a pivot at the neck base, and Adam's steps on it swing the whole face
            ParamSpec("neck_pose", 3, "pose", 0.0, 0.0, 0.0, "neck rotation (kept zero, as SPECTRE does)"),
        )
        f32 = torch.float32
        sd = np.concatenate([shapedirs[:, :, :n_shape], shapedirs[:, :, 300:300 + n_exp]], axis=2)
        posedirs = np.asarray(model["posedirs"], dtype=np.float64)
        self.register_buffer("faces", torch.from_numpy(np.asarray(model["f"], dtype=np.int64)))
        self.register_buffer("v_template", torch.tensor(np.asarray(model["v_template"]), dtype=f32))
        self.register_buffer("shapedirs", torch.tensor(sd, dtype=f32))
        self.register_buffer("posedirs", torch.tensor(posedirs.reshape(-1, posedirs.shape[-1]).T, dtype=f32))
        self.register_buffer("J_regressor", torch.tensor(np.asarray(model["J_regressor"]), dtype=f32))
        # the joint regressor is sparse: only these vertices feed the joints (skip the zero columns)
        self.register_buffer("_J_cols", torch.from_numpy(np.flatnonzero(np.any(self.J_regressor.numpy() != 0, 0))))
        parents = np.asarray(model["kintree_table"])[0].astype(np.int64)
        parents[0] = -1
        self.register_buffer("parents", torch.from_numpy(parents))
        self._parent_list = parents.tolist()  # python ints: the kinematic chain loop needs no device sync
        self.register_buffer("lbs_weights", torch.tensor(np.asarray(model["weights"]), dtype=f32))
        chain, j = [], NECK_JOINT
        while j != -1:
            chain.append(j)
            j = int(parents[j])
        self.register_buffer("neck_kin_chain", torch.tensor(chain, dtype=torch.long))

        e = embedding
        self.register_buffer("lmk_faces_idx", torch.from_numpy(e["static_lmk_faces_idx"].astype(np.int64)))
        self.register_buffer("lmk_bary_coords", torch.tensor(e["static_lmk_bary_coords"], dtype=f32))
        self.register_buffer("dynamic_lmk_faces_idx", torch.from_numpy(e["dynamic_lmk_faces_idx"].astype(np.int64)))
        self.register_buffer("dynamic_lmk_bary_coords", torch.tensor(e["dynamic_lmk_bary_coords"], dtype=f32))
        self.register_buffer("full_lmk_faces_idx", torch.from_numpy(e["full_lmk_faces_idx"].astype(np.int64)))
        self.register_buffer("full_lmk_bary_coords", torch.tensor(e["full_lmk_bary_coords"], dtype=f32))
        if uvs is not None:
            self.register_buffer("_uv_coords", torch.from_numpy(uvs[0]))
            self.register_buffer("_uv_faces", torch.from_numpy(uvs[1]))
        else:
            self._uv_coords = self._uv_faces = None

    @classmethod
    def from_store(cls, store=None, n_shape: int = 100, n_exp: int = 50) -> FLAME:
        """Load ``generic_model.pkl`` and ``landmark_embedding.npy`` from the asset store; UVs from
        ``head_template.obj`` when it is installed."""
        store = AssetStore.coerce(store)
        pkl = store.path("flame")
        model = load_restricted_pickle(pkl)
        missing = {"v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table"} - set(model)
        if missing:
            raise AssetError(f"{pkl} is not a FLAME model (missing {sorted(missing)})")
        embedding = load_landmark_embedding(store.path("landmark_embedding"))
        template = store.find("head_template")
        uvs = read_obj_uvs(template) if template is not None else None
        return cls(model, embedding, n_shape=n_shape, n_exp=n_exp, uvs=uvs, source=str(pkl))

    # ---- LBS ----------------------------------------------------------------------------------
    def full_pose(self, params: Params) -> torch.Tensor:
        """(B, 15) pose in joint order [global, neck, jaw, left eye, right eye]."""
        return torch.cat([params["global_pose"], params["neck_pose"], params["jaw_pose"], params["eye_pose"]], 1)

    def _lbs(self, betas: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=betas.device.type, enabled=False):  # geometry in the model's dtype
            return self._lbs_exact(betas, pose)

    def _lbs_exact(self, betas: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        dtype = self.v_template.dtype
        betas, pose = betas.to(dtype), pose.to(dtype)
        B = betas.shape[0]
        v_shaped = self.v_template[None] + torch.einsum("bl,mkl->bmk", betas, self.shapedirs)
        joints = self.J_regressor[:, self._J_cols] @ v_shaped[:, self._J_cols]  # (B, J, 3)
        rot = axis_angle_to_matrix(pose.reshape(-1, 3)).view(B, -1, 3, 3)
        eye3 = torch.eye(3, dtype=dtype, device=pose.device)
        pose_feature = (rot[:, 1:] - eye3).reshape(B, -1)
        v_posed = v_shaped + (pose_feature @ self.posedirs).view(B, -1, 3)
        transforms = self._rigid_transforms(rot, joints)  # (B, J, 4, 4)
        T = (self.lbs_weights @ transforms.view(B, -1, 16)).view(B, -1, 4, 4)
        return (T[..., :3, :3] @ v_posed[..., None])[..., 0] + T[..., :3, 3]

    def _rigid_transforms(self, rot: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """World transforms of the joints, re-centred so they act on rest-pose vertices."""
        parents = self._parent_list
        rel = joints.clone()
        rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
        local = torch.cat([F.pad(rot, (0, 0, 0, 1)), F.pad(rel[..., None], (0, 0, 0, 1), value=1.0)], dim=3)
        chain = [local[:, 0]]
        for i in range(1, len(parents)):
            chain.append(chain[parents[i]] @ local[:, i])
        world = torch.stack(chain, dim=1)
        joints_h = F.pad(joints[..., None], (0, 0, 0, 1))  # (B, J, 4, 1), w = 0
        return world - F.pad(world @ joints_h, (3, 0))

    def vertices(self, params: Params) -> torch.Tensor:
        params = self.complete(params)
        betas = torch.cat([params["shape"], params["expression"]], dim=1)
        return self._lbs(betas, self.full_pose(params))

    # ---- landmarks --------------------------------------------------------------------------
    def contour_row(self, full_pose: torch.Tensor) -> torch.Tensor:
        """Row of the dynamic-contour table for each pose: the rounded yaw (degrees) of the neck chain,
        clamped to 39; negative yaws map to 39 - yaw, below -39 to 78 (the official look-up)."""
        B = full_pose.shape[0]
        aa = full_pose.reshape(B, -1, 3)[:, self.neck_kin_chain]
        rots = axis_angle_to_matrix(aa.reshape(-1, 3).to(self.v_template.dtype)).view(B, -1, 3, 3)
        rel = torch.eye(3, dtype=rots.dtype, device=rots.device).expand(B, 3, 3)
        for i in range(rots.shape[1]):
            rel = rots[:, i] @ rel
        yaw = torch.round(torch.clamp(matrix_to_euler_y(rel) * 180.0 / np.pi, max=MAX_CONTOUR_YAW_DEG)).long()
        return torch.where(yaw < 0, torch.where(yaw < -MAX_CONTOUR_YAW_DEG, 78, MAX_CONTOUR_YAW_DEG - yaw), yaw)

    def dynamic_contour(self, full_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 17) contour face indices and (B, 17, 3) barycentric coordinates for these poses."""
        row = self.contour_row(full_pose)
        return self.dynamic_lmk_faces_idx[row], self.dynamic_lmk_bary_coords[row]

    def landmarks(self, vertices: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        """The 68 landmarks SPECTRE fits (``landmarks2d``: dynamic contour + 51 static, 3-D model space)."""
        B = vertices.shape[0]
        if params is None:
            pose = vertices.new_zeros(B, 15)
        else:
            params = self.complete(params)
            pose = self.full_pose(params)
        dyn_idx, dyn_bary = self.dynamic_contour(pose)
        idx = torch.cat([dyn_idx, self.lmk_faces_idx.expand(B, -1)], dim=1)
        bary = torch.cat([dyn_bary, self.lmk_bary_coords.expand(B, -1, -1)], dim=1)
        with torch.autocast(device_type=vertices.device.type, enabled=False):
            return faces_to_landmarks(vertices, self.faces, idx, bary)

    def landmarks3d(self, vertices: torch.Tensor) -> torch.Tensor:
        """The fixed-contour 68 landmarks (``full_lmk_*``; the official ``landmarks3d``, for visualisation)."""
        B = vertices.shape[0]
        return faces_to_landmarks(vertices, self.faces, self.full_lmk_faces_idx.expand(B, -1),
                                  self.full_lmk_bary_coords.expand(B, -1, -1))

    def decode(self, shape: torch.Tensor, exp: torch.Tensor, pose6: torch.Tensor,
               eye_pose: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The official call ``FLAME(shape, exp, pose[global 3 | jaw 3], eye_pose)`` ->
        (vertices, landmarks2d, landmarks3d), neck fixed at zero."""
        params = {"shape": shape, "expression": exp, "global_pose": pose6[:, :3], "jaw_pose": pose6[:, 3:6]}
        if eye_pose is not None:
            params["eye_pose"] = eye_pose
        params = self.complete(params)
        verts = self.vertices(params)
        return verts, self.landmarks(verts, params), self.landmarks3d(verts)

    # ---- MediaPipe correspondence (optional capabilities of FaceModel) ----------------------------
    # FLAME's expression is a signed PCA: no named blendshapes, so no lip-opening or implausible-shape
    # priors (``lip_opening_blendshapes`` / ``implausible_speech_blendshapes`` stay empty, the L1 sparsity
    # prior only applies to blendshape weights) and ARKit weights come from ``models.ARKIT_MODEL``.
    def _mediapipe_table(self) -> dict[str, np.ndarray] | None:
        """``spectre/data/flame_mp478.npz`` (derived by ``scripts/make_flame_mp_correspondence.py`` from the
        ICT tables and FLAME's template topology), or None when it is missing or this mesh is not FLAME's
        5023-vertex topology."""
        path = Path(__file__).resolve().parents[1] / "data" / "flame_mp478.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as d:
            table = {k: d[k] for k in ("triangle_vertex", "barycentric", "weight", "lip_vertex", "lip_rows")}
        if int(table["triangle_vertex"].max()) >= self.v_template.shape[0]:
            return None
        return table

    def mediapipe_surface(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        t = self._mediapipe_table()
        if t is None:
            return None
        dev, dt = self.v_template.device, self.v_template.dtype
        return (torch.from_numpy(t["triangle_vertex"].astype(np.int64)).to(dev),
                torch.from_numpy(t["barycentric"]).to(dev, dt), torch.from_numpy(t["weight"]).to(dev, dt))

    def mediapipe_lip_points(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The 40 lip rows of :meth:`mediapipe_surface` (``lip_rows`` of the table, ``MP_LIPS`` order), kept
        barycentric: FLAME's lip vertices are up to ~3 mm apart."""
        t, surface = self._mediapipe_table(), self.mediapipe_surface()
        if t is None or surface is None:
            return None
        rows = torch.from_numpy(t["lip_rows"].astype(np.int64)).to(surface[0].device)
        return surface[0][rows], surface[1][rows]

    def mediapipe_lip_vertices(self) -> torch.Tensor | None:
        """The vertex of largest barycentric weight of each lip point (see :meth:`mediapipe_lip_points`)."""
        t = self._mediapipe_table()
        return None if t is None else torch.from_numpy(t["lip_vertex"].astype(np.int64)).to(self.faces.device)

    def _colour_parts(self, colours: torch.Tensor) -> torch.Tensor:
        if self.num_vertices == EYEBALL_VERTEX_RANGES[-1][1]:
            colours = self._colour_eyeballs(colours, EYEBALL_VERTEX_RANGES)
        return colours

    # ---- texture ----------------------------------------------------------------------------
