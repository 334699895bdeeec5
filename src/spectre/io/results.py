"""Per-face reconstruction results on disk: the versioned ``.npz`` schema and the ARKit ``.csv``.

Schema ``spectre.face/1`` (one file per face track; ``T`` = frames of the input video):

================== =========== ====================================================================
key                shape/dtype meaning
================== =========== ====================================================================
schema             str         ``"spectre.face/1"``
spectre_version    str         package version that wrote the file
model              str         face model name (``ict`` or ``flame``)
backend            str         ``fit`` or ``learned``
track_id           int         face track id (``--face``)
video              str         input path as given
fps                float       input frame rate
width, height      int         input frame size (after rotation)
frame_index        (T,) int64  input frame index
timestamps         (T,) f64    presentation time of each frame in seconds
valid              (T,) bool   face detected (or interpolated across a short gap) in this frame
param_<name>       (T, n) f32  every parameter block of the model (identity repeated per frame)
param_names        (P,) str    the ``<name>`` list above, in the model's order
expression_names   (E,) str    distinct names of the expression coefficients (ICT: ARKit names; the halves ICT
                               splits are ``browInnerUpLeft``/``Right``, ``cheekPuffLeft``/``Right``)
arkit              (T, 52) f32 ARKit blendshape weights (optional: absent with ``--no-arkit``)
arkit_names        (52,) str   their names, ``ARKIT_NAMES`` (Apple's order)
cam                (T, 3) f32  SPECTRE camera ``[s, tx, ty]`` into the frame's 224 crop (``project_to_crop``)
crop_tform         (T, 3, 3)   input pixel -> crop pixel similarity (official 224 crop, scale 1.6)
landmarks2d        (T, 68, 2)  reconstructed iBUG-68 landmarks in input pixels
landmarks3d        (T, 68, 3)  the same landmarks in model space (rotation applied, model units)
tracked68          (T, 68, 2)  tracked iBUG-68 landmarks in input pixels (NaN where not valid)
points478          (T, 478, 3) tracked MediaPipe points (x, y pixels, z depth·width; NaN where not valid)
config             str         the fully resolved run config (YAML)
================== =========== ====================================================================

Frames outside ``valid`` carry parameters interpolated by the fit's temporal terms (``fit``) or copied
from the nearest valid frame (``learned``); use ``valid`` to ignore them.
"""
from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from ..atomic import atomic_path
from ..errors import InputError

SCHEMA = "spectre.face/1"

#: Apple ARKit's 52 blendshape names, in ARKit's documented order
ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose",
    "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut",
)


@dataclass
class FaceResult:
    """One reconstructed face track (see the module docstring for every field)."""

    track_id: int
    model: str
    backend: str
    params: dict[str, np.ndarray]
    cam: np.ndarray
    crop_tform: np.ndarray
    landmarks2d: np.ndarray
    landmarks3d: np.ndarray
    valid: np.ndarray
    frame_index: np.ndarray
    timestamps: np.ndarray
    tracked68: np.ndarray | None = None
    points478: np.ndarray | None = None
    expression_names: tuple[str, ...] = ()
    arkit: np.ndarray | None = None  # (T, 52) ARKit weights in ARKIT_NAMES order
    extras: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.cam.shape[0])

    @property
    def arkit_names(self) -> tuple[str, ...]:
        """Names of the ``arkit`` columns (Apple's 52 ARKit blendshapes, in Apple's order)."""
        return ARKIT_NAMES

    def arkit_curves(self) -> dict[str, np.ndarray]:
        """ARKit weights by name: ``{"jawOpen": (T,) array, ...}`` (empty without ARKit weights)."""
        if self.arkit is None:
            return {}
        a = np.asarray(self.arkit)
        return {n: a[:, i] for i, n in enumerate(ARKIT_NAMES)}


def save_face_npz(path: str | Path, face: FaceResult, *, video: str, fps: float, width: int, height: int,
                  config_yaml: str, version: str, overwrite: bool = False) -> Path:
    """Write one face's results (atomic; refuses to replace an existing file unless ``overwrite``)."""
    T = face.num_frames
    arrays = {
        "schema": np.array(SCHEMA), "spectre_version": np.array(version), "model": np.array(face.model),
        "backend": np.array(face.backend), "track_id": np.array(int(face.track_id)), "video": np.array(str(video)),
        "fps": np.array(float(fps)), "width": np.array(int(width)), "height": np.array(int(height)),
        "frame_index": np.asarray(face.frame_index, np.int64), "timestamps": np.asarray(face.timestamps, np.float64),
        "valid": np.asarray(face.valid, bool), "param_names": np.array(list(face.params), dtype=str),
        "expression_names": np.array(list(face.expression_names), dtype=str),
        "cam": np.asarray(face.cam, np.float32), "crop_tform": np.asarray(face.crop_tform, np.float64),
        "landmarks2d": np.asarray(face.landmarks2d, np.float32),
        "landmarks3d": np.asarray(face.landmarks3d, np.float32), "config": np.array(config_yaml),
    }
    for name, value in face.params.items():
        arrays[f"param_{name}"] = np.asarray(value, np.float32)
    if face.tracked68 is not None:
        arrays["tracked68"] = np.asarray(face.tracked68, np.float32)
    if face.points478 is not None:
        arrays["points478"] = np.asarray(face.points478, np.float32)
    if face.arkit is not None:
        arrays["arkit"] = np.asarray(face.arkit, np.float32)
        arrays["arkit_names"] = np.array(list(ARKIT_NAMES), dtype=str)
    for k, v in arrays.items():
        if v.ndim and v.shape[0] != T and k not in ("param_names", "expression_names", "arkit_names"):
            raise ValueError(f"result array {k} has {v.shape[0]} frames, expected {T}")
    path = Path(path)
    with atomic_path(path, overwrite) as tmp:
        write_npz(tmp, arrays)
    return path


#: bytes of an array compressed at a time: the file is written without a copy of its arrays
NPZ_PIECE = 1 << 20


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez_compressed`` writes (``np.load`` reads it), streamed: each array's bytes go to the
    compressor a piece at a time, so writing costs no memory that grows with the video (numpy's own
    writer copied each array whole, and the file was built in memory first). The zip file is closed on
    any error (a full disk): no half-written archive is left for the garbage collector to complain about."""
    with open(path, "wb") as fh:
        archive = zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED)
        try:
            for name, value in arrays.items():
                value = np.asarray(value, order="C")  # (not ascontiguousarray: it makes scalars 1-d)
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    npy_format.write_array_header_1_0(member, npy_format.header_data_from_array_1_0(value))
                    data = value.reshape(-1).view(np.uint8)
                    for a in range(0, len(data), NPZ_PIECE):
                        member.write(data[a:a + NPZ_PIECE])
        finally:
            archive.close()


def load_face_npz(path: str | Path) -> dict[str, np.ndarray | str | int | float]:
    """Read a result file back: a dict with the schema's keys (scalars as Python values) plus
    ``params`` (name -> array). Refuses files of another schema with a one-line error."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read result file {path}: {exc}") from None
    schema = str(data.get("schema", ""))
    if schema.split("/")[0] != SCHEMA.split("/")[0]:
        raise InputError(f"{path} is not a spectre face result (schema {schema or 'missing'!r})")
    if int(schema.split("/")[1]) > int(SCHEMA.split("/")[1]):
        raise InputError(f"{path} uses schema {schema}, newer than this spectre reads ({SCHEMA}); upgrade spectre")
    out: dict = {}
    for k, v in data.items():
        out[k] = v.item() if v.ndim == 0 else v
    out["params"] = {str(n): data[f"param_{n}"] for n in data["param_names"]}
    return out


def _write_arkit_csv(fh, face: FaceResult) -> None:
    if face.arkit is None:
        raise ValueError("face result has no ARKit weights")
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(["frame", "time", "valid", *ARKIT_NAMES])
    for i in range(face.num_frames):
        w.writerow([int(face.frame_index[i]), f"{float(face.timestamps[i]):.6f}", int(bool(face.valid[i])),
                    *(f"{float(x):.6f}" for x in face.arkit[i])])


def arkit_csv_text(face: FaceResult) -> str:
    """CSV text: ``frame,time,valid,<52 ARKit names>`` (weights in [0, 1], 6 decimals)."""
    buf = io.StringIO()
    _write_arkit_csv(buf, face)
    return buf.getvalue()


def save_arkit_csv(path: str | Path, face: FaceResult, overwrite: bool = False) -> Path:
    """Write :func:`arkit_csv_text` (atomic; row by row, not as one string in memory)."""
    if face.arkit is None:
        raise ValueError("face result has no ARKit weights")
    with atomic_path(path, overwrite) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        _write_arkit_csv(fh, face)
    return Path(path)


def load_arkit_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (frame (T,), valid (T,), weights (T, 52)) in ARKIT_NAMES order."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    if header[:3] != ["frame", "time", "valid"] or tuple(header[3:]) != ARKIT_NAMES:
        raise InputError(f"{path} is not a spectre ARKit CSV")
    arr = np.array([[float(x) for x in r] for r in body], dtype=np.float64).reshape(len(body), len(header))
    return arr[:, 0].astype(np.int64), arr[:, 2].astype(bool), arr[:, 3:].astype(np.float32)
