"""Mesh exports: OBJ/PLY re-read exactly; GLB files parse with pygltflib and round-trip their data."""
from __future__ import annotations

import numpy as np
import pytest

from spectre.errors import OutputError
from spectre.io.export import read_obj, read_ply, write_glb_morph, write_glb_vertex_animation, write_obj, write_ply

pygltflib = pytest.importorskip("pygltflib")

_NP = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}
_NCOMP = {"SCALAR": 1, "VEC3": 3}


def accessor_data(gltf, index):
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    blob = gltf.binary_blob()
    dtype = _NP[acc.componentType]
    start = view.byteOffset + (acc.byteOffset or 0)
    n = acc.count * _NCOMP[acc.type]
    arr = np.frombuffer(blob, dtype=dtype, count=n, offset=start)
    return arr.reshape(acc.count, -1) if _NCOMP[acc.type] > 1 else arr


@pytest.fixture(scope="module")
def ict(shared_assets):
    return np.load(shared_assets / "ict_facekit" / "ict_face_model.npz")


def tetra():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64) * 0.1
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return v, f


def test_obj_round_trip_with_uvs(tmp_path):
    v, f = tetra()
    uv = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)
    p = write_obj(tmp_path / "m.obj", v, f, uv, f)
    got = read_obj(p)
    np.testing.assert_allclose(got["vertices"], v, atol=1e-6)
    np.testing.assert_array_equal(got["faces"], f)
    np.testing.assert_allclose(got["uv_coords"], uv)
    np.testing.assert_array_equal(got["uv_faces"], f)
    with pytest.raises(OutputError):
        write_obj(p, v, f)


def test_ply_round_trip(tmp_path, ict):
    v = ict["neutral_vertices"]
    f = ict["triangles"]
    colors = (np.arange(len(v) * 3) % 256).astype(np.uint8).reshape(-1, 3)
    got = read_ply(write_ply(tmp_path / "m.ply", v, f, colors))
    np.testing.assert_array_equal(got["vertices"], v)
    np.testing.assert_array_equal(got["faces"], f)
    np.testing.assert_array_equal(got["colors"], colors)


def test_bad_mesh_is_rejected(tmp_path):
    v, f = tetra()
    with pytest.raises(ValueError):
        write_ply(tmp_path / "x.ply", v, f + 10)
    assert not (tmp_path / "x.ply").exists()


def test_glb_morph_targets_ict(tmp_path, ict):
    neutral = ict["neutral_vertices"]
    deltas = ict["expression_deltas"].astype(np.float32)
    names = [str(n) for n in ict["expression_arkit_names"]]
    T = 12
    rng = np.random.default_rng(0)
    weights = rng.uniform(0, 1, (T, len(names))).astype(np.float32)
    p = write_glb_morph(tmp_path / "face.glb", neutral, deltas, names, weights, 25.0, ict["triangles"])
    g = pygltflib.GLTF2().load(str(p))
    mesh = g.meshes[0]
    prim = mesh.primitives[0]
    assert len(prim.targets) == 53 and mesh.extras["targetNames"] == names
    assert "jawOpen" in names
    np.testing.assert_array_equal(accessor_data(g, prim.attributes.POSITION), neutral)
    jaw = names.index("jawOpen")
    np.testing.assert_array_equal(accessor_data(g, prim.targets[jaw]["POSITION"]), deltas[jaw])
    np.testing.assert_array_equal(accessor_data(g, prim.indices).reshape(-1, 3), ict["triangles"])
    sampler = g.animations[0].samplers[0]
    assert g.animations[0].channels[0].target.path == "weights"
    np.testing.assert_allclose(accessor_data(g, sampler.input), np.arange(T) / 25.0, atol=1e-6)
    np.testing.assert_array_equal(accessor_data(g, sampler.output).reshape(T, -1), weights)
    # POSITION accessors carry the bounds the glTF spec requires
    acc = g.accessors[prim.attributes.POSITION]
    np.testing.assert_allclose(acc.min, neutral.min(0))
    np.testing.assert_allclose(acc.max, neutral.max(0))


def test_glb_vertex_animation_reproduces_frames(tmp_path, golden_dir):
    gold = np.load(golden_dir / "shading.npz")
    frames = np.concatenate([gold["verts"], gold["verts"][::-1] * 1.01], 0)  # (4, 5023, 3)
    faces = gold["faces"][0]
    p = write_glb_vertex_animation(tmp_path / "flame.glb", frames, faces, fps=30)
    g = pygltflib.GLTF2().load(str(p))
    prim = g.meshes[0].primitives[0]
    base = accessor_data(g, prim.attributes.POSITION)
    sampler = g.animations[0].samplers[0]
    w = accessor_data(g, sampler.output).reshape(len(frames), -1)
    targets = np.stack([accessor_data(g, t["POSITION"]) for t in prim.targets])
    for t in range(len(frames)):
        np.testing.assert_allclose(base + np.tensordot(w[t], targets, 1), frames[t], atol=1e-6)
    np.testing.assert_allclose(accessor_data(g, sampler.input), np.arange(4) / 30, atol=1e-6)


def test_glb_morph_shape_errors(tmp_path):
    v, f = tetra()
    with pytest.raises(ValueError):
        write_glb_morph(tmp_path / "x.glb", v, np.zeros((2, 4, 3)), ["a"], np.zeros((3, 2)), 25, f)
