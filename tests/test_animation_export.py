"""Animated head exports: the node transform reproduces the fit's projection, ARKit morphs are named once
each and reproduce the model, and Blender 3.4's own glTF importer reads what we write (names, frame
count, head motion)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spectre.faces.crop import FACE_CROP_SIZE
from spectre.geometry import axis_angle_to_matrix, crop_to_pixels, project_to_crop
from spectre.io.gltf import accessor_array, read_glb
from spectre.io.results import ARKIT_NAMES, FaceResult, load_face_npz
from spectre.models import load_face_model
from spectre.reconstruct.animation import arkit_morph_basis, head_pose, write_head_glb

CLIENTS = Path(__file__).parent / "clients"
sys.path.insert(0, str(CLIENTS))
from livelink_reader import read_livelink  # noqa: E402


@pytest.fixture(scope="module")
def ict():
    return load_face_model("ict").eval()


def _quat_to_matrix(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _synthetic_face(ict, T=6, seed=0, crop_angle=0.0):
    rng = np.random.default_rng(seed)
    E = ict.spec["expression"].size
    params = {"identity": np.repeat(rng.normal(0, 1, (1, ict.spec["identity"].size)), T, 0).astype(np.float32),
              "expression": rng.uniform(0, 1, (T, E)).astype(np.float32),
              "rotation": rng.normal(0, 0.3, (T, 3)).astype(np.float32)}
    cam = np.stack([rng.uniform(0.05, 0.1, T), rng.normal(0, 1, T), rng.normal(3, 1, T)], 1).astype(np.float32)
    c, s = np.cos(crop_angle), np.sin(crop_angle)
    tf = np.array([[0.5 * c, -0.5 * s, -40.0], [0.5 * s, 0.5 * c, -60.0], [0, 0, 1]])
    tforms = np.repeat(tf[None], T, 0) + rng.normal(0, 1, (T, 3, 3)) * np.array([[0, 0, 1], [0, 0, 1], [0, 0, 0]])
    return FaceResult(track_id=0, model="ict", backend="fit", params=params, cam=cam, crop_tform=tforms,
                      landmarks2d=np.zeros((T, 68, 2)), landmarks3d=np.zeros((T, 68, 3)), valid=np.ones(T, bool),
                      frame_index=np.arange(T), timestamps=np.arange(T) / 30.0 + 0.5,
                      expression_names=tuple(ict.expression_names))


@pytest.mark.parametrize("crop_angle", [0.0, 0.3])
def test_head_transform_reproduces_the_fit_projection(ict, crop_angle):
    """Vertices placed by the node (rotation, translation, metres) and projected by the pinhole camera at
    the head's depth land on the same frame pixels as the fit's camera + crop transform."""
    W, H = 640, 480
    face = _synthetic_face(ict, crop_angle=crop_angle)
    rot, trans = head_pose(ict, face, W, H)
    f = float(max(W, H))
    p = {k: torch.as_tensor(v) for k, v in face.params.items()}
    with torch.no_grad():
        posed = ict.vertices(ict.complete(p))
        rest = ict.vertices(ict.complete({**p, "rotation": torch.zeros_like(p["rotation"])}))
        crop = crop_to_pixels(project_to_crop(posed, torch.as_tensor(face.cam))[..., :2], FACE_CROP_SIZE).double().numpy()
    inv = np.linalg.inv(face.crop_tform)
    ref = np.einsum("tij,tvj->tvi", inv[:, :2, :2], crop) + inv[:, None, :2, 2]
    for t in range(face.num_frames):
        world = rest[t].double().numpy() / ict.units_per_metre @ _quat_to_matrix(rot[t]).T + trans[t]
        depth = -trans[t, 2]  # weak perspective at the pivot's depth, as the fit's camera
        px = np.stack([W / 2 + f * world[:, 0] / depth, H / 2 - f * world[:, 1] / depth], 1)
        np.testing.assert_allclose(px, ref[t], atol=1e-2)
    assert np.all(trans[:, 2] < 0)  # in front of the camera


def test_arkit_morphs_named_once_and_reproduce_the_model(ict):
    rng = np.random.default_rng(1)
    ident = rng.normal(0, 1, ict.spec["identity"].size).astype(np.float32)
    neutral, deltas, names, mix = arkit_morph_basis(ict, ident)
    assert names[:52] == list(ARKIT_NAMES) and len(set(names)) == len(names)
    assert np.abs(deltas[names.index("tongueOut")]).max() == 0  # ICT has no tongue shape
    assert len(set(ict.expression_names)) < len(ict.expression_names)  # the model does repeat names
    # expression weights with equal left/right halves are reproduced exactly by the ARKit targets
    w = rng.uniform(0, 1, len(names)).astype(np.float32)
    expr = np.array([w[names.index(n)] for n in ict.expression_names], np.float32)
    with torch.no_grad():
        ref = ict.vertices(ict.complete({"identity": torch.as_tensor(ident)[None],
                                          "expression": torch.as_tensor(expr)[None]}))[0].double().numpy()
    np.testing.assert_allclose(neutral + np.tensordot(expr @ mix, deltas, 1), ref, atol=2e-3)  # cm (float32 sums)


def test_glb_scene_round_trip(tmp_path, ict):
    face = _synthetic_face(ict, T=5)
    face2 = _synthetic_face(ict, T=5, seed=3)
    face2.track_id = 7
    path = write_head_glb(tmp_path / "x.glb", ict, [face, face2], width=320, height=240, fps=30.0)
    gltf, blob = read_glb(path)
    heads = [n for n in gltf["nodes"] if "mesh" in n]
    assert [n["name"] for n in heads] == ["head_0", "head_7"]
    assert any("camera" in n for n in gltf["nodes"])
    mesh = gltf["meshes"][0]
    assert mesh["extras"]["targetNames"][:52] == list(ARKIT_NAMES)
    prim = mesh["primitives"][0]
    normals = accessor_array(gltf, blob, prim["attributes"]["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    assert "material" in prim
    colours = accessor_array(gltf, blob, prim["attributes"]["COLOR_0"])  # the video render's colours
    assert colours.shape == normals.shape and 0.0 <= colours.min() and colours.max() <= 1.0
    assert (colours[:, 0] - colours[:, 1] > 0.3).sum() > 50  # red lips
    assert (colours == 1.0).all(1).mean() > 0.4  # the skin takes the material as it is (teeth, eyes: not)
    jaw = accessor_array(gltf, blob, prim["targets"][list(ARKIT_NAMES).index("jawOpen")]["POSITION"])
    assert np.abs(jaw).max() > 1e-3  # metres: the jaw moves by millimetres at least
    anim = gltf["animations"][0]
    paths = sorted((c["target"]["node"], c["target"]["path"]) for c in anim["channels"])
    assert paths == [(0, "rotation"), (0, "translation"), (0, "weights"),
                     (1, "rotation"), (1, "translation"), (1, "weights")]
    times = accessor_array(gltf, blob, anim["samplers"][0]["input"])[:, 0]
    np.testing.assert_allclose(times, face.timestamps - face.timestamps[0], atol=1e-6)
    assert gltf["asset"]["extras"]["spectre"]["time_offset"] == pytest.approx(0.5)


def _blender_report(glb: Path, tmp_path: Path) -> dict:
    blender = shutil.which("blender")
    if blender is None:
        pytest.skip("Blender is not installed (apt-get install blender python3-numpy)")
    out = tmp_path / "blender.json"
    # Blender embeds the system Python: keep this interpreter (a virtualenv, pyenv) out of its way
    here = os.path.dirname(sys.executable)
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and d != here and "pyenv" not in d]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYENV", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(path)
    proc = subprocess.run([blender, "-b", "--factory-startup", "--python", str(CLIENTS / "blender_import.py"),
                           "--", str(glb), str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert out.exists(), f"Blender wrote no report (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text())


@pytest.mark.slow
def test_blender_imports_a_real_reconstruction(tmp_path, sample_videos):
    """A moving LRS3 clip reconstructed with ``meshes="glb"`` and ``arkit_format="both"``: Blender imports the
    .glb with the 52 names once each, the video's frame count and a moving head; the Live Link CSV reads
    back (independent reader) with the same curves as our CSV."""
    import spectre
    from spectre.io.results import load_arkit_csv

    video = sample_videos["0Fi83BHQsMA_00002"]
    res = spectre.reconstruct(video, tmp_path / "out", layout="none", meshes="glb", arkit_format="both")
    glb = next(p for p in res.outputs if p.suffix == ".glb")
    livelink = next(p for p in res.outputs if p.name.endswith("_livelink.csv"))
    header, times, cols = read_livelink(livelink)
    _, _, ours = load_arkit_csv(next(p for p in res.outputs if p.name.endswith("_arkit.csv")))
    np.testing.assert_allclose(times, res.face.timestamps, atol=1e-4)
    np.testing.assert_allclose(np.stack([cols[n[0].upper() + n[1:]] for n in ARKIT_NAMES], 1), ours, atol=2e-6)
    assert np.ptp(cols["HeadYaw"]) > 0.05  # the head turns on this clip (fractions of 90 degrees)
    assert list(res.arkit_names) == list(ARKIT_NAMES) and res.arkit.shape == (res.num_frames, 52)
    saved = load_face_npz(next(p for p in res.outputs if p.suffix == ".npz"))
    np.testing.assert_allclose(saved["arkit"], res.arkit, atol=1e-6)
    names = list(saved["expression_names"])
    assert len(names) == len(set(names)) == saved["params"]["expression"].shape[1]  # distinct, params intact
    report = _blender_report(glb, tmp_path)
    heads = [o for o in report["objects"] if o["type"] == "MESH" and o.get("shape_keys")]
    assert len(heads) == 1, report["objects"]
    head = heads[0]
    assert sorted(head["shape_keys"]) == sorted(ARKIT_NAMES)  # 52 names, once each, no '.001'
    if "colour_attributes" in head and report["blender"] >= "3.2":  # the lips' colour reaches Blender
        (colour,) = head["colour_attributes"].values()
        assert colour["red_minus_green_max"] > 0.1 and colour["white_share"] > 0.4, colour
    T = res.num_frames
    assert report["scene_fps"] == pytest.approx(res.fps, rel=1e-3)
    for key in ("shape_key_animation", "transform_animation"):
        anim = head[key]
        assert anim["counts"] == [T], (key, anim)
        ts = res.face.timestamps
        assert anim["last"] - anim["first"] == pytest.approx((ts[-1] - ts[0]) * res.fps, abs=0.01)
    loc = np.array([s["location"] for s in head["world_samples"]])
    euler = np.array([s["euler"] for s in head["world_samples"]])
    assert np.ptp(euler, axis=0).max() > 0.1, euler  # the head turns (radians) on this clip
    assert np.ptp(loc, axis=0).max() > 1e-3, loc  # and moves (metres)
    assert np.all(np.abs(loc) < 5.0)  # metres, in front of the camera, not model units


@pytest.mark.slow
def test_flame_is_a_vertex_animation_with_the_pose_on_the_node(tmp_path, flame_assets):
    """A model without ARKit blendshapes (FLAME): one morph target per frame reproduces the pose-free mesh
    at every keyframe, and the node carries the fitted rotation."""
    from spectre.assets import AssetStore

    flame = load_face_model("flame", AssetStore(flame_assets)).eval()
    assert flame.arkit_names is None
    T = 4
    rng = np.random.default_rng(2)
    params = {k: np.zeros((T, s.size), np.float32) for k, s in flame.spec.items()}
    params["expression"][:] = rng.normal(0, 1, params["expression"].shape)
    params["jaw_pose"][:, 0] = np.linspace(0, 0.3, T)
    params[flame.rotation_param][:] = rng.normal(0, 0.3, (T, 3))
    face = FaceResult(track_id=3, model="flame", backend="fit", params=params,
                      cam=np.tile([[8.0, 0.0, 0.0]], (T, 1)).astype(np.float32), crop_tform=np.tile(np.eye(3), (T, 1, 1)),
                      landmarks2d=np.zeros((T, 68, 2)), landmarks3d=np.zeros((T, 68, 3)), valid=np.ones(T, bool),
                      frame_index=np.arange(T), timestamps=np.arange(T) / 30.0)
    gltf, blob = read_glb(write_head_glb(tmp_path / "f.glb", flame, [face], width=224, height=224, fps=30.0))
    prim = gltf["meshes"][0]["primitives"][0]
    base = accessor_array(gltf, blob, prim["attributes"]["POSITION"])
    targets = np.stack([accessor_array(gltf, blob, t["POSITION"]) for t in prim["targets"]])
    assert len(targets) == T - 1
    anim = gltf["animations"][0]
    by_path = {c["target"]["path"]: anim["samplers"][c["sampler"]]["output"] for c in anim["channels"]}
    w = accessor_array(gltf, blob, by_path["weights"]).reshape(T, -1)
    rot = accessor_array(gltf, blob, by_path["rotation"])
    p = {k: torch.as_tensor(v) for k, v in params.items()}
    p[flame.rotation_param] = torch.zeros(T, 3)
    with torch.no_grad():
        rest = flame.vertices(flame.complete(p)).double().numpy() / flame.units_per_metre
    used = np.unique(flame.render_faces().numpy())
    for t in range(T):
        np.testing.assert_allclose(base + np.tensordot(w[t], targets, 1), rest[t, used], atol=1e-5)
        R = _quat_to_matrix(rot[t].astype(np.float64))
        with torch.no_grad():
            ref = axis_angle_to_matrix(torch.as_tensor(params[flame.rotation_param][t:t + 1]).double())[0].numpy()
        np.testing.assert_allclose(R, ref, atol=1e-5)
