"""FLAME against the official golden vectors (synthetic FLAME), plus safe loading of its two files."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from spectre.assets import AssetStore
from spectre.errors import AssetError, UnsafeFileError
from spectre.geometry import orthographic_project, project_to_crop
from spectre.models import load_face_model
from spectre.models.flame import FLAME, load_landmark_embedding

CASES = ("zero", "random", "jaw_open", "yaw", "eyes")
ATOL = RTOL = 1e-5  # golden README, flame_* (float32)
F64_ATOL = 1e-9  # our float64 run vs the official float64 run (same algorithm, rounding only)
F32_VS_F64_ATOL = 1e-6  # README: float32 vs the *_f64 reference <= 4.2e-8 m


@pytest.fixture(scope="module")
def flame(flame_assets) -> FLAME:
    return FLAME.from_store(AssetStore(flame_assets))


@pytest.fixture(scope="module")
def flame64(flame) -> FLAME:
    import copy

    return copy.deepcopy(flame).double()


def _golden(golden_dir, case):
    with np.load(golden_dir / f"flame_{case}.npz") as g:
        return {k: g[k] for k in g.files}


def _inputs(g, dtype=torch.float32):
    t = {k: torch.from_numpy(g[k]).to(dtype) for k in ("in_shape", "in_exp", "in_pose", "in_cam")}
    eye = torch.from_numpy(g["in_eye_pose"]).to(dtype) if "in_eye_pose" in g else None
    return t, eye


def test_buffers_match_official(flame, golden_dir):
    with np.load(golden_dir / "flame_model_buffers.npz") as b:
        np.testing.assert_array_equal(flame.faces.numpy(), b["faces_tensor"])
        np.testing.assert_array_equal(flame.parents.numpy(), b["parents"])
        np.testing.assert_array_equal(flame.neck_kin_chain.numpy(), b["neck_kin_chain"])
        np.testing.assert_array_equal(flame.lmk_faces_idx.numpy(), b["lmk_faces_idx"])
        np.testing.assert_array_equal(flame.full_lmk_faces_idx.numpy(), b["full_lmk_faces_idx"])
        np.testing.assert_array_equal(flame.J_regressor.numpy(), b["J_regressor_dense_rows"])
        np.testing.assert_array_equal(flame.lbs_weights.numpy(), b["lbs_weights"])
        np.testing.assert_array_equal(flame.v_template.numpy(), b["v_template"])


@pytest.mark.parametrize("case", CASES)
def test_golden_forward_float32(flame, golden_dir, case):
    g = _golden(golden_dir, case)
    t, eye = _inputs(g)
    verts, lmk2d, lmk3d = flame.decode(t["in_shape"], t["in_exp"], t["in_pose"], eye)
    tol = dict(atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(verts.numpy(), g["verts"], **tol)
    np.testing.assert_allclose(lmk2d.numpy(), g["landmarks2d"], **tol)
    np.testing.assert_allclose(lmk3d.numpy(), g["landmarks3d"], **tol)
    np.testing.assert_allclose(verts.numpy(), g["verts_f64"], atol=F32_VS_F64_ATOL)
    # the contour look-up itself (integer outputs are exact)
    pose = flame.full_pose(flame.complete({"global_pose": t["in_pose"][:, :3], "jaw_pose": t["in_pose"][:, 3:]}))
    idx, bary = flame.dynamic_contour(pose)
    np.testing.assert_array_equal(idx.numpy(), g["dyn_lmk_faces_idx"])
    np.testing.assert_allclose(bary.numpy(), g["dyn_lmk_bary_coords"], **tol)
    # projection: DECA's batch_orth_proj and SPECTRE.decode's flips, from spectre.geometry
    cam = t["in_cam"]
    np.testing.assert_allclose(orthographic_project(verts, cam).numpy(), g["orth_verts_raw"], **tol)
    np.testing.assert_allclose(orthographic_project(lmk2d, cam).numpy(), g["orth_landmarks2d_raw"], **tol)
    np.testing.assert_allclose(project_to_crop(lmk2d, cam)[..., :2].numpy(), g["proj_landmarks2d"], **tol)
    np.testing.assert_allclose(project_to_crop(lmk3d, cam).numpy(), g["proj_landmarks3d"], **tol)
    np.testing.assert_allclose(project_to_crop(verts, cam).numpy(), g["trans_verts"], **tol)


@pytest.mark.parametrize("case", CASES)
def test_golden_forward_float64(flame64, golden_dir, case):
    g = _golden(golden_dir, case)
    t, eye = _inputs(g, torch.float64)
    verts, lmk2d, lmk3d = flame64.decode(t["in_shape"], t["in_exp"], t["in_pose"], eye)
    assert verts.dtype == torch.float64
    np.testing.assert_allclose(verts.numpy(), g["verts_f64"], atol=F64_ATOL, rtol=0)
    np.testing.assert_allclose(lmk2d.numpy(), g["landmarks2d_f64"], atol=F64_ATOL, rtol=0)
    np.testing.assert_allclose(lmk3d.numpy(), g["landmarks3d_f64"], atol=F64_ATOL, rtol=0)


def test_golden_under_bf16_autocast(flame, golden_dir):
    g = _golden(golden_dir, "yaw")
    t, _ = _inputs(g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        verts, lmk2d, _ = flame.decode(t["in_shape"], t["in_exp"], t["in_pose"])
    assert verts.dtype == torch.float32
    np.testing.assert_allclose(lmk2d.numpy(), g["landmarks2d"], atol=ATOL, rtol=RTOL)


def test_face_model_interface(flame, golden_dir):
    g = _golden(golden_dir, "random")
    t, _ = _inputs(g)
    params = {"shape": t["in_shape"], "expression": t["in_exp"], "global_pose": t["in_pose"][:, :3],
              "jaw_pose": t["in_pose"][:, 3:]}
    geo = flame(params)
    np.testing.assert_allclose(geo.vertices.numpy(), g["verts"], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(geo.landmarks.numpy(), g["landmarks2d"], atol=ATOL, rtol=RTOL)
    assert flame.rotation_param == "global_pose" and flame.units_per_metre == 1
    assert [(s.name, s.size, s.role) for s in flame.param_specs] == [
        ("shape", 100, "identity"), ("expression", 50, "expression"), ("jaw_pose", 3, "expression"),
        ("eye_pose", 6, "expression"), ("global_pose", 3, "pose"), ("neck_pose", 3, "pose")]
    assert flame.uv_coords.shape == (5118, 2) and flame.uv_faces.shape == (9976, 3)
    # gradients reach every parameter block that moves the landmarks
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    flame(p).landmarks.sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in p.values())


def test_fewer_components_and_loader(flame_assets):
    m = load_face_model("flame", AssetStore(flame_assets), n_shape=20, n_exp=10)
    assert m.spec["shape"].size == 20 and m.shapedirs.shape[-1] == 30
    with pytest.raises(AssetError, match="requested"):
        FLAME.from_store(AssetStore(flame_assets), n_exp=200)


def test_missing_flame_is_a_clear_error(tmp_path):
    with pytest.raises(AssetError, match="flame.is.tue.mpg.de"):
        FLAME.from_store(AssetStore(tmp_path))


class _Payload:
    """Unpickling this runs ``open(sentinel, 'w')``: proof of code execution if the file appears."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_malicious_flame_pkl_is_refused(tmp_path, flame_assets):
    sentinel = tmp_path / "pwned"
    root = tmp_path / "assets"
    (root / "flame").mkdir(parents=True)
    (root / "spectre_data").mkdir()
    (root / "spectre_data" / "landmark_embedding.npy").write_bytes(
        (flame_assets / "spectre_data" / "landmark_embedding.npy").read_bytes())
    with open(root / "flame" / "generic_model.pkl", "wb") as f:
        pickle.dump({"v_template": _Payload(sentinel)}, f, protocol=2)
    with pytest.raises(UnsafeFileError, match="generic_model.pkl"):
        FLAME.from_store(AssetStore(root))
    assert not sentinel.exists()


def _write_object_npy(path, obj):
    arr = np.empty((), dtype=object)
    arr[()] = obj
    np.save(path, arr, allow_pickle=True)


def test_landmark_embedding_loader(flame_assets, tmp_path):
    emb = load_landmark_embedding(flame_assets / "spectre_data" / "landmark_embedding.npy")
    assert emb["dynamic_lmk_faces_idx"].shape == (79, 17)
    assert emb["dynamic_lmk_bary_coords"].shape == (79, 17, 3)
    assert emb["static_lmk_faces_idx"].shape == (51,)
    # a malicious embedding: the payload must not run
    sentinel = tmp_path / "pwned"
    bad = tmp_path / "landmark_embedding.npy"
    _write_object_npy(bad, {"static_lmk_faces_idx": _Payload(sentinel)})
    with pytest.raises(UnsafeFileError, match="landmark_embedding.npy"):
        load_landmark_embedding(bad)
    assert not sentinel.exists()
    # a tensor whose storage bytes smuggle a payload is refused by the weights-only storage loader
    import io

    class _EvilStorageBytes:
        def __reduce__(self):
            buf = io.BytesIO()
            pickle.dump(_Payload(sentinel), buf)
            return (__import__("torch").storage._load_from_bytes, (buf.getvalue(),))

    _write_object_npy(bad, {"dynamic_lmk_faces_idx": _EvilStorageBytes()})
    with pytest.raises(UnsafeFileError, match="landmark_embedding.npy"):
        load_landmark_embedding(bad)
    assert not sentinel.exists()
    # not an embedding at all
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(AssetError, match="plain.npy"):
        load_landmark_embedding(tmp_path / "plain.npy")
    _write_object_npy(tmp_path / "other.npy", {"a": np.zeros(2)})
    with pytest.raises(AssetError, match="missing"):
        load_landmark_embedding(tmp_path / "other.npy")
