"""glTF 2.0 binary (GLB) scenes of animated heads, in the form animation tools import.

``write_glb_scene`` writes one node per face track: a mesh in metres with normals, a plain material and
morph targets (named ARKit shapes, or one target per frame for a vertex animation), the morph weights
and the head's rotation and translation animated on the node, keyed at the video's timestamps, plus an
optional perspective camera at the origin (glTF axes: +X right, +Y up, the camera looks down -Z).
``read_glb`` returns the JSON and the binary chunk (used by tests and the viewer's checks).

Morph targets that move few vertices are stored as sparse accessors, which keeps an ICT head with 52
ARKit shapes to a few MB.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError

__all__ = ["GltfBuilder", "HeadTrack", "GltfCamera", "write_glb_scene", "read_glb", "accessor_array",
           "vertex_normals"]

_FLOAT, _UINT, _USHORT = 5126, 5125, 5123
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_COMPONENT = {np.dtype("float32"): _FLOAT, np.dtype("uint32"): _UINT, np.dtype("uint16"): _USHORT}


class GltfBuilder:
    """Collects binary views/accessors for one buffer and writes the GLB container."""

    def __init__(self):
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, array: np.ndarray, target: int | None = None) -> int:
        array = np.ascontiguousarray(array)
        while len(self.blob) % 4:
            self.blob.append(0)
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        self.blob += array.tobytes()
        self.views.append(view)
        return len(self.views) - 1

    def add(self, array: np.ndarray, kind: str, target: int | None = None, minmax: bool = False) -> int:
        array = np.ascontiguousarray(array)
        count = array.shape[0] if array.ndim > 0 else 1
        acc = {"bufferView": self.view(array, target), "componentType": _COMPONENT[array.dtype],
               "count": int(count), "type": kind}
        if minmax:
            flat = array.reshape(count, -1)
            acc["min"] = [float(x) for x in flat.min(0)]
            acc["max"] = [float(x) for x in flat.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def add_sparse_vec3(self, array: np.ndarray, tolerance: float = 0.0) -> int:
        """A (N, 3) float32 accessor stored sparsely when under half of its rows differ from zero
        (rows within ``tolerance`` count as zero); min/max as glTF requires for POSITION."""
        array = np.ascontiguousarray(array, np.float32)
        moved = np.flatnonzero(np.abs(array).max(1) > tolerance)
        if len(moved) * 2 >= len(array):
            return self.add(array, "VEC3", _ARRAY_BUFFER, minmax=True)
        kept = np.zeros_like(array)
        kept[moved] = array[moved]
        acc = {"componentType": _FLOAT, "count": int(len(array)), "type": "VEC3",
               "min": [float(x) for x in kept.min(0)], "max": [float(x) for x in kept.max(0)]}
        if len(moved):
            idx_dtype = np.uint16 if len(array) < 65536 else np.uint32
            acc["sparse"] = {"count": int(len(moved)),
                             "indices": {"bufferView": self.view(moved.astype(idx_dtype)),
                                         "componentType": _COMPONENT[np.dtype(idx_dtype)]},
                             "values": {"bufferView": self.view(array[moved])}}
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def write(self, path, gltf: dict, overwrite: bool) -> Path:
        while len(self.blob) % 4:
            self.blob.append(0)
        gltf["buffers"] = [{"byteLength": len(self.blob)}]
        gltf["bufferViews"] = self.views
        gltf["accessors"] = self.accessors
        js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
        js += b" " * (-len(js) % 4)
        total = 12 + 8 + len(js) + 8 + len(self.blob)
        with atomic_path(path, overwrite) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(struct.pack("<4sII", b"glTF", 2, total))
                fh.write(struct.pack("<I4s", len(js), b"JSON"))
                fh.write(js)
                fh.write(struct.pack("<I4s", len(self.blob), b"BIN\0"))
                fh.write(bytes(self.blob))
        return Path(path)


@dataclass
class HeadTrack:
    """One animated head: ``vertices`` (V, 3) in metres at rest, ``faces`` (F, 3), morph ``targets``
    (K, V, 3) metres with ``target_names`` and per-frame ``weights`` (T, K), the head pose per frame as
    ``rotation`` (T, 4) unit quaternions (x, y, z, w) and ``translation`` (T, 3) metres, at ``times``
    (T,) seconds from the first frame; optional ``colours`` (V, 3) in [0, 1], written as ``COLOR_0``, which
    glTF viewers multiply into the material's base colour (lips, mouth, eyes and brows)."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    targets: np.ndarray
    target_names: Sequence[str]
    weights: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    times: np.ndarray
    colours: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


@dataclass
class GltfCamera:
    """A perspective camera at the origin looking down -Z (``yfov`` radians, ``aspect`` = width/height)."""

    yfov: float
    aspect: float
    znear: float = 0.01
    zfar: float = 100.0


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3); vertices without a triangle get +Z."""
    v = np.asarray(vertices, np.float64)
    tri = v[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(norm > 1e-20, n / np.maximum(norm, 1e-20), np.array([0.0, 0.0, 1.0]))
    return n.astype(np.float32)


def _check_track(t: HeadTrack) -> None:
    V, T = len(t.vertices), len(t.times)
    if t.vertices.ndim != 2 or t.vertices.shape[1] != 3 or t.faces.ndim != 2 or t.faces.shape[1] != 3:
        raise ValueError(f"{t.name}: vertices (V, 3) and faces (F, 3) expected")
    if t.faces.size and (t.faces.min() < 0 or t.faces.max() >= V):
        raise ValueError(f"{t.name}: faces index vertices that do not exist")
    K = len(t.target_names)
    if t.targets.shape != (K, V, 3) or t.weights.shape != (T, K):
        raise ValueError(f"{t.name}: need targets ({K}, {V}, 3) and weights ({T}, {K}), got "
                         f"{t.targets.shape} and {t.weights.shape}")
    if len(set(t.target_names)) != K:
        raise ValueError(f"{t.name}: morph target names repeat")
    if t.rotation.shape != (T, 4) or t.translation.shape != (T, 3):
        raise ValueError(f"{t.name}: rotation (T, 4) and translation (T, 3) expected for T={T}")
    if T < 1 or (T > 1 and np.any(np.diff(t.times) <= 0)):
        raise ValueError(f"{t.name}: times must be strictly increasing")
    if t.colours is not None and np.shape(t.colours) != (V, 3):
        raise ValueError(f"{t.name}: colours (V, 3) expected for V={V}, got {np.shape(t.colours)}")


def write_glb_scene(path: str | Path, tracks: Sequence[HeadTrack], camera: GltfCamera | None = None,
                    extras: dict | None = None, overwrite: bool = False, sparse_tolerance: float = 1e-7) -> Path:
    """One GLB with a node per track (mesh + morph weights + TRS animation) and an optional camera.

    All samplers are LINEAR; quaternions are made sign-continuous so slerp takes the short way.
    """
    if not tracks:
        raise ValueError("no tracks to write")
    b = GltfBuilder()
    gltf: dict = {"asset": {"version": "2.0", "generator": "spectre-face"}, "scene": 0,
                  "scenes": [{"name": "spectre", "nodes": []}], "nodes": [], "meshes": [],
                  "materials": [{"name": "face", "doubleSided": False,
                                 "pbrMetallicRoughness": {"baseColorFactor": [0.8, 0.72, 0.66, 1.0],
                                                          "metallicFactor": 0.0, "roughnessFactor": 0.65}}]}
    if extras:
        gltf["asset"]["extras"] = extras
    samplers, channels = [], []
    for t in tracks:
        _check_track(t)
        verts = np.asarray(t.vertices, np.float32)
        faces = np.asarray(t.faces, np.int64)
        idx_dtype = np.uint16 if len(verts) < 65536 else np.uint32
        prim = {"attributes": {"POSITION": b.add(verts, "VEC3", _ARRAY_BUFFER, minmax=True),
                               "NORMAL": b.add(vertex_normals(verts, faces), "VEC3", _ARRAY_BUFFER)},
                "indices": b.add(faces.reshape(-1).astype(idx_dtype), "SCALAR", _ELEMENT_ARRAY_BUFFER),
                "material": 0, "mode": 4}
        if t.colours is not None:
            colours = np.clip(np.asarray(t.colours, np.float32), 0.0, 1.0)
            prim["attributes"]["COLOR_0"] = b.add(colours, "VEC3", _ARRAY_BUFFER)
        names = [str(n) for n in t.target_names]
        weights = np.asarray(t.weights, np.float32)
        if names:
            prim["targets"] = [{"POSITION": b.add_sparse_vec3(d, sparse_tolerance)}
                               for d in np.asarray(t.targets, np.float32)]
        mesh = {"name": t.name, "primitives": [prim]}
        if names:
            mesh["weights"] = [float(x) for x in weights[0]]
            mesh["extras"] = {"targetNames": names}
        gltf["meshes"].append(mesh)
        rot = np.asarray(t.rotation, np.float64).copy()
        rot /= np.linalg.norm(rot, axis=1, keepdims=True)
        for i in range(1, len(rot)):  # short-way slerp between keys
            if np.dot(rot[i], rot[i - 1]) < 0:
                rot[i] = -rot[i]
        trans = np.asarray(t.translation, np.float32)
        node = {"name": t.name, "mesh": len(gltf["meshes"]) - 1,
                "rotation": [float(x) for x in rot[0]], "translation": [float(x) for x in trans[0]]}
        if t.extras:
            node["extras"] = t.extras
        gltf["nodes"].append(node)
        node_id = len(gltf["nodes"]) - 1
        gltf["scenes"][0]["nodes"].append(node_id)
        times = b.add(np.asarray(t.times, np.float32), "SCALAR", minmax=True)
        outputs = [("rotation", b.add(rot.astype(np.float32), "VEC4")),
                   ("translation", b.add(trans, "VEC3"))]
        if names:
            outputs.append(("weights", b.add(weights.reshape(-1), "SCALAR")))
        for target_path, acc in outputs:
            samplers.append({"input": times, "output": acc, "interpolation": "LINEAR"})
            channels.append({"sampler": len(samplers) - 1, "target": {"node": node_id, "path": target_path}})
    if camera is not None:
        gltf["cameras"] = [{"name": "video", "type": "perspective",
                            "perspective": {"yfov": float(camera.yfov), "aspectRatio": float(camera.aspect),
                                            "znear": float(camera.znear), "zfar": float(camera.zfar)}}]
        gltf["nodes"].append({"name": "video_camera", "camera": 0})
        gltf["scenes"][0]["nodes"].append(len(gltf["nodes"]) - 1)
    gltf["animations"] = [{"name": "spectre", "samplers": samplers, "channels": channels}]
    return b.write(path, gltf, overwrite)


def read_glb(path: str | Path) -> tuple[dict, bytes]:
    """(JSON dict, binary chunk) of a GLB file; a one-line error if it is not one."""
    data = Path(path).read_bytes()
    if len(data) < 20 or data[:4] != b"glTF":
        raise InputError(f"{path} is not a GLB file")
    n_json, kind = struct.unpack_from("<I4s", data, 12)
    if kind != b"JSON":
        raise InputError(f"{path}: first GLB chunk is not JSON")
    gltf = json.loads(data[20:20 + n_json])
    off = 20 + n_json
    blob = b""
    if off + 8 <= len(data):
        n_bin, kind = struct.unpack_from("<I4s", data, off)
        blob = data[off + 8: off + 8 + n_bin] if kind == b"BIN\0" else b""
    return gltf, blob


def accessor_array(gltf: dict, blob: bytes, index: int) -> np.ndarray:
    """Decode accessor ``index`` (dense or sparse, float/uint) into an array (count, components)."""
    ncomp = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
    dtypes = {_FLOAT: np.float32, _UINT: np.uint32, _USHORT: np.uint16, 5121: np.uint8}
    acc = gltf["accessors"][index]
    n = ncomp[acc["type"]]
    dtype = dtypes[acc["componentType"]]

    def from_view(view_id: int, count: int, dt, comps: int, offset: int = 0) -> np.ndarray:
        view = gltf["bufferViews"][view_id]
        start = view.get("byteOffset", 0) + offset
        return np.frombuffer(blob, dtype=dt, count=count * comps, offset=start).reshape(count, comps)

    if "bufferView" in acc:
        out = from_view(acc["bufferView"], acc["count"], dtype, n, acc.get("byteOffset", 0)).copy()
    else:
        out = np.zeros((acc["count"], n), dtype)
    sp = acc.get("sparse")
    if sp:
        idx = from_view(sp["indices"]["bufferView"], sp["count"], dtypes[sp["indices"]["componentType"]], 1)[:, 0]
        out[idx.astype(np.int64)] = from_view(sp["values"]["bufferView"], sp["count"], dtype, n)
    return out
