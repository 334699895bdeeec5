"""The fit's lip terms for FLAME (synthetic FLAME of ``shared/golden/make_fake_flame.py``, real topology): the
MediaPipe table derived by ``scripts/make_flame_mp_correspondence.py`` is sound on FLAME's template, and the
dense lip and lip-contact terms are active and do their job on tracks made by the same FLAME."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spectre.geometry import project_to_crop
from spectre.reconstruct.evaluator import PointEvaluator
from spectre.reconstruct.fit import FitConfig, fit_track
from spectre.reconstruct.mp_lips import LIP_CONTACT_PAIRS, MP_LIPS, MP_LIPS_INNER, MP_LIPS_OUTER

T = 16
UP = [MP_LIPS[p[0]] for p in LIP_CONTACT_PAIRS]
LO = [MP_LIPS[p[1]] for p in LIP_CONTACT_PAIRS]


@pytest.fixture(scope="module")
def flame(flame_assets):
    from spectre.assets import AssetStore
    from spectre.models import load_face_model
    model = load_face_model("flame", AssetStore(flame_assets)).eval()
    if model.mediapipe_surface() is None:
        pytest.fail("the FLAME MediaPipe table (spectre/data/flame_mp478.npz) is missing")
    return model


@pytest.fixture(scope="module")
def evaluator(flame):
    return PointEvaluator(flame)


def _surface_points(flame, verts):
    idx, bary, _ = flame.mediapipe_surface()
    return (verts[:, idx] * bary[None, :, :, None]).sum(2)


def test_table_is_valid_barycentric_points_on_flame_skin(flame):
    idx, bary, weight = flame.mediapipe_surface()
    assert idx.shape == (478, 3) and bary.shape == (478, 3) and weight.shape == (478,)
    assert int(idx.min()) >= 0 and int(idx.max()) < flame.v_template.shape[0]
    assert bool((bary >= 0).all()) and torch.allclose(bary.sum(1), torch.ones(478), atol=1e-5)
    assert bool((weight > 0).all()) and bool((weight <= 1).all())
    tris = {tuple(sorted(t)) for t in flame.faces.tolist()}
    assert all(tuple(sorted(t)) in tris for t in idx.tolist()), "every point lies on a real FLAME triangle"
    lip_idx, lip_bary = flame.mediapipe_lip_points()
    assert torch.equal(lip_idx, idx[list(MP_LIPS)]) and torch.equal(lip_bary, bary[list(MP_LIPS)])
    verts = flame.mediapipe_lip_vertices()
    assert verts.shape == (40,) and bool((lip_idx == verts[:, None]).any(1).all())


def test_lip_points_in_order_on_the_template(flame):
    """On FLAME's mean shape: outer points enclose the inner ones, the corners are the extremes in x with the
    subject's right (-x) first, the upper lip is above the lower one, and each contact pair faces itself."""
    p = _surface_points(flame, flame.v_template[None])[0]
    lm = flame.landmarks(flame.v_template[None])[0]
    outer, inner = p[list(MP_LIPS_OUTER)], p[list(MP_LIPS_INNER)]
    iod = float(torch.linalg.norm(lm[36] - lm[45]))
    # corners: MediaPipe 61/291 (outer) and 78/308 (inner) at the ends, near iBUG 48/54 and 60/64
    assert float(outer[0, 0]) < float(outer[:, 0].min()) + 1e-6 and float(outer[10, 0]) > float(outer[:, 0].max()) - 1e-6
    assert float(outer[0, 0]) < 0 < float(outer[10, 0])
    for mp, ibug in ((0, 48), (10, 54)):
        assert float(torch.linalg.norm(outer[mp] - lm[ibug])) < 0.03 * iod
    for mp, ibug in ((0, 60), (10, 64)):
        assert float(torch.linalg.norm(inner[mp] - lm[ibug])) < 0.03 * iod
    # point by point, the outer upper lip (11..19) is above the inner upper line, the inner lower line above the
    # outer lower lip (1..9); the lower lines run right to left (x increasing), the upper ones back
    assert bool((outer[11:20, 1] > inner[11:20, 1]).all()) and bool((outer[1:10, 1] < inner[1:10, 1]).all())
    assert bool((torch.diff(outer[0:11, 0]) > 0).all()) and bool((torch.diff(outer[10:20, 0]) < 0).all())
    assert bool((torch.diff(inner[0:11, 0]) > 0).all()) and bool((torch.diff(inner[10:20, 0]) < 0).all())
    # closed mouth: upper inner points sit on (or just above) their lower partners
    gap = p[UP] - p[LO]
    assert bool((gap[:, 1] >= -1e-4).all()) and float(gap[:, 1].max()) < 0.02 * iod
    assert float(gap[:, 0].abs().max()) < 0.03 * iod


def test_flame_evaluator_carries_the_lip_and_surface_points(flame, evaluator):
    assert evaluator.kind == "full" and evaluator.has_lips and evaluator.L == 40
    dense = PointEvaluator(flame, dense=True)
    assert dense.D == 478 and dense.dense_weight is not None
    g = torch.Generator().manual_seed(3)
    coef = torch.cat([torch.randn(2, 100, generator=g) * 0.5, torch.randn(2, 50, generator=g) * 0.5,
                      torch.tensor([[0.2, 0, 0], [0.1, 0.05, 0]]), torch.zeros(2, 9)], -1)
    rot = torch.tensor([[0.1, 0.3, 0.0], [-0.1, -0.4, 0.05]])
    lmk, lips, surf = dense.all_points(coef, rot)
    params = dense._split(coef)
    params["global_pose"] = rot
    verts = flame.vertices(flame.complete(params))
    exact = _surface_points(flame, verts)
    assert torch.allclose(surf, exact, atol=1e-6) and torch.allclose(lips, exact[:, list(MP_LIPS)], atol=1e-6)
    assert torch.allclose(lmk, flame.landmarks(verts, flame.complete(params)), atol=1e-6)


def _track(flame, jaw: np.ndarray, seed: int = 0):
    """(T,68,2) landmarks and (T,478,2) MediaPipe points in pixels of the synthetic FLAME with ``jaw``."""
    g = torch.Generator().manual_seed(seed)
    n = len(jaw)
    t = torch.arange(n, dtype=torch.float32)
    params = flame.complete({
        "shape": torch.randn(1, 100, generator=g).repeat(n, 1) * 0.3,
        "expression": torch.sin(t[:, None] / 3.0 + torch.arange(50)[None]) * 0.3,
        "jaw_pose": torch.stack([torch.as_tensor(jaw, dtype=torch.float32), 0 * t, 0 * t], -1),
        "global_pose": torch.stack([0 * t, 0.2 * torch.sin(t / 4), 0 * t], -1)})
    with torch.no_grad():
        verts = flame.vertices(params)
        cam = torch.tensor([[9.0, 0.0, 0.0]]).repeat(n, 1)
        px = lambda x: project_to_crop(x, cam)[..., :2].numpy() * 200 + 250  # noqa: E731
        return px(flame.landmarks(verts, params)), px(_surface_points(flame, verts)), params


def _gap(flame, evaluator, fit):
    """(T, P) fitted inner-lip gap in the face's vertical relative to the fitted identity's rest mouth (m)."""
    coef = torch.cat([torch.as_tensor(fit.params[n]) for n in evaluator.coef_names], -1)
    rest = coef[:1].clone()
    rest[:, 100:] = 0
    zero = torch.zeros(len(coef), 3)
    with torch.no_grad():
        lips = evaluator.points(coef, zero)[1]
        rest_lips = evaluator.points(rest, zero[:1])[1]
    up, lo = [p[0] for p in LIP_CONTACT_PAIRS], [p[1] for p in LIP_CONTACT_PAIRS]
    return ((lips[:, up] - lips[:, lo])[..., 1] - (rest_lips[:, up] - rest_lips[:, lo])[..., 1]).numpy()


CFG = dict(iterations=80, identity_iterations=80, identity_frames=T, window=T)


@pytest.mark.slow  # two full-forward FLAME fits each (~15 s on 2 shared cores)
def test_dense_lips_follow_the_lips_where_the_68_mouth_is_noisy(flame, evaluator):
    """The 68-point mouth is noisy (an iBUG-68 detector), MediaPipe's 40 lip points are precise: with the dense
    lip term the fitted FLAME lips follow the true lips more closely than from the 68 points alone."""
    jaw = np.clip(0.3 * np.sin(np.arange(T) / 2.0), 0, None)
    lm, pts, _ = _track(flame, jaw)
    true_lips = pts[:, list(MP_LIPS)].copy()
    rng = np.random.default_rng(0)
    lm[:, 48:68] += rng.normal(0, 2.0, lm[:, 48:68].shape)
    pts = pts + rng.normal(0, 0.3, pts.shape)
    iod = np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1).mean()
    err = {}
    for dl in (0.0, 4.0):
        fit = fit_track(flame, lm, config=FitConfig(dense_lips=dl, lip_contact=0.0, lip_cross=0.0, **CFG),
                        evaluator=evaluator, points478=pts)
        assert fit.lips2d is not None  # the fitted lip points are reported for FLAME too
        err[dl] = float(np.linalg.norm(fit.lips2d - true_lips, axis=-1).mean() / iod)
    assert err[4.0] < 0.7 * err[0.0], err


@pytest.fixture(scope="module")
def jaw_flame(flame_assets):
    """The synthetic FLAME with a jaw that opens the lips. Its skinning gives the jaw a smooth share by height,
    about half at the height where the lips meet, so its jaw moves both lips alike (a 0.3 rad jaw opens the
    contact pairs by < 0.8 mm); here the vertices of the triangles holding the table's lower-lip points
    follow the jaw and those of the upper lip do not, as in a real face."""
    from importlib.resources import files

    from spectre.models.flame import FLAME, load_landmark_embedding
    from spectre.safeload import load_restricted_pickle

    model = dict(load_restricted_pickle(flame_assets / "flame" / "generic_model.pkl"))
    with np.load(str(files("spectre") / "data" / "flame_mp478.npz")) as d:
        tri, side = d["triangle_vertex"].astype(np.int64), d["lip_side"]
    w = np.array(model["weights"], dtype=np.float64)
    for s_, jaw in ((1, 0.0), (-1, 1.0)):
        v = np.unique(tri[side == s_])
        rest = w[v, 1] + w[v, 2]  # neck + jaw share
        w[v, 2] = jaw * rest
        w[v, 1] = rest - w[v, 2]
    model["weights"] = w
    emb = load_landmark_embedding(flame_assets / "spectre_data" / "landmark_embedding.npy")
    return FLAME(model, emb).eval()


@pytest.mark.slow  # two full-forward FLAME fits (~15 s on 2 shared cores)
def test_lip_contact_closes_a_small_gap_the_tracker_sees_closed(jaw_flame):
    """The jaw is a little open in the model that made the track (gap ~1 mm), but the tracked inner lips meet:
    the contact term pulls the fitted lips to touching (gap -> rest), without it the gap stays."""
    evaluator = PointEvaluator(jaw_flame)
    lm, pts, _ = _track(jaw_flame, np.full(T, 0.03))
    mid = 0.5 * (pts[:, UP] + pts[:, LO])
    true_gap = np.linalg.norm(pts[:, UP] - pts[:, LO], axis=-1).mean()
    pts[:, UP], pts[:, LO] = mid, mid
    fits = {c: fit_track(jaw_flame, lm, config=FitConfig(lip_contact=c, lip_cross=4.0, **CFG), evaluator=evaluator,
                         points478=pts) for c in (0.0, 20.0)}
    g_off, g_on = (np.abs(_gap(jaw_flame, evaluator, fits[c])).mean() for c in (0.0, 20.0))
    assert true_gap > 1.0, true_gap  # pixels: the model that made the track has its lips apart
    assert g_on < 0.5 * g_off, (g_on, g_off)
    assert _gap(jaw_flame, evaluator, fits[20.0]).min() > -5e-4  # touching, not crossed (m)
