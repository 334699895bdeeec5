"""ICT face model: bundled compact model, full npz, landmarks with a dynamic contour, convert-ict."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spectre.errors import AssetError
from spectre.models import load_face_model
from spectre.models.ict import HEAD_PIVOT_CM, ICTFaceModel, _bundled_compact, load_ict_arrays


@pytest.fixture(scope="module")
def ict() -> ICTFaceModel:
    return load_face_model("ict")  # nothing but the installed package


@pytest.fixture(scope="module")
def full_npz(shared_assets):
    path = shared_assets / "ict_facekit" / "ict_face_model.npz"
    if not path.is_file():
        pytest.skip(f"shared ICT npz not found at {path}")
    return path


@pytest.fixture(scope="module")
def ict_full(full_npz) -> ICTFaceModel:
    return ICTFaceModel.from_file(full_npz)


def _expr(model, name, value=1.0, batch=1):
    p = model.default_params(batch)
    p["expression"][:, model.source_expression_names.index(name)] = value
    return p


def test_interface_and_names(ict):
    assert [s.name for s in ict.param_specs] == ["identity", "expression", "rotation"]
    assert ict.spec["identity"].size == 100 and ict.spec["expression"].size == 53
    assert ict.spec["identity"].role == "identity" and ict.spec["rotation"].role == "pose"
    assert ict.units_per_metre == 100
    assert len(ict.expression_names) == 53
    for arkit in ("jawOpen", "mouthSmileLeft", "eyeBlinkRight", "mouthFunnel", "browInnerUp"):
        assert arkit in ict.expression_names
    geo = ict(ict.default_params(2))
    assert geo.vertices.shape == (2, ict.v_template.shape[0], 3)
    assert geo.landmarks.shape == (2, 68, 3)
    assert ict.faces.max() < ict.v_template.shape[0]
    assert ict.uv_coords is not None and ict.uv_faces.shape == ict.faces.shape


def test_compact_has_render_parts(ict):
    for part in ("Face", "Mouth socket", "Gums and tongue", "Teeth", "Eyeball left", "Eyeball right"):
        assert len(ict.part_vertex_idx(part)) > 100
        assert len(ict.part_faces(part)) > 100
    assert "Head and Neck" not in ict.part_names
    assert ict.render_faces().shape[0] == ict.faces.shape[0]  # no hidden shells in the compact model


def test_neutral_equals_npz_neutral(ict, ict_full, full_npz):
    with np.load(full_npz) as d:
        neutral = d["neutral_vertices"]
    pivot = np.float32(HEAD_PIVOT_CM)
    v_full = ict_full.vertices(ict_full.default_params(1))[0].numpy() + pivot
    np.testing.assert_allclose(v_full, neutral, atol=1e-5)
    v_compact = ict.vertices(ict.default_params(1))[0].numpy() + pivot
    np.testing.assert_allclose(v_compact, neutral[ict.source_vertex_idx.numpy()], atol=1e-5)


def test_full_model_hides_eye_shells(ict_full):
    from spectre.models.ict import HIDDEN_PARTS

    shown = ict_full.render_faces()
    hidden = ict_full.part_faces(*HIDDEN_PARTS)
    assert len(ict_full.part_faces("Eye occlusion left")) == 256  # 128 quads
    assert len(shown) + len(hidden) == len(ict_full.faces)
    hidden_vertices = set(hidden.flatten().tolist())
    assert not hidden_vertices & set(shown.flatten().tolist())
    assert len(ict_full.part_faces("Head and Neck")) > 0 and len(ict_full.part_faces("Teeth")) > 0


def test_compact_vs_full_error(ict, ict_full):
    g = torch.Generator().manual_seed(0)
    p = ict.default_params(16)
    p["identity"] = torch.randn(16, 100, generator=g).clamp(-3, 3)
    p["expression"] = torch.rand(16, 53, generator=g)
    p["rotation"] = 0.3 * torch.rand(16, 3, generator=g) - 0.15
    v_c = ict.vertices(p)
    v_f = ict_full.vertices(p)[:, ict.source_vertex_idx]
    err = (v_c - v_f).norm(dim=-1)
    assert err.max().item() < 0.1  # cm (measured: ~0.05 cm max on all-on expressions)
    assert err.mean().item() < 0.02
    # the landmarks match too, the soft contour included (measured 0.07 cm max)
    lm_err = (ict.landmarks(v_c) - ict_full.landmarks(ict_full.vertices(p))).norm(dim=-1)
    assert lm_err.max().item() < 0.2


def test_jaw_open_lowers_chin(ict):
    neutral = ict.landmarks_only(ict.default_params(1))[0]
    opened = ict.landmarks_only(_expr(ict, "jawOpen"))[0]
    assert opened[8, 1] < neutral[8, 1] - 1.5  # chin moves down by centimetres
    assert opened[57, 1] < neutral[57, 1] - 0.5  # lower lip follows
    assert abs(opened[51, 1] - neutral[51, 1]) < 0.5  # upper lip nearly stays


def test_identity_changes_shape(ict):
    p = ict.default_params(2)
    p["identity"][1, 0] = 2.0  # two standard deviations of the first identity mode
    v = ict.vertices(p)
    d = (v[1] - v[0]).norm(dim=-1)
    assert d.max() > 0.3 and d.mean() > 0.05


def test_landmark_left_right_order(ict):
    lm = ict.landmarks_only(ict.default_params(1))[0]
    # iBUG-68: subject's right (x < 0, image left for a frontal face) first
    assert lm[0, 0] < 0 < lm[16, 0]
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]  # eye corners
    assert lm[48, 0] < lm[54, 0]  # mouth corners
    assert lm[30, 2] == lm[:, 2].max()  # nose tip is frontmost
    assert lm[19, 1] > lm[37, 1] > lm[30, 1] > lm[51, 1] > lm[57, 1] > lm[8, 1]  # brow > eye > nose > lips > chin
    np.testing.assert_allclose(lm[:17, 0].numpy(), -lm[:17, 0].flip(0).numpy(), atol=0.05)  # symmetric contour


def test_dynamic_contour_follows_yaw(ict):
    p = ict.default_params(3)
    p["rotation"][:, 1] = torch.tensor([0.0, 0.6, -0.6])
    v = ict.vertices(p)
    lm = ict.landmarks(v)
    static = v[:, ict.static_landmark_idx[:17]]
    moved = (lm[:, :17] - static).norm(dim=-1)
    assert (moved[1] > 0.8).sum() >= 4 and (moved[2] > 0.8).sum() >= 4
    # the choice mirrors between the two yaws
    np.testing.assert_array_equal((moved[1] > 0.8).numpy(), (moved[2] > 0.8).flip(0).numpy())
    # every contour point sits on the silhouette: as far out as its outermost candidate, up to the
    # softness of the pick (a softmax cannot go beyond the outermost candidate)
    cand_x = v[:, ict.contour_candidates, 0]  # (B,17,C)
    side = torch.sign(v[0, ict.static_landmark_idx[:17], 0])
    outer = (cand_x * side[None, :, None]).amax(dim=2)
    got = lm[:, :17, 0] * side
    assert (got <= outer + 1e-5).all() and (got >= outer - 3 * ict.contour_softness_cm).all()


def test_contour_hard_pick_and_smoothness():
    hard = ICTFaceModel.from_store(contour_softness_cm=0.0)
    soft = ICTFaceModel.from_store()
    p = hard.default_params(121)
    p["rotation"][:, 1] = torch.linspace(-0.9, 0.9, 121)  # a slow head turn, 0.86 deg per frame
    v = hard.vertices(p)
    lm_hard, lm_soft = hard.landmarks(v)[:, :17], soft.landmarks(v)[:, :17]
    # the hard pick lands exactly on a candidate vertex
    d = (lm_hard[:, :, None] - v[:, hard.contour_candidates]).norm(dim=-1).amin(dim=2)
    assert d.max() < 1e-6
    # the hard pick jumps from vertex to vertex (~1 cm); the soft one glides (measured 1.3 mm per frame)
    step_hard = (lm_hard[1:] - lm_hard[:-1]).norm(dim=-1).max()
    step_soft = (lm_soft[1:] - lm_soft[:-1]).norm(dim=-1).max()
    assert step_hard > 0.8 and step_soft < 0.3


def written_out_contour(model, vertices):
    """The contour's definition, one point at a time: a softmax over the outward x of its own candidates."""
    rows = []
    for k in range(17):
        cand = model.contour_candidates[k][model._candidate_valid[k]]
        side = torch.sign(model.v_template[model.static_landmark_idx[k], 0])
        pts = vertices[:, cand]  # (B, n, 3)
        w = torch.softmax(pts[..., 0] * side / model.contour_softness_cm, dim=1)
        rows.append((w[..., None] * pts).sum(1))
    return torch.stack(rows, 1)


def test_contour_is_a_softmax_over_each_points_candidates(ict):
    g = torch.Generator().manual_seed(3)
    p = ict.default_params(3)
    p["expression"] = torch.rand(3, 53, generator=g)
    p["rotation"] = torch.tensor([[0.0, 0.7, 0.0], [0.1, -0.5, 0.1], [0.0, 0.0, 0.0]])
    v = ict.vertices(p).double()
    torch.testing.assert_close(ict.landmarks(v)[:, :17], written_out_contour(ict, v), atol=1e-10, rtol=0)
    torch.testing.assert_close(ict.landmarks(v)[:, 17:], v[:, ict.static_landmark_idx[17:]], atol=0, rtol=0)
    # the gradient as well, on the landmark subset the fit uses (float64, finite differences)
    sub = v[:1, ict.landmark_vertex_idx].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: ict.landmarks(x), (sub,), eps=1e-6, atol=1e-5)


def test_landmarks_subset_path_and_gradient(ict):
    g = torch.Generator().manual_seed(1)
    p = ict.default_params(4)
    p["identity"] = torch.randn(4, 100, generator=g)
    p["expression"] = torch.rand(4, 53, generator=g)
    p["rotation"] = 0.4 * torch.randn(4, 3, generator=g)
    full = ict.landmarks(ict.vertices(p))
    fast = ict.landmarks_only(p)
    torch.testing.assert_close(fast, full, atol=1e-4, rtol=1e-4)
    sub = ict.vertices(p, vertex_idx=ict.mouth_vertex_idx)
    torch.testing.assert_close(sub, ict.vertices(p)[:, ict.mouth_vertex_idx], atol=1e-4, rtol=1e-4)
    expr = p["expression"].clone().requires_grad_(True)
    rot = p["rotation"].clone().requires_grad_(True)
    ict.landmarks_only({**p, "expression": expr, "rotation": rot}).sum().backward()
    assert expr.grad.abs().sum() > 0 and rot.grad.abs().sum() > 0


def test_rotation_pivots_near_head_centre(ict):
    p = ict.default_params(2)
    p["rotation"][1, 1] = 0.5
    v = ict.vertices(p)
    centre_shift = (v[1].mean(0) - v[0].mean(0)).norm()
    assert centre_shift < 3.0  # cm; a pivot at the neck or the nose would swing the face much further


def test_mouth_region(ict):
    lm = ict.landmarks_only(ict.default_params(1))[0]
    idx = ict.mouth_vertex_idx
    skin = idx[idx < ict.part_vertex_range["Face"][1]]
    assert len(skin) > 100
    # skin vertices of the mouth region lie around the lips, not on the cheeks or nose
    d = (ict.v_template[skin][:, None] - lm[None, 48:68]).norm(dim=-1).amin(dim=1)
    assert d.max() <= 1.5 + 1e-4
    assert (ict.v_template[skin] - lm[48:68].mean(0)).norm(dim=-1).max() < 5
    assert set(ict.part_vertex_idx("Teeth").tolist()) <= set(ict.mouth_vertex_idx.tolist())


def test_full_model_from_store(tmp_path, shared_assets, full_npz):
    full = ICTFaceModel.from_store(shared_assets, full=True)
    assert full.v_template.shape[0] == 26719
    # nothing installed: the bundled compact copy is used
    fallback = ICTFaceModel.from_store(tmp_path, full=True)
    assert fallback.v_template.shape[0] < 26719
    assert fallback.source.endswith("ict_compact.npz")


def test_bad_npz_is_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(AssetError, match="bad.npz"):
        ICTFaceModel.from_file(bad)
    np.savez(tmp_path / "partial.npz", neutral_vertices=np.zeros((3, 3), np.float32))
    with pytest.raises(AssetError, match="missing"):
        ICTFaceModel.from_file(tmp_path / "partial.npz")


def test_compact_deltas_are_each_blocks_codes_times_its_scale(tmp_path):
    src = _bundled_compact()
    with np.load(src) as f:
        d = {k: f[k] for k in f.files}
    arrays = load_ict_arrays(src)
    blocks = d["quant_block_range"]
    for key in ("identity", "expression"):
        want = np.concatenate([d[f"{key}_codes"][:, a:b].astype(np.float32) * d[f"{key}_scale"][:, i, None, None]
                               for i, (a, b) in enumerate(blocks)], axis=1)
        np.testing.assert_array_equal(arrays[key], want)
    model = ICTFaceModel(arrays)  # all identity modes: the basis is the loaded buffer, not a copy
    assert np.shares_memory(model.basis.numpy(), arrays["deltas"])
    fewer = ICTFaceModel(arrays, n_identity=10)
    np.testing.assert_array_equal(fewer.basis.view(10 + len(want), -1, 3).numpy(),
                                  np.concatenate([arrays["identity"][:10], arrays["expression"]]))
    d["quant_block_range"] = blocks[1:]  # the first vertices in no block: their deltas would be garbage
    np.savez(tmp_path / "gap.npz", **d)
    with pytest.raises(AssetError, match="quant_block_range"):
        ICTFaceModel.from_file(tmp_path / "gap.npz")


# ---- spectre assets convert-ict --------------------------------------------------------------------
N_IDENTITY_OBJS = 3


def _write_vertices_obj(path, verts, template_lines=None):
    """An OBJ of the neutral topology with moved vertices (v lines only, or a full copy of the neutral)."""
    if template_lines is None:
        np.savetxt(path, verts, fmt="v %.6f %.6f %.6f")
        return
    vlines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    it = iter(vlines)
    path.write_text("\n".join(next(it) if line.startswith("v ") else line for line in template_lines) + "\n")


@pytest.fixture(scope="module")
def facekit_folder(shared_assets, full_npz, tmp_path_factory):
    """raw/ of the shared ICT folder plus identity/expression OBJs written from the npz rows."""
    import shutil

    raw = shared_assets / "ict_facekit" / "raw"
    if not (raw / "generic_neutral_mesh.obj").is_file():
        pytest.skip(f"ICT-FaceKit raw files not found at {raw}")
    folder = tmp_path_factory.mktemp("FaceXModel")
    for p in raw.iterdir():
        (shutil.copytree if p.is_dir() else shutil.copy)(p, folder / p.name)
    template = (raw / "generic_neutral_mesh.obj").read_text().splitlines()
    with np.load(full_npz) as d:
        neutral = d["neutral_vertices"].astype(np.float64)
        for i in range(N_IDENTITY_OBJS):
            _write_vertices_obj(folder / f"identity{i:03d}.obj", neutral + d["identity_deltas"][i],
                                template if i == 0 else None)
        for name, delta in zip(d["expression_names"], d["expression_deltas"]):
            _write_vertices_obj(folder / f"{name}.obj", neutral + delta)
    return folder


@pytest.fixture(scope="module")
def installed_assets(facekit_folder, tmp_path_factory):
    """An assets folder where `spectre assets convert-ict` installed the converted model (one conversion
    shared by the tests below)."""
    from spectre.cli import main

    assets = tmp_path_factory.mktemp("assets")
    assert main(["assets", "--assets", str(assets), "convert-ict", str(facekit_folder)]) == 0
    return assets


@pytest.fixture(scope="module")
def converted(installed_assets):
    out = installed_assets / "ict_facekit" / "ict_face_model.npz"
    with np.load(out) as d:
        return out, {k: d[k] for k in d.files}


@pytest.mark.slow
def test_convert_ict_matches_shared_npz(converted, full_npz):
    _, got = converted
    with np.load(full_npz) as ref:
        for key in ("neutral_vertices", "faces", "face_sizes", "triangles", "triangle_to_face", "uv_coords",
                    "uv_faces", "uv_triangles", "material_names", "material_face_range", "part_names",
                    "part_vertex_range", "part_face_range", "face_area_names", "face_area_vertex_range",
                    "eyeball_part_vertex_range", "tooth_names", "tooth_vertex_range", "tooth_face_range",
                    "landmarks68_vertex_idx", "jawline_left_vertex_idx", "jawline_right_extended_vertex_idx",
                    "fitting_vertex_idx", "rigid_vertex_idx", "laplacian_rigid_vertex_idx", "rigid_landmark_idx",
                    "expression_names", "expression_arkit_names", "sample_identity_coefficients"):
            np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
        assert got["identity_deltas"].shape == (N_IDENTITY_OBJS, 26719, 3)
        assert got["expression_deltas"].shape == (53, 26719, 3) and got["expression_deltas"].dtype == np.float16
        for key, rows in (("identity_deltas", slice(0, N_IDENTITY_OBJS)), ("expression_deltas", slice(None))):
            a = got[key].astype(np.float32)
            b = ref[key][rows].astype(np.float32)
            # OBJ printing (1e-6) + one float16 rounding step at the largest deltas (|d| < 4 cm)
            np.testing.assert_allclose(a, b, atol=2e-3, err_msg=key)
            assert np.abs(a - b).mean() < 1e-5
        assert float(got["expression_deltas_float16_max_error_cm"]) < 2e-3
        assert "MIT" in str(got["license"])


@pytest.mark.slow
def test_converted_model_loads(converted):
    path, _ = converted
    m = ICTFaceModel.from_file(path, n_identity=N_IDENTITY_OBJS)
    assert m.v_template.shape == (26719, 3) and m.spec["identity"].size == N_IDENTITY_OBJS
    with pytest.raises(AssetError, match="identity modes"):
        ICTFaceModel.from_file(path, n_identity=100)


def test_convert_ict_cli(installed_assets, facekit_folder, capsys):
    from spectre.cli import main

    target = installed_assets / "ict_facekit" / "ict_face_model.npz"
    assert target.is_file()
    m = ICTFaceModel.from_store(installed_assets, full=True, n_identity=N_IDENTITY_OBJS)
    assert m.v_template.shape[0] == 26719 and m.source == str(target)
    # no overwrite without --overwrite: exit code 5, a one-line error, the file untouched
    before = target.stat().st_mtime_ns
    assert main(["assets", "--assets", str(installed_assets), "convert-ict", str(facekit_folder)]) == 5
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert target.stat().st_mtime_ns == before


def test_convert_ict_bad_input(tmp_path, capsys, facekit_folder):
    from spectre.cli import main

    assert main(["assets", "convert-ict", str(tmp_path / "nope"), "-o", str(tmp_path / "x.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["assets", "convert-ict", str(tmp_path / "empty"), "-o", str(tmp_path / "x.npz")]) == 2
    assert "generic_neutral_mesh.obj" in capsys.readouterr().err
    # a folder whose first expression OBJ has the wrong vertex count: the file is named
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("generic_neutral_mesh.obj", "vertex_indices.json", "identity000.obj"):
        (bad / name).symlink_to(facekit_folder / name)
    (bad / "browDown_L.obj").write_text("v 0 0 0\n")
    assert main(["assets", "convert-ict", str(bad), "-o", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "browDown_L.obj" in err and "vertices" in err
    (bad / "browDown_L.obj").unlink()
    assert main(["assets", "convert-ict", str(bad), "-o", str(tmp_path / "x.npz")]) == 2
    assert "missing browDown_L.obj" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_bundled_compact_is_reproducible(full_npz):
    """The shipped npz is exactly what scripts/make_compact_ict.py builds from the full model."""
    import importlib.util
    from pathlib import Path

    from spectre.assets import BUNDLED_ICT, bundled_path

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_compact_ict.py"
    spec = importlib.util.spec_from_file_location("make_compact_ict", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with np.load(full_npz) as f:
        built, _ = mod.build({k: f[k] for k in f.files})
    with np.load(bundled_path(BUNDLED_ICT)) as shipped:
        assert set(shipped.files) == set(built)
        for key, value in built.items():
            np.testing.assert_array_equal(shipped[key], value, err_msg=key)
    assert bundled_path(BUNDLED_ICT).stat().st_size <= 10 * 1024 * 1024
    licence = bundled_path("ICT_LICENSE.txt").read_text()
    assert "MIT License" in licence and "ICT-FaceKit" in licence


def test_geometry_stays_fp32_under_autocast(ict):
    g = torch.Generator().manual_seed(2)
    p = ict.default_params(3)
    p["expression"] = torch.rand(3, 53, generator=g)
    p["rotation"] = 0.3 * torch.randn(3, 3, generator=g)
    ref = ict.landmarks_only(p)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ict.landmarks(ict.vertices(p))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
