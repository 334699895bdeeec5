"""Terms of the fit that make the render follow the person, on synthetic ICT tracks with known truth:
lip contact closes a gap the tracker sees closed, the L1 prior keeps unrelated blendshapes at 0."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spectre.geometry import project_to_crop
from spectre.losses import lip_contact_loss
from spectre.reconstruct.evaluator import PointEvaluator
from spectre.reconstruct.fit import FitConfig, fit_track
from spectre.reconstruct.mp_lips import LIP_CONTACT_PAIRS, MP_LIPS

T = 24


@pytest.fixture(scope="module")
def evaluator(ict):
    return PointEvaluator(ict)


def _track(ict, evaluator, expression: np.ndarray, seed: int = 0, noise_px: float = 0.0):
    """Project the model with ``expression`` (T, 53) into 400x400 pixels: (T,68,2) landmarks and (T,478,2)
    points (only the 40 lip points are meaningful, the rest NaN, as the fit reads only those)."""
    g = np.random.default_rng(seed)
    n = expression.shape[0]
    coef = torch.cat([torch.zeros(n, ict.n_identity), torch.as_tensor(expression, dtype=torch.float32)], -1)
    rot = torch.as_tensor(np.stack([0.05 * np.sin(np.arange(n) / 5), 0.1 * np.cos(np.arange(n) / 7),
                                    np.zeros(n)], -1), dtype=torch.float32)
    with torch.no_grad():
        lmk, lips = evaluator.points(coef, rot)
        cam = torch.tensor([[0.08, 0.0, 0.0]]).repeat(n, 1)
        to_px = lambda p: project_to_crop(p, cam)[..., :2].numpy() * 150 + 200  # noqa: E731
        lm, lp = to_px(lmk), to_px(lips)
    pts = np.full((n, 478, 2), np.nan)
    pts[:, list(MP_LIPS)] = lp
    if noise_px:
        lm = lm + g.normal(0, noise_px, lm.shape)
        pts = pts + g.normal(0, noise_px, pts.shape)
    return lm, pts


def _gap(ict, evaluator, fit):
    """(T, P) inner-lip gap of the fitted faces relative to the rest mouth (model units, face's vertical)."""
    coef = torch.cat([torch.as_tensor(fit.params["identity"]), torch.as_tensor(fit.params["expression"])], -1)
    zero = torch.zeros(coef.shape[0], 3)
    with torch.no_grad():
        lips = evaluator.points(coef, zero)[1]
        rest = evaluator.points(torch.cat([coef[:1, :ict.n_identity], torch.zeros(1, 53)], -1), zero[:1])[1]
    up, lo = [p[0] for p in LIP_CONTACT_PAIRS], [p[1] for p in LIP_CONTACT_PAIRS]
    return ((lips[:, up] - lips[:, lo])[..., 1] - (rest[:, up] - rest[:, lo])[..., 1]).numpy()


def test_contact_loss_pulls_closed_pairs_and_penalises_crossing():
    gap = torch.tensor([[0.05, 0.05], [-0.02, 0.0]], requires_grad=True)
    closed = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    touch, cross = lip_contact_loss(gap, closed, 0.01)
    (touch + cross).backward()
    assert float(touch.detach()) > 0 and float(cross.detach()) > 0
    assert gap.grad[0, 0] > 0          # the closed pair is pulled down to touching
    assert gap.grad[0, 1] == 0         # an open pair is free
    assert gap.grad[1, 0] < 0          # a crossed pair is pushed apart, closed or not
    assert gap.grad[1, 1] == 0


def test_lip_contact_closes_a_gap_the_tracker_sees_closed(ict, evaluator):
    """The tracked inner lips meet (their pairs coincide) but the 68-point mouth is drawn a little open:
    with the contact term the fitted model lips touch (gap -> rest), without it a gap stays."""
    e = np.zeros((T, 53), np.float32)
    e[:, ict.expression_names.index("jawOpen")] = 0.12
    lm, pts = _track(ict, evaluator, e)
    up = [MP_LIPS[p[0]] for p in LIP_CONTACT_PAIRS]
    lo = [MP_LIPS[p[1]] for p in LIP_CONTACT_PAIRS]
    mid = 0.5 * (pts[:, up] + pts[:, lo])
    pts[:, up], pts[:, lo] = mid, mid   # the tracker sees the lips closed
    cfg = dict(iterations=60, identity_iterations=60, identity_frames=12)
    off = fit_track(ict, lm, config=FitConfig(lip_contact=0.0, lip_cross=0.0, **cfg), evaluator=evaluator,
                    points478=pts)
    on = fit_track(ict, lm, config=FitConfig(lip_contact=20.0, lip_cross=4.0, **cfg), evaluator=evaluator,
                   points478=pts)
    g_off, g_on = np.abs(_gap(ict, evaluator, off)).mean(), np.abs(_gap(ict, evaluator, on)).mean()
    assert g_on < 0.5 * g_off, (g_on, g_off)
    assert _gap(ict, evaluator, on).min() > -0.05  # touching, not crossed (cm)


def test_l1_keeps_unrelated_shapes_at_zero(ict, evaluator):
    """Only the jaw moves; with landmark noise the L2-only fit spreads it over many shapes, the L1 prior
    keeps the rest at ~0 and still follows the jaw."""
    jaw = ict.expression_names.index("jawOpen")
    e = np.zeros((T, 53), np.float32)
    e[:, jaw] = 0.3 * (1 + np.sin(np.arange(T) / 3.0)) / 2
    lm, pts = _track(ict, evaluator, e, noise_px=0.6)
    cfg = dict(iterations=60, identity_iterations=60, identity_frames=12)
    fits = {l1: fit_track(ict, lm, config=FitConfig(expression_l1=l1, implausible_l1=0.0, lip_contact=0.0, **cfg),
                          evaluator=evaluator, points478=pts)
            for l1 in (0.0, 0.01)}
    others = [i for i in range(53) if i != jaw]

    def active(fit):
        return float((fit.params["expression"][:, others] > 0.05).sum(1).mean())

    assert active(fits[0.01]) < 0.5 and active(fits[0.01]) < active(fits[0.0])
    assert np.corrcoef(fits[0.01].params["expression"][:, jaw], e[:, jaw])[0, 1] > 0.9


def test_mediapipe_surface_table_is_valid_barycentric_points_on_the_face(ict):
    surf = ict.mediapipe_surface()
    if surf is None:
        pytest.skip("no MediaPipe-478 table bundled")
    idx, bary, weight = surf
    assert idx.shape == (478, 3) and bary.shape == (478, 3) and weight.shape == (478,)
    assert bool((bary >= 0).all()) and torch.allclose(bary.sum(1), torch.ones(478), atol=1e-5)
    assert bool((weight > 0).all()) and bool((weight <= 1).all())
    # every point lies on a real triangle of the mesh, around a vertex of the face part
    face_end = ict.part_vertex_range["Face"][1]
    assert int(idx.gather(1, bary.argmax(1, keepdim=True)).max()) < face_end
    tris = {tuple(sorted(t)) for t in ict.faces.tolist()}
    assert all(tuple(sorted(t)) in tris for t in idx.tolist())


def test_evaluator_dense_points_match_the_full_model(ict):
    if ict.mediapipe_surface() is None:
        pytest.skip("no MediaPipe-478 table bundled")
    ev = PointEvaluator(ict, dense=True)
    assert ev.kind == "subset" and ev.D == 478
    g = torch.Generator().manual_seed(2)
    coef = torch.cat([torch.randn(2, ict.n_identity, generator=g) * 0.5, torch.rand(2, 53, generator=g) * 0.4], -1)
    rot = torch.tensor([[0.1, 0.3, 0.0], [-0.1, -0.4, 0.05]])
    dense = ev.all_points(coef, rot)[2]
    idx, bary, _ = ict.mediapipe_surface()
    params = ev._split(coef)
    params["rotation"] = rot
    v = ict.vertices(params)
    exact = (v[:, idx] * bary[None, :, :, None]).sum(2)
    assert torch.allclose(dense, exact, atol=1e-3)
    assert PointEvaluator(ict).D == 0
