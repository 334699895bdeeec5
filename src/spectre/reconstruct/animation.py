"""Animated heads for animation tools: the fit's pose and camera as a 3D head transform, ARKit morphs.

Coordinates (glTF, right-handed, metres): the camera that filmed the video sits at the origin looking
down -Z, +X is image right, +Y image up. Every face track becomes one node whose rotation is the fitted
head rotation (composed with the in-plane rotation of the face crop, if any) and whose translation puts
the head pivot where the weak-perspective camera saw it: the face's size in pixels fixes its depth for a
pinhole camera with focal length ``focal_px`` (default: the longer image side, a 53° field of view across
it), and its position in the image fixes X and Y at that depth. The mesh itself is stored unrotated, in
metres, about the model's pivot.

Models whose expression coefficients carry ARKit names (ICT) export the 52 ARKit shapes once each:
halves that ARKit defines as one shape (ICT's ``browInnerUp``/``cheekPuff`` left and right) are summed
into one target driven by the mean of the two weights (as in the ARKit CSV), ARKit shapes the model lacks
(``tongueOut``) are present with no motion, and shapes outside ARKit keep their own names. Other models
(FLAME) export a vertex animation of the pose-free mesh (one morph target per frame).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..faces.crop import FACE_CROP_SIZE
from ..geometry import crop_to_pixels
from ..io.gltf import GltfCamera, HeadTrack, write_glb_scene
from ..io.results import ARKIT_NAMES, FaceResult

__all__ = ["head_pose", "livelink_angles", "EYE_LOOK_DEGREES", "frame_times", "arkit_morph_basis", "head_track",
           "write_head_glb", "default_focal", "CROP_HALF"]

#: eye rotation (degrees) an ARKit eyeLook* weight of 1 stands for, for the Live Link eye angles
EYE_LOOK_DEGREES = 30.0

#: half the side of the crop the camera projects into (``crop_to_pixels``)
CROP_HALF = FACE_CROP_SIZE / 2.0


def default_focal(width: int, height: int) -> float:
    """Assumed focal length in pixels (the video's intrinsics are unknown): the longer image side."""
    return float(max(width, height))


def _axis_angle_to_quat(rv: np.ndarray) -> np.ndarray:
    rv = np.asarray(rv, np.float64).reshape(-1, 3)
    angle = np.linalg.norm(rv, axis=1, keepdims=True)
    axis = np.where(angle > 1e-12, rv / np.maximum(angle, 1e-12), np.array([1.0, 0.0, 0.0]))
    return np.concatenate([axis * np.sin(angle / 2), np.cos(angle / 2)], axis=1)  # (x, y, z, w)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz], -1)


def head_pose(model, face: FaceResult, width: int, height: int, focal_px: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(rotation (T, 4) quaternions x,y,z,w; translation (T, 3) metres) of the head pivot in camera space."""
    f = float(focal_px or default_focal(width, height))
    cam = np.asarray(face.cam, np.float64)
    s, tx, ty = cam[:, 0], cam[:, 1], cam[:, 2]
    inv = np.linalg.inv(np.asarray(face.crop_tform, np.float64))  # crop px -> frame px
    lin, off = inv[:, :2, :2], inv[:, :2, 2]
    k = np.sqrt(np.abs(np.linalg.det(lin)))  # frame px per crop px
    phi = np.arctan2(lin[:, 1, 0], lin[:, 0, 0])  # crop rotation in image coords (y down)
    # the pivot (model origin) in crop px, then frame px
    crop_px = crop_to_pixels(np.stack([s * tx, -s * ty], 1), FACE_CROP_SIZE)
    frame_px = np.einsum("tij,tj->ti", lin, crop_px) + off
    px_per_metre = CROP_HALF * s * k * float(model.units_per_metre)
    depth = f / np.maximum(px_per_metre, 1e-9)
    x = (frame_px[:, 0] - width / 2.0) * depth / f
    y = -(frame_px[:, 1] - height / 2.0) * depth / f
    translation = np.stack([x, y, -depth], 1)
    rv = np.asarray(face.params[model.rotation_param], np.float64)[:, :3]
    roll = np.zeros((len(phi), 3))
    roll[:, 2] = -phi  # image y points down: an image-space rotation by phi is -phi about +Z
    rotation = _quat_mul(_axis_angle_to_quat(roll), _axis_angle_to_quat(rv))
    return rotation, translation


def _rest_params(model, face: FaceResult, frames=slice(None)) -> dict[str, torch.Tensor]:
    """The fitted parameters with the rigid rotation zeroed (it goes on the node)."""
    params = {k: torch.as_tensor(np.asarray(v, np.float32)[frames]) for k, v in face.params.items()}
    params[model.rotation_param] = torch.zeros_like(params[model.rotation_param])
    return params


def arkit_morph_basis(model, identity: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray] | None:
    """For a model with ARKit-named expressions: (neutral (V,3), deltas (K,V,3) in model units, target
    names, mix (E, K) mapping the model's expression weights to the target weights); else None."""
    names = tuple(model.arkit_names or ())
    if not names or not set(ARKIT_NAMES) & set(names) or "expression" not in model.spec:
        return None
    E = len(names)
    extra = [n for n in dict.fromkeys(names) if n not in ARKIT_NAMES]
    targets = list(ARKIT_NAMES) + extra
    mix = np.zeros((E, len(targets)), np.float32)  # expression weights -> target weights (mean of halves)
    sum_ = np.zeros((len(targets), E), np.float32)  # unit expression deltas -> target deltas (sum of halves)
    for j, name in enumerate(targets):
        cols = [i for i, n in enumerate(names) if n == name]
        for i in cols:
            mix[i, j] = 1.0 / len(cols)
            sum_[j, i] = 1.0
    ident = torch.as_tensor(np.asarray(identity, np.float32)).reshape(1, -1)
    with torch.no_grad():
        neutral = model.vertices(model.complete({"identity": ident}))[0].double().numpy()
        unit = model.complete({"identity": ident.repeat(E, 1), "expression": torch.eye(E)})
        deltas = model.vertices(unit).double().numpy() - neutral[None]
    return neutral, np.einsum("ke,evc->kvc", sum_, deltas), targets, mix


def frame_times(face: FaceResult, fps: float) -> np.ndarray:
    """Seconds from the first frame: the video's timestamps, or ``fps`` if they do not increase."""
    ts = np.asarray(face.timestamps, np.float64)
    if len(ts) > 1 and np.all(np.diff(ts) > 0):
        return ts - ts[0]
    return np.arange(len(ts), dtype=np.float64) / float(fps or 25.0)


def head_track(model, face: FaceResult, width: int, height: int, fps: float, focal_px: float | None = None,
               chunk: int = 64) -> HeadTrack:
    """One face track as an animated head (ARKit morphs where the model has them, else vertex animation)."""
    faces = model.render_faces().cpu().numpy().astype(np.int64)
    used = np.unique(faces)  # drop vertices no drawn triangle uses (hidden shells): smaller, clean normals
    remap = np.full(int(faces.max()) + 1, -1, np.int64)
    remap[used] = np.arange(len(used))
    scale = 1.0 / float(model.units_per_metre)
    T = face.num_frames
    basis = None
    if "identity" in face.params:
        basis = arkit_morph_basis(model, np.asarray(face.params["identity"])[0])
    if basis is not None and "expression" in face.params:
        neutral, deltas, names, mix = basis
        rest = neutral[used] * scale
        targets = deltas[:, used] * scale
        weights = np.asarray(face.params["expression"], np.float32) @ mix
    else:
        with torch.no_grad():
            verts = np.concatenate([model.vertices(model.complete(_rest_params(model, face, slice(a, a + chunk))))
                                    .double().numpy() for a in range(0, T, chunk)])[:, used] * scale
        rest = verts[0]
        targets = verts[1:] - rest[None] if T > 1 else np.zeros((1, *rest.shape))
        names = [f"frame{t:06d}" for t in range(1, len(targets) + 1)]
        weights = np.zeros((T, len(targets)), np.float32)
        for t in range(1, T):
            weights[t, t - 1] = 1.0
    rotation, translation = head_pose(model, face, width, height, focal_px)
    colours = model.render_colours()  # the video render's lips, mouth, eyes and brows, on the skin material
    return HeadTrack(name=f"head_{int(face.track_id)}", vertices=rest, faces=remap[faces], targets=targets,
                     target_names=names, weights=weights, rotation=rotation, translation=translation,
                     times=frame_times(face, fps), colours=None if colours is None else colours.numpy()[used],
                     extras={"track_id": int(face.track_id), "frame_index": [int(i) for i in face.frame_index]})


def write_head_glb(path: str | Path, model, faces: Sequence[FaceResult], *, width: int, height: int, fps: float,
                   video: str = "", focal_px: float | None = None, overwrite: bool = False) -> Path:
    """``<name>.glb``: one animated head node per face track and the assumed video camera."""
    f = float(focal_px or default_focal(width, height))
    tracks = [head_track(model, face, width, height, fps, f) for face in faces]
    ts = np.asarray(faces[0].timestamps, np.float64) if faces else np.zeros(1)
    camera = GltfCamera(yfov=2.0 * math.atan(height / 2.0 / f), aspect=width / float(height))
    extras = {"spectre": {"fps": float(fps), "frame_count": int(len(ts)), "time_offset": float(ts[0]),
                          "width": int(width), "height": int(height), "focal_px": f, "units": "metre",
                          "video": Path(video).name if video else ""}}
    return write_glb_scene(path, tracks, camera, extras=extras, overwrite=overwrite)


def livelink_angles(model, face: FaceResult, width: int, height: int) -> np.ndarray:
    """(T, 9) Live Link Face angles as fractions of 90°: head yaw, pitch, roll, then left and right eye
    yaw, pitch, roll.

    The head rotation relative to the camera (0 = facing it) is split as R = Ry(yaw) Rx(pitch) Rz(roll)
    about the glTF axes: yaw > 0 turns the face toward image right (the subject's left), pitch > 0 tilts
    it down, roll > 0 turns it counter-clockwise as the camera sees it. Eye yaw/pitch follow the same
    signs and come from the ARKit eyeLook* weights (a weight of 1 = ``EYE_LOOK_DEGREES``); roll is 0.
    """
    rotation, _ = head_pose(model, face, width, height)
    x, y, z, w = rotation.T
    r02, r22 = 2 * (x * z + y * w), 1 - 2 * (x * x + y * y)
    r12, r10, r11 = 2 * (y * z - x * w), 2 * (x * y + z * w), 1 - 2 * (x * x + z * z)
    head = np.stack([np.arctan2(r02, r22), np.arcsin(np.clip(-r12, -1, 1)), np.arctan2(r10, r11)], 1)
    out = np.zeros((len(rotation), 9))
    out[:, :3] = head / (np.pi / 2)
    if face.arkit is not None:
        a = {n: np.asarray(face.arkit, np.float64)[:, i] for i, n in enumerate(ARKIT_NAMES)}
        k = EYE_LOOK_DEGREES / 90.0
        out[:, 3] = k * (a["eyeLookOutLeft"] - a["eyeLookInLeft"])
        out[:, 4] = k * (a["eyeLookDownLeft"] - a["eyeLookUpLeft"])
        out[:, 6] = k * (a["eyeLookInRight"] - a["eyeLookOutRight"])
        out[:, 7] = k * (a["eyeLookDownRight"] - a["eyeLookUpRight"])
    return np.clip(out, -1.0, 1.0)
