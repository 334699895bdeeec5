"""Convert an ICT-FaceKit ``FaceXModel`` download into the single npz that ``ICTFaceModel`` reads.

Input layout (github ICT-VGL/ICT-FaceKit, folder FaceXModel): ``generic_neutral_mesh.obj`` (topology,
UVs, material groups), ``identity000.obj`` ... (identity PCA modes as displaced neutral meshes),
one OBJ per expression named as in ``vertex_indices.json["expressions"]``, ``vertex_indices.json``
(landmarks and vertex sets), optionally ``sample_data/``, ``README.md`` (finer part tables) and the
licence. Every OBJ must have the neutral vertex count; blendshapes are stored as float16 deltas from
the neutral (their worst error is stored beside them), exactly the layout of the shared
``ict_face_model.npz``.
"""
from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path

import numpy as np

from ..assets import AssetStore, user_data_dir
from ..atomic import atomic_path, check_writable
from ..errors import InputError

N_VERTICES = 26719
NEUTRAL = "generic_neutral_mesh.obj"
INDICES = "vertex_indices.json"
EXTRA_SHAPES = ("PupilDilate_L", "PupilDilate_R", "cheekRaiser_L", "cheekRaiser_R")
UNITS = "centimetres (OBJ units of the source; see README)"

#: geometry parts of the fixed topology: (name, first vertex, first polygon); each ends where the next starts
PARTS = (("Face", 0, 0), ("Head and Neck", 9409, 9230), ("Mouth socket", 11248, 11144),
         ("Eye socket left", 13294, 13226), ("Eye socket right", 13678, 13630),
         ("Gums and tongue", 14062, 14034), ("Teeth", 17039, 17006), ("Eyeball left", 21451, 21496),
         ("Eyeball right", 23021, 23094), ("Lacrimal fluid left", 24591, 24692),
         ("Lacrimal fluid right", 24795, 24855), ("Eye blend left", 24999, 25018),
         ("Eye blend right", 25023, 25033), ("Eye occlusion left", 25047, 25048),
         ("Eye occlusion right", 25199, 25176), ("Eyelashes left", 25351, 25304),
         ("Eyelashes right", 26035, 25844))
N_POLYGONS = 26384
#: jaw-line vertex chains given in the ICT-FaceKit README (substitutes for contour landmarks 0-7 / 9-16)
JAWLINE_RIGHT = (1278, 1272, 12, 1834, 243, 781, 2199, 1447)
JAWLINE_LEFT = (3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496)
JAWLINE_RIGHT_EXTENDED = (1280, 1278, 1275, 1272, 1248, 12, 820, 1834, 1902, 243, 844, 781, 1673, 2199, 801,
                          1447, 800)
JAWLINE_LEFT_EXTENDED = (3041, 3661, 3042, 4390, 3880, 3022, 3085, 2484, 4102, 4036, 3061, 2253, 3466, 3490,
                         3493, 3496, 3498)
#: README sections with finer vertex/polygon tables -> key prefix in the npz
_README_TABLES = {"Face Area Details": "face_area", "Eyeball Details": "eyeball_part", "Teeth Details": "tooth"}


def arkit_name(name: str) -> str:
    """ICT spelling -> ARKit spelling (``mouthSmile_L`` -> ``mouthSmileLeft``); ICT splits browInnerUp and
    cheekPuff into sides, ARKit has one of each."""
    base, _, side = name.rpartition("_")
    if not base or side not in ("L", "R"):
        return name
    if base in ("browInnerUp", "cheekPuff"):
        return base
    return base + ("Left" if side == "L" else "Right")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _parse_floats(path: Path, rows: list[list[str]], width: int) -> np.ndarray:
    try:
        return np.array([r[:width] for r in rows], dtype=np.float64).reshape(-1, width)
    except ValueError:
        raise InputError(f"{path}: malformed coordinates (expected {width} numbers per line)") from None


_V_LINE = re.compile(rb"^v[ \t]+([^\r\n]*)", re.M)


def read_obj_vertices(path: Path, expected: int = N_VERTICES) -> np.ndarray:
    """The ``v`` lines of an OBJ as (V, 3) float64; the vertex count must match the neutral topology."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = _V_LINE.findall(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fromstring stops early on a bad token
        flat = np.fromstring(b" ".join(lines), dtype=np.float64, sep=" ")
    if flat.size == 3 * len(lines):
        verts = flat.reshape(-1, 3)
    else:  # extra values per line (vertex colours) or a malformed number: parse line by line
        verts = _parse_floats(path, [line.split()[:3] for line in lines], 3)
    if len(verts) != expected:
        raise InputError(f"{path}: {len(verts)} vertices, expected {expected} (not the ICT-FaceKit topology)")
    return verts


def read_neutral_obj(path: Path) -> dict[str, np.ndarray]:
    """Vertices, polygons (with UV indices), UVs and material groups of ``generic_neutral_mesh.obj``."""
    verts, uvs, faces, uv_faces, materials, starts = [], [], [], [], [], []
    for line in _read_text(path).splitlines():
        if line.startswith("v "):
            verts.append(line.split()[1:4])
        elif line.startswith("vt "):
            uvs.append(line.split()[1:3])
        elif line.startswith("f "):
            corners = line.split()[1:]
            if not 3 <= len(corners) <= 4:
                raise InputError(f"{path}: polygon with {len(corners)} corners (triangles and quads expected)")
            try:
                vi = [int(c.split("/")[0]) - 1 for c in corners]
                ti = [int(c.split("/")[1]) - 1 if c.count("/") and c.split("/")[1] else -1 for c in corners]
            except ValueError:
                raise InputError(f"{path}: malformed face line {line[:60]!r}") from None
            faces.append(vi + [-1] * (4 - len(vi)))
            uv_faces.append(ti + [-1] * (4 - len(ti)))
        elif line.startswith("usemtl "):
            materials.append(line.split(None, 1)[1].strip())
            starts.append(len(faces))
    v = _parse_floats(path, verts, 3)
    if len(v) != N_VERTICES or len(faces) != N_POLYGONS:
        raise InputError(f"{path}: {len(v)} vertices / {len(faces)} polygons, expected {N_VERTICES} / {N_POLYGONS} "
                         "(not the ICT Face Model Light topology)")
    f = np.array(faces, dtype=np.int32)
    if f.max() >= N_VERTICES or (f[:, :3] < 0).any():
        raise InputError(f"{path}: face indices out of range")
    ends = starts[1:] + [len(faces)]
    return {"vertices": v, "uv_coords": _parse_floats(path, uvs, 2), "faces": f,
            "uv_faces": np.array(uv_faces, dtype=np.int32), "material_names": np.array(materials),
            "material_face_range": np.array(list(zip(starts, ends)), dtype=np.int32).reshape(-1, 2)}


def triangulate(polys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan-split quads (a, b, c, d) -> (a, b, c), (a, c, d); returns triangles and their source polygon."""
    quad = polys[:, 3] >= 0
    first = polys[:, [0, 1, 2]]
    second = polys[:, [0, 2, 3]]
    tris = np.where(quad[:, None, None], np.stack([first, second], 1), np.stack([first, first], 1))
    keep = np.stack([np.ones(len(polys), bool), quad], 1).reshape(-1)
    owner = np.repeat(np.arange(len(polys)), 2)[keep]
    return tris.reshape(-1, 3)[keep].astype(np.int32), owner.astype(np.int32)


def _readme_tables(text: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    row = re.compile(r"^\|\s*#\d+\s*\|\s*([^|]+?)\s*\|\s*\[(\d+):(\d+)\]\s*\|\s*\[(\d+):(\d+)\]")
    for section, prefix in _README_TABLES.items():
        m = re.search(r"^###\s+" + re.escape(section) + r"\s*$(.*?)(?=^###\s|\Z)", text, re.M | re.S)
        if not m:
            continue
        rows = [row.match(line.strip()) for line in m.group(1).splitlines()]
        rows = [r for r in rows if r]
        if rows:
            out[f"{prefix}_names"] = np.array([r.group(1) for r in rows])
            # the README gives inclusive [first:last]; store half-open [start, end) like the part ranges
            out[f"{prefix}_vertex_range"] = np.array([[int(r.group(2)), int(r.group(3)) + 1] for r in rows], np.int32)
            out[f"{prefix}_face_range"] = np.array([[int(r.group(4)), int(r.group(5)) + 1] for r in rows], np.int32)
    return out


def _find(folder: Path, name: str) -> Path | None:
    for p in (folder / name, folder.parent / name):
        if p.is_file():
            return p
    return None


def _part_ranges() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = np.array([p[0] for p in PARTS])
    vs = [p[1] for p in PARTS] + [N_VERTICES]
    fs = [p[2] for p in PARTS] + [N_POLYGONS]
    return (names, np.array(list(zip(vs[:-1], vs[1:])), np.int32), np.array(list(zip(fs[:-1], fs[1:])), np.int32))


def _deltas(folder: Path, names: list[str], neutral: np.ndarray, required: bool) -> tuple[np.ndarray, float]:
    """float16 deltas (K, V, 3) of the named OBJs from the neutral, and their worst float16 error (cm)."""
    out = np.zeros((len(names), N_VERTICES, 3), dtype=np.float16)
    worst = 0.0
    for k, name in enumerate(names):
        path = folder / f"{name}.obj"
        if not path.is_file():
            if required:
                raise InputError(f"{folder}: missing {path.name} (an ICT-FaceKit FaceXModel folder has one OBJ per "
                                 "identity mode and expression)")
            return out[:k], worst
        delta = read_obj_vertices(path) - neutral
        out[k] = delta.astype(np.float16)
        worst = max(worst, float(np.abs(out[k].astype(np.float64) - delta).max()))
    return out, worst


def build_ict_arrays(folder: str | Path) -> dict[str, np.ndarray]:
    """Read a FaceXModel folder into the arrays of ``ict_face_model.npz``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"ICT-FaceKit folder not found: {folder}")
    neutral_path = folder / NEUTRAL
    if not neutral_path.is_file():
        raise InputError(f"{folder} is not an ICT-FaceKit FaceXModel folder (no {NEUTRAL})")
    idx_path = folder / INDICES
    try:
        indices = json.loads(_read_text(idx_path)) if idx_path.is_file() else None
    except ValueError as exc:
        raise InputError(f"{idx_path}: not valid JSON ({exc})") from None
    if not isinstance(indices, dict) or not isinstance(indices.get("expressions"), list):
        raise InputError(f"{folder}: missing or invalid {INDICES} (needs an 'expressions' list)")

    mesh = read_neutral_obj(neutral_path)
    neutral = mesh["vertices"]
    expr_names = [str(n) for n in indices["expressions"]]
    n_identity = 0
    while (folder / f"identity{n_identity:03d}.obj").is_file():
        n_identity += 1
    if n_identity == 0:
        raise InputError(f"{folder}: no identity000.obj (identity modes are required)")
    identity_names = [f"identity{i:03d}" for i in range(n_identity)]
    identity, id_err = _deltas(folder, identity_names, neutral, required=True)
    expression, ex_err = _deltas(folder, expr_names, neutral, required=True)
    extra, extra_err = _deltas(folder, list(EXTRA_SHAPES), neutral, required=False)
    tris, owner = triangulate(mesh["faces"])
    uv_tris, _ = triangulate(mesh["uv_faces"])
    part_names, part_v, part_f = _part_ranges()

    def vidx(key):
        values = np.asarray(indices.get(key, []), dtype=np.int64)
        if len(values) and (values.min() < 0 or values.max() >= N_VERTICES):
            raise InputError(f"{idx_path}: '{key}' has vertex indices outside 0..{N_VERTICES - 1}")
        return values.astype(np.int32)

    out: dict[str, np.ndarray] = {
        "neutral_vertices": neutral.astype(np.float32),
        "identity_deltas": identity, "identity_names": np.array(identity_names),
        "expression_deltas": expression, "expression_names": np.array(expr_names),
        "expression_arkit_names": np.array([arkit_name(n) for n in expr_names]),
        "faces": mesh["faces"], "face_sizes": np.where(mesh["faces"][:, 3] >= 0, 4, 3).astype(np.uint8),
        "triangles": tris, "triangle_to_face": owner,
        "uv_coords": mesh["uv_coords"].astype(np.float32), "uv_faces": mesh["uv_faces"], "uv_triangles": uv_tris,
        "material_names": mesh["material_names"], "material_face_range": mesh["material_face_range"],
        "part_names": part_names, "part_vertex_range": part_v, "part_face_range": part_f,
        "landmarks68_vertex_idx": vidx("idx_to_landmark_verts"),
        "jawline_right_vertex_idx": np.array(JAWLINE_RIGHT, np.int32),
        "jawline_left_vertex_idx": np.array(JAWLINE_LEFT, np.int32),
        "jawline_right_extended_vertex_idx": np.array(JAWLINE_RIGHT_EXTENDED, np.int32),
        "jawline_left_extended_vertex_idx": np.array(JAWLINE_LEFT_EXTENDED, np.int32),
        "fitting_vertex_idx": vidx("idx_to_fitting_verts"), "rigid_vertex_idx": vidx("idx_to_rigid_verts"),
        "laplacian_rigid_vertex_idx": vidx("idx_to_lap_rigid_verts"),
        "rigid_landmark_idx": np.asarray(indices.get("idx_to_rigid_landmark_idx", []), dtype=np.int32),
        "identity_deltas_float16_max_error_cm": np.float32(id_err),
        "expression_deltas_float16_max_error_cm": np.float32(ex_err),
        "units": np.array(UNITS),
        "source": np.array(f"ICT-FaceKit FaceXModel folder {folder.name} (converted by spectre assets convert-ict)"),
    }
    if len(out["landmarks68_vertex_idx"]) != 68:
        raise InputError(f"{idx_path}: 'idx_to_landmark_verts' must list 68 vertices")
    if len(extra):
        out["extra_shape_deltas"] = extra
        out["extra_shape_names"] = np.array(EXTRA_SHAPES[:len(extra)])
        out["extra_shape_deltas_float16_max_error_cm"] = np.float32(extra_err)
    readme = _find(folder, "README.md")
    if readme is not None:
        out.update(_readme_tables(_read_text(readme)))
    sample = folder / "sample_data" / "sample_identity_coeffs.json"
    if sample.is_file():
        try:
            s = json.loads(_read_text(sample))
            out["sample_identity_coefficients"] = np.asarray(s["identity_coefficients"], dtype=np.float64)
            out["sample_expression_coefficients"] = np.asarray(s["expression_coefficients"], dtype=np.float64)
        except (ValueError, KeyError, TypeError):
            pass  # optional example data
    licence = _find(folder, "LICENSE") or _find(folder, "LICENSE.md") or _find(folder, "LICENSE.txt")
    out["license"] = np.array(_read_text(licence).strip() if licence else
                              "MIT License, Copyright (c) 2020 USC Institute for Creative Technologies "
                              "(ICT-FaceKit, github ICT-VGL/ICT-FaceKit)")
    return out


def convert_ict_folder(folder: str | Path, output: str | Path | None = None, store=None,
                       overwrite: bool = False) -> Path:
    """Build the full ICT model npz from an ICT-FaceKit FaceXModel folder. Without ``output`` it is
    installed as asset ``ict`` (``--assets`` folder or the user data folder). Never overwrites an
    existing file unless ``overwrite``; the file appears only when complete."""
    if output is None:
        store = AssetStore.coerce(store)
        output = (store.assets_dir or user_data_dir()) / store.spec("ict").install_path
    output = check_writable(output, overwrite)  # fail before the slow part
    arrays = build_ict_arrays(folder)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(output, overwrite) as tmp:
        Path(tmp).write_bytes(buf.getvalue())
    return output
