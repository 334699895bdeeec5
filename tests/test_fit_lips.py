"""Dense MediaPipe lip term of the fit: the correspondence table is sound, and on real clips (one LRS3,
one MEAD) the term brings the projected lip vertices closer to the tracked dense lip points than the
68-point fit alone, without making the 68-point mouth worse."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spectre.models.base import FaceModel
from spectre.models.ict_lips import ICT_LIPS_SOURCE_VERTEX
from spectre.reconstruct.evaluator import PointEvaluator
from spectre.reconstruct.fit import FitConfig, fit_track
from spectre.reconstruct.mp_lips import MP_LIPS, MP_LIPS_INNER, MP_LIPS_OUTER


@pytest.fixture(scope="module")
def evaluator(ict):
    return PointEvaluator(ict)


def test_lip_indices_are_mediapipes_lip_contours():
    mp = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")
    lips = {i for edge in mp.FACEMESH_LIPS for i in edge}
    assert set(MP_LIPS) == lips and len(MP_LIPS) == len(lips) == 40
    assert not set(MP_LIPS_OUTER) & set(MP_LIPS_INNER)


def test_table_maps_into_the_compact_model_lips(ict):
    assert ICT_LIPS_SOURCE_VERTEX is not None and len(ICT_LIPS_SOURCE_VERTEX) == 40
    idx = ict.mediapipe_lip_vertices()
    assert idx is not None
    assert torch.equal(ict.source_vertex_idx[idx], torch.as_tensor(ICT_LIPS_SOURCE_VERTEX))
    # every table vertex lies around the model's lips (within the mouth region)
    assert bool(torch.isin(idx, ict.mouth_vertex_idx).all())
    # outer points sit on the upper/lower outer lip: the mouth's vertical extent from outer vertices
    # exceeds that of the inner ones on the neutral face
    v = ict.v_template[idx]
    assert float(v[:20, 1].max() - v[:20, 1].min()) > float(v[20:, 1].max() - v[20:, 1].min())


def test_subset_evaluator_lip_vertices_match_the_full_model(ict, evaluator):
    assert evaluator.kind == "subset" and evaluator.has_lips
    g = torch.Generator().manual_seed(1)
    B = 3
    coef = torch.cat([torch.randn(B, ict.n_identity, generator=g) * 0.5, torch.rand(B, 53, generator=g) * 0.4], -1)
    rot = torch.tensor([[0.1, 0.3, 0.0], [-0.1, -0.4, 0.05], [0.0, 0.0, 0.2]])
    _, lips = evaluator.points(coef, rot)
    params = evaluator._split(coef)
    params["rotation"] = rot
    exact = ict.vertices(params, vertex_idx=ict.mediapipe_lip_vertices())
    assert torch.allclose(lips, exact, atol=1e-3)


def _iod(lm):
    return np.linalg.norm(lm[:, 36:42].mean(1) - lm[:, 42:48].mean(1), axis=-1)


@pytest.fixture(scope="module")
def tracks(sample_videos):
    from spectre.faces.track import track_video

    cache = {}

    def get(name):
        if name not in cache:
            if name not in sample_videos:
                pytest.skip(f"sample {name} not found")
            cache[name] = track_video(sample_videos[name]).largest_per_frame()
        return cache[name]
    return get


@pytest.mark.parametrize("name", ["0Fi83BHQsMA_00002", pytest.param("M026_level_3_disgusted_018", marks=pytest.mark.slow)])
def test_dense_lip_term_brings_the_lips_closer(ict, evaluator, tracks, name):
    tr = tracks(name)
    lm = np.asarray(tr.landmarks68, np.float64)
    p478 = np.asarray(tr.points478, np.float64)
    valid = np.asarray(tr.valid, bool)
    fits = {w: fit_track(ict, np.nan_to_num(lm), valid, FitConfig(dense_lips=w), evaluator=evaluator,
                         points478=p478) for w in (0.0, FitConfig().dense_lips)}
    v = valid & np.isfinite(lm).all((1, 2)) & np.isfinite(p478[:, list(MP_LIPS)]).all((1, 2))
    d = _iod(lm[v])
    dense = {w: float((np.linalg.norm(f.lips2d[v] - p478[v][:, list(MP_LIPS), :2], axis=-1).mean(-1) / d).mean())
             for w, f in fits.items()}
    nme = {w: float((np.linalg.norm(f.landmarks2d[v, 48:68] - lm[v, 48:68], axis=-1).mean(-1) / d).mean())
           for w, f in fits.items()}
    print(name, "dense lip distance / IOD", dense, "mouth NME", nme)
    off, on = dense[0.0], dense[FitConfig().dense_lips]
    assert on < 0.85 * off, dense
    assert nme[FitConfig().dense_lips] <= nme[0.0] * 1.02, nme


def test_without_points_or_table_the_term_is_off(ict, evaluator):
    """No points478 -> no lip target (fit still works); a model without a table gets no lip vertices."""
    class NoTable(FaceModel):  # a model that declares no capability
        def vertices(self, params):
            raise NotImplementedError

        def landmarks(self, vertices, params):
            raise NotImplementedError
    assert NoTable().mediapipe_lip_vertices() is None
    source = ict.source_vertex_idx
    try:  # a mesh lacking one of the table's vertices has no table either
        ict.source_vertex_idx = source.clone()
        ict.source_vertex_idx[ict.mediapipe_lip_vertices()[0]] = -1
        assert ict.mediapipe_lip_vertices() is None
    finally:
        ict.source_vertex_idx = source
    g = np.random.default_rng(0)
    with torch.no_grad():
        lm3 = evaluator.landmarks(evaluator.defaults[None].repeat(5, 1), torch.zeros(5, 3))
    lm = (lm3[..., :2].numpy() * np.array([1.0, -1.0]) * 10 + 200 + g.normal(0, 0.2, (5, 68, 2)))
    fit = fit_track(ict, lm, None, FitConfig(iterations=5, identity_iterations=5), evaluator=evaluator)
    assert fit.landmarks2d.shape == (5, 68, 2) and np.isfinite(fit.landmarks2d).all()
    with pytest.raises(ValueError, match="points478"):
        fit_track(ict, lm, None, FitConfig(iterations=5), evaluator=evaluator, points478=np.zeros((4, 478, 2)))
