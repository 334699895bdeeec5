"""Mesh exports: OBJ and PLY per frame, glTF binary (GLB) animations.

* ``write_glb_morph``: a neutral mesh plus K morph targets (e.g. the 53 ARKit-named ICT blendshapes)
  and a per-frame weight track, the form Blender, three.js, Unity and Unreal import as shape keys.
* ``write_glb_vertex_animation``: any per-frame vertex sequence (e.g. FLAME). glTF has no vertex
  cache, so every frame becomes one morph target of the first frame and the weight track switches
  (linearly) from frame to frame, which reproduces the sequence exactly at the keyframes.

All writers are atomic (temp file + rename) and refuse to replace a file unless ``overwrite``.
(The npz/CSV result files live in ``spectre.io.results``; animated head scenes with pose, normals and
a material, as written by ``--meshes glb``, in ``spectre.io.gltf``.)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from .gltf import GltfBuilder

__all__ = ["write_obj", "read_obj", "write_ply", "read_ply", "write_glb_morph", "write_glb_vertex_animation"]

_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def _as_np(x, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> None:
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3) triangles, got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("faces index vertices that do not exist")


# ---- OBJ -------------------------------------------------------------------------------------
def write_obj(path: str | Path, vertices, faces, uv_coords=None, uv_faces=None, overwrite: bool = False) -> Path:
    """Wavefront OBJ (1-based indices), with ``vt`` texture coordinates when given."""
    v, f = _as_np(vertices, np.float64), _as_np(faces, np.int64)
    _check_mesh(v, f)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    if uv_coords is not None and uv_faces is not None:
        uv, uf = _as_np(uv_coords, np.float64), _as_np(uv_faces, np.int64)
        lines += [f"vt {a:.6f} {b:.6f}" for a, b in uv]
        lines += [f"f {a}/{d} {b}/{e} {c}/{g}" for (a, b, c), (d, e, g) in zip(f + 1, uf + 1)]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in f + 1]
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return Path(path)


def read_obj(path: str | Path) -> dict[str, np.ndarray]:
    """Minimal OBJ reader (v, vt, triangular or polygon f split into a fan).
    Returns ``vertices`` (V,3), ``faces`` (F,3) and, when present, ``uv_coords`` (T,2), ``uv_faces`` (F,3)."""
    verts, uvs, faces, uv_faces = [], [], [], []
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "v":
                verts.append([float(t) for t in parts[1:4]])
            elif parts[0] == "vt":
                uvs.append([float(t) for t in parts[1:3]])
            elif parts[0] == "f":
                corners = [p.split("/") for p in parts[1:]]
                vi = [int(c[0]) for c in corners]
                ti = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
                for k in range(1, len(vi) - 1):
                    faces.append([vi[0], vi[k], vi[k + 1]])
                    uv_faces.append([ti[0], ti[k], ti[k + 1]])
        except (ValueError, IndexError):
            raise InputError(f"{path}: malformed line {n}: {line[:60]!r}") from None
    out = {"vertices": np.asarray(verts, np.float64).reshape(-1, 3)}
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    out["faces"] = np.where(f < 0, f + len(verts), f - 1)
    if uvs and uv_faces and min(min(t) for t in uv_faces) != 0:
        out["uv_coords"] = np.asarray(uvs, np.float64)
        out["uv_faces"] = np.asarray(uv_faces, np.int64) - 1
    return out


# ---- PLY -------------------------------------------------------------------------------------
def write_ply(path: str | Path, vertices, faces, colors=None, overwrite: bool = False) -> Path:
    """Binary little-endian PLY; optional per-vertex uint8 RGB ``colors`` (V, 3)."""
    v, f = _as_np(vertices, np.float32), _as_np(faces, np.int32)
    _check_mesh(v, f)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}",
              "property float x", "property float y", "property float z"]
    vdtype = [("p", "<f4", 3)]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        vdtype.append(("c", "u1", 3))
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    vrec = np.empty(len(v), dtype=vdtype)
    vrec["p"] = v
    if colors is not None:
        vrec["c"] = _as_np(colors, np.uint8)
    frec = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", 3)])
    frec["n"] = 3
    frec["i"] = f
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(("\n".join(header) + "\n").encode("ascii"))
            fh.write(vrec.tobytes())
            fh.write(frec.tobytes())
    return Path(path)


def read_ply(path: str | Path) -> dict[str, np.ndarray]:
    """Reader for the binary PLY files written by :func:`write_ply` (xyz [+ rgb], triangles)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise InputError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise InputError(f"{path}: only binary little-endian PLY is supported")
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    nf = int(next(h for h in header if h.startswith("element face")).split()[-1])
    has_color = any(h.endswith(" red") for h in header)
    vdtype = [("p", "<f4", 3)] + ([("c", "u1", 3)] if has_color else [])
    off = end + len(b"end_header\n")
    vrec = np.frombuffer(data, dtype=vdtype, count=nv, offset=off)
    off += vrec.nbytes
    frec = np.frombuffer(data, dtype=[("n", "u1"), ("i", "<i4", 3)], count=nf, offset=off)
    out = {"vertices": vrec["p"].copy(), "faces": frec["i"].astype(np.int64)}
    if has_color:
        out["colors"] = vrec["c"].copy()
    return out


# ---- glTF / GLB ------------------------------------------------------------------------------
def _morph_gltf(neutral: np.ndarray, deltas: np.ndarray, names: Sequence[str], weights: np.ndarray,
                times: np.ndarray, faces: np.ndarray, interpolation: str, path, overwrite: bool) -> Path:
    _check_mesh(neutral, faces)
    K = deltas.shape[0]
    if deltas.shape[1:] != neutral.shape:
        raise ValueError(f"deltas must be (K, {neutral.shape[0]}, 3), got {deltas.shape}")
    if len(names) != K or weights.ndim != 2 or weights.shape[1] != K or weights.shape[0] != len(times):
        raise ValueError(f"need {K} names and weights (T, {K}) for {len(times)} times, got "
                         f"{len(names)} names and weights {weights.shape}")
    b = GltfBuilder()
    idx_dtype = np.uint16 if neutral.shape[0] < 65536 else np.uint32
    indices = b.add(faces.reshape(-1).astype(idx_dtype), "SCALAR", _ELEMENT_ARRAY_BUFFER)
    position = b.add(neutral.astype(np.float32), "VEC3", _ARRAY_BUFFER, minmax=True)
    targets = [{"POSITION": b.add(d.astype(np.float32), "VEC3", _ARRAY_BUFFER, minmax=True)} for d in deltas]
    t_acc = b.add(times.astype(np.float32), "SCALAR", minmax=True)
    w_acc = b.add(weights.astype(np.float32).reshape(-1), "SCALAR")
    gltf = {
        "asset": {"version": "2.0", "generator": "spectre-face"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "face"}],
        "meshes": [{"name": "face",
                    "primitives": [{"attributes": {"POSITION": position}, "indices": indices, "mode": 4,
                                    "targets": targets}],
                    "weights": [float(x) for x in weights[0]],
                    "extras": {"targetNames": list(map(str, names))}}],
        "animations": [{"name": "animation",
                        "samplers": [{"input": t_acc, "output": w_acc, "interpolation": interpolation}],
                        "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]}],
    }
    return b.write(path, gltf, overwrite)


def write_glb_morph(path: str | Path, neutral, deltas, names: Sequence[str], weights, fps: float, faces,
                    overwrite: bool = False) -> Path:
    """GLB with ``neutral`` (V,3), morph targets ``deltas`` (K,V,3) named ``names`` and a LINEAR weight
    track ``weights`` (T,K) sampled at ``fps``; target names go to ``mesh.extras.targetNames``."""
    w = _as_np(weights, np.float32)
    times = np.arange(w.shape[0], dtype=np.float64) / float(fps)
    return _morph_gltf(_as_np(neutral, np.float32), _as_np(deltas, np.float32), names, w, times,
                       _as_np(faces, np.int64), "LINEAR", path, overwrite)


def write_glb_vertex_animation(path: str | Path, vertices, faces, fps: float, overwrite: bool = False) -> Path:
    """GLB playing back the vertex sequence ``vertices`` (T,V,3) at ``fps``: frame 0 is the mesh, frame
    t>0 is morph target t-1 (its offset from frame 0) with weight 1 exactly at its time."""
    v = _as_np(vertices, np.float32)
    if v.ndim != 3 or v.shape[-1] != 3 or v.shape[0] < 1:
        raise ValueError(f"vertices must be (T, V, 3), got {v.shape}")
    T = v.shape[0]
    deltas = v[1:] - v[:1]
    if T == 1:  # glTF animations need at least one target; add an inert one
        deltas = np.zeros_like(v)
    K = deltas.shape[0]
    weights = np.zeros((T, K), np.float32)
    for t in range(1, T):
        weights[t, t - 1] = 1.0
    times = np.arange(T, dtype=np.float64) / float(fps)
    names = [f"frame{t:06d}" for t in range(1, K + 1)]
    return _morph_gltf(v[0], deltas, names, weights, times, _as_np(faces, np.int64), "LINEAR", path, overwrite)
