"""The visible inner-lip edge (``FaceModel.inner_lip_strips`` / ``inner_lip_edge``) and the fit's lip-edge term:
strips derived from the mesh for ICT and the synthetic FLAME, the soft extreme picks the silhouette across
the mouth opening on posed meshes, and the term is zero when matched and moves the expression otherwise."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from spectre.geometry import axis_angle_to_matrix, project_to_crop
from spectre.models.lip_edge import LipStrips, select_lip_edge
from spectre.reconstruct.evaluator import PointEvaluator
from spectre.reconstruct.fit import FitConfig
from spectre.reconstruct.objective import make_objective

LOWER, UPPER, CORNERS = range(1, 10), range(11, 20), (0, 10)


def _edges(face_model) -> set[tuple[int, int]]:
    f = face_model.faces.tolist()
    return {tuple(sorted((t[a], t[b]))) for t in f for a, b in ((0, 1), (1, 2), (2, 0))}


def test_strips_are_mesh_paths_across_each_lip(face_model):
    """Derived from the mesh: each strip holds its inner-lip vertex, is a connected edge path on the mesh,
    runs from the outer side (above the upper / below the lower edge) into the mouth (behind the edge), and
    stays within a few mm of the edge; corners keep their one vertex."""
    strips = face_model.inner_lip_strips()
    seeds = face_model.mediapipe_lip_vertices()
    assert strips.vertex_idx.shape[0] == 20 and strips.valid.shape == strips.vertex_idx.shape
    toward = strips.toward.tolist()
    assert toward == [0.0] + [1.0] * 9 + [0.0] + [-1.0] * 9  # lower lip: edge = highest, upper: lowest
    edges = _edges(face_model)
    V = face_model.v_template
    mm = face_model.units_per_metre / 1000.0
    for i in range(20):
        s = strips.vertex_idx[i][strips.valid[i]].tolist()
        assert seeds[20 + i].item() in s
        if i in CORNERS:
            assert len(s) == 1
            continue
        assert len(s) >= 3, f"strip {i} has only {len(s)} candidates"
        assert all(tuple(sorted(p)) in edges for p in zip(s[:-1], s[1:])), f"strip {i} is not a mesh path"
        seed = V[seeds[20 + i]]
        assert float((V[s] - seed).norm(dim=-1).max()) < 10 * mm
        up = float(strips.toward[i])  # +1 lower lip: the outer side is below the edge
        assert float((V[s[0]] - seed)[1]) * up < 0, f"strip {i} does not start on the outer lip"
        assert float((V[s[-1]] - seed)[2]) < 0, f"strip {i} does not reach into the mouth"
        if i in (4, 5, 6, 14, 15, 16):  # mid-lip: across the whole red lip and ~mm deep into the mouth
            assert float((V[s[0]] - seed)[1]) * up < -1 * mm and float((V[s[-1]] - seed)[2]) < -2 * mm


def test_soft_choice_is_differentiable():
    g = torch.Generator().manual_seed(0)
    strips = LipStrips(torch.zeros(3, 4, dtype=torch.long), torch.tensor([[1, 1, 1, 0]] * 2 + [[1, 0, 0, 0]]).bool(),
                       torch.tensor([1.0, -1.0, 0.0]))
    cand = torch.randn(2, 3, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    R = axis_angle_to_matrix(torch.tensor([[0.1, 0.2, 0.3], [-0.2, 0.0, 0.1]], dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda c: select_lip_edge(c, R, strips, 0.5), (cand,))
    assert torch.autograd.gradcheck(lambda c: select_lip_edge(c, R, strips, 0.5, rotated=False), (cand,))
    # unrotated candidates give the same edge as rotated ones (only the chosen points are rotated)
    rotated = cand.detach() @ R.transpose(1, 2)[:, None]
    torch.testing.assert_close(select_lip_edge(cand.detach(), R, strips, 0.5, rotated=False),
                               select_lip_edge(rotated, R, strips, 0.5))


@pytest.mark.parametrize("pitch", [-0.35, 0.0, 0.35])
def test_soft_choice_picks_the_silhouette_on_a_posed_mesh(face_model, pitch):
    """On a mesh with the mouth open and the head pitched: each upper-lip edge point lies (within the
    softness) at the lowest projected point of its strip along the face's up direction in the image, each
    lower-lip point at the highest; the pitch moves the chosen point across the lip (it is no fixed vertex)."""
    p = face_model.complete({})
    if face_model.blendshape_names:  # ICT: open the mouth with its jawOpen blendshape
        p["expression"] = p["expression"].clone()
        p["expression"][:, list(face_model.blendshape_names).index("jawOpen")] = 0.4
    elif "jaw_pose" in p:  # FLAME: rotate the jaw open
        p["jaw_pose"] = torch.tensor([[0.15, 0.0, 0.0]])
    rot = torch.tensor([[pitch, 0.15, 0.05]])
    p[face_model.rotation_param] = rot
    verts = face_model.vertices(p)
    R = axis_angle_to_matrix(rot)
    edge = face_model.visible_inner_lips(verts, R)[0]
    strips = face_model.inner_lip_strips()
    cand = verts[0][strips.vertex_idx]                                  # (20, C, 3)
    up = R[0, :2, 1] / R[0, :2, 1].norm()
    score = (cand[..., :2] @ up) * strips.toward[:, None]
    score = score.masked_fill(~strips.valid, -math.inf)
    best = score.max(1).values
    got = (edge[:, :2] @ up) * strips.toward
    soft = 0.0003 * face_model.units_per_metre
    rows = [*LOWER, *UPPER]
    assert bool((got[rows] <= best[rows] + 1e-5).all())
    assert bool((got[rows] >= best[rows] - 3 * soft).all())
    seeds = face_model.mediapipe_lip_vertices()[20:]
    fixed = (verts[0][seeds][:, :2] @ up) * strips.toward
    assert bool((got[rows] >= fixed[rows] - 3 * soft).all()), "the fixed vertex is a candidate"


def test_pitch_moves_the_edge_across_the_lip(ict):
    """Looking from below (chin up) and from above, the visible upper-lip edge is on different candidates."""
    strips = ict.inner_lip_strips()
    picks = []
    for pitch in (-0.5, 0.5):
        rot = torch.tensor([[pitch, 0.0, 0.0]])
        verts = ict.vertices({"rotation": rot})
        R = axis_angle_to_matrix(rot)
        up = R[0, :2, 1] / R[0, :2, 1].norm()
        score = (verts[0][strips.vertex_idx][..., :2] @ up) * strips.toward[:, None]
        picks.append(score.masked_fill(~strips.valid, -math.inf).argmax(1))
    assert int((picks[0][list(UPPER)] != picks[1][list(UPPER)]).sum()) >= 4
    assert int((picks[0][list(LOWER)] != picks[1][list(LOWER)]).sum()) >= 4


def test_evaluator_edge_candidates_match_the_mesh_and_cost_nothing_when_off(ict):
    ev = PointEvaluator(ict)
    assert not ev.has_edge and ev.Q == 0
    n = ev.S + ev.L
    assert ev.enable_edge() and ev.enable_edge() and ev.Q > 0 and ev.sub_mean.numel() == 3 * (n + ev.Q)
    g = torch.Generator().manual_seed(1)
    coef = torch.cat([torch.randn(2, ict.n_identity, generator=g) * 0.5, torch.rand(2, 53, generator=g) * 0.4], -1)
    rot = torch.tensor([[0.2, -0.3, 0.0], [-0.1, 0.2, 0.1]])
    edge = ev.edge_points(coef, rot)[3]  # from unrotated candidates in the small basis
    verts = ict.vertices({"identity": coef[:, :ict.n_identity], "expression": coef[:, ict.n_identity:],
                          "rotation": rot})
    torch.testing.assert_close(edge, ict.visible_inner_lips(verts, axis_angle_to_matrix(rot)), atol=1e-3, rtol=0)


def _edge_only(face_model):
    off = {k: 0.0 for k in ("landmark", "relative_mouth", "lips", "identity_prior",
                            "expression_prior", "lip_opening_prior", "lip_contact", "lip_cross", "expression_l1",
                            "implausible_l1")}
    return FitConfig(lip_edge=1.0, dense_lips=1.0, **off)


def test_objective_term_zero_when_matched_and_reaches_the_expression(face_model):
    cfg = _edge_only(face_model)
    ev = PointEvaluator(face_model)
    K = sum(ev.sizes)
    id_mask = torch.zeros(K, dtype=torch.bool)
    o = 0
    for n, s in zip(ev.coef_names, ev.sizes):
        id_mask[o:o + s] = face_model.spec[n].role == "identity"
        o += s
    obj = make_objective(face_model, ev, cfg, id_mask)
    assert obj.edge and ev.has_edge
    T = 3
    coef = ev.defaults.repeat(T, 1).clone()
    coef[:, ~id_mask] += 0.05 * torch.rand(T, int((~id_mask).sum()), generator=torch.Generator().manual_seed(2))
    rot = torch.tensor([[0.2, 0.1, 0.0], [0.0, 0.0, 0.0], [-0.2, -0.2, 0.05]])
    cam = torch.tensor([[math.log(8.0 / face_model.units_per_metre * 100), 0.0, 0.0]]).repeat(T, 1)
    with torch.no_grad():
        _, lips, _, edge = ev.edge_points(coef, rot)
        cam_lin = torch.cat([cam[:, :1].exp(), cam[:, 1:]], -1)
        lip_target = project_to_crop(lips, cam_lin)[..., :2]  # outer points on their fixed vertices
        lip_target[:, 20:] = project_to_crop(edge, cam_lin)[..., :2]  # inner points on the visible edge
    data = {"target": torch.zeros(T, 68, 2), "valid": torch.ones(T, dtype=torch.bool), "lip_target": lip_target,
            "lip_valid": torch.ones(T, dtype=torch.bool)}
    c = coef.clone().requires_grad_(True)
    loss = obj(c, rot, cam, obj.constants(data), c[:, id_mask], c[:, ~id_mask], smooth=False)
    assert float(loss.detach()) < 1e-9
    half = make_objective(face_model, ev, dataclasses.replace(cfg, lip_edge=0.5), id_mask)  # half on the fixed vertices
    assert float(half(coef, rot, cam, half.constants(data), coef[:, id_mask], coef[:, ~id_mask], smooth=False)) > 1e-6
    assert not make_objective(face_model, PointEvaluator(face_model), dataclasses.replace(cfg, lip_edge=0.0), id_mask).edge
    data["lip_target"] = lip_target + torch.tensor([0.0, 0.02]) * (torch.arange(40) >= 20)[:, None]
    loss = obj(c, rot, cam, obj.constants(data), c[:, id_mask], c[:, ~id_mask], smooth=False)
    loss.backward()
    assert float(loss.detach()) > 1e-4
    assert float(c.grad[:, ~id_mask].abs().sum()) > 0
