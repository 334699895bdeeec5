"""The videos' non-differentiable grey render (``spectre.render.fast_shape``) against the differentiable
renderer on real ICT geometry, plus exact coverage, depth order and edge cases. ``render_shape_fast_in_frame``
and ``render_shape_pixels`` draw with the numba kernels when numba is installed (``SPECTRE_RASTER=auto``);
the main comparison runs both paths, tests/test_compiled_render.py compares the two directly.

Tolerances (stated in docs/render.md): against the differentiable render with culled back faces (what
the videos drew before), silhouette IoU >= 0.99 and mean |difference| <= 0.005 per frame; against the
official render (no culling, per-pixel facing test), IoU >= 0.98 and mean |difference| <= 0.02.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spectre.render.fast_shape import render_shape_fast_in_frame, render_shape_pixels, visible_triangles
from spectre.render.visualize import render_shape_in_frame


def _scaled(size: int, n: int, dx: float = 0.0, dy: float = 0.0) -> torch.Tensor:
    """(n, 2, 3) frame px -> crop px for a square frame of ``size`` showing the crop (shifted by dx, dy)."""
    k = 224.0 / size
    return torch.tensor([[k, 0.0, -k * dx], [0.0, k, -k * dy]]).repeat(n, 1, 1)


def _reference(verts, crop, faces, tf, size, cull):
    with torch.no_grad():
        img, a = render_shape_in_frame(verts, crop, faces, tf, size, cull_backfaces=cull)
    return img.clamp(0, 1).permute(0, 2, 3, 1), a[:, 0]


def _iou(a, b):
    a, b = a > 0.5, b > 0.5
    return ((a & b).sum((1, 2)).double() / (a | b).sum((1, 2)).clamp(min=1).double())


@pytest.mark.parametrize("raster", ["auto", "torch"])  # auto: the numba kernels when installed
@pytest.mark.parametrize("size", [224, pytest.param(512, marks=pytest.mark.slow)])
def test_matches_the_differentiable_renderer_on_ict(ict_posed, size, raster, monkeypatch):
    monkeypatch.setenv("SPECTRE_RASTER", raster)
    verts, crop, faces = ict_posed
    tf = _scaled(size, verts.shape[0])
    rgb, alpha = render_shape_fast_in_frame(verts, crop, faces, tf, (size, size))
    assert rgb.shape == (4, size, size, 3) and alpha.shape == (4, size, size)
    assert bool((alpha.sum((1, 2)) > 0.2 * size * size).all()), "the face fills a good part of the frame"
    culled, culled_a = _reference(verts, crop, faces, tf, (size, size), cull=True)
    assert _iou(alpha, culled_a).min() >= 0.99
    assert (rgb - culled).abs().mean((1, 2, 3)).max() <= 0.005
    official, official_a = _reference(verts, crop, faces, tf, (size, size), cull=False)
    assert _iou(alpha, official_a).min() >= 0.98
    assert (rgb - official).abs().mean((1, 2, 3)).max() <= 0.02


def test_face_partly_outside_the_frame(ict_posed):
    verts, crop, faces = ict_posed
    size = 224
    tf = _scaled(size, verts.shape[0], dx=110.0, dy=-60.0)  # the face's centre near the top-right corner
    rgb, alpha = render_shape_fast_in_frame(verts, crop, faces, tf, (size, size))
    ref, ref_a = _reference(verts, crop, faces, tf, (size, size), cull=True)
    assert bool((alpha.sum((1, 2)) > 500).all()) and bool((alpha.sum((1, 2)) < 0.6 * size * size).all())
    assert _iou(alpha, ref_a).min() >= 0.99
    assert (rgb - ref).abs().mean((1, 2, 3)).max() <= 0.005
    # nothing past the right edge wraps around to the start of the next row
    assert float(alpha[:, :, : size // 4].sum()) == 0.0 and float(alpha[:, :, -1].sum()) > 10


@pytest.mark.slow
def test_a_batch_renders_each_frame_as_alone(ict_posed):
    verts, crop, faces = ict_posed
    tf = _scaled(224, verts.shape[0])
    rgb, alpha = render_shape_fast_in_frame(verts, crop, faces, tf, (224, 224))
    for i in (1, 3):
        one, one_a = render_shape_fast_in_frame(verts[i:i + 1], crop[i:i + 1], faces, tf[i:i + 1], (224, 224))
        assert torch.equal(one_a[0], alpha[i]) and torch.equal(one[0], rgb[i])


def test_back_facing_empty_and_off_screen_meshes_draw_nothing(ict_posed):
    verts, crop, faces = ict_posed
    tf = _scaled(224, 1)
    _, alpha = render_shape_fast_in_frame(verts[:1], crop[:1], faces[:0], tf, (224, 224))
    assert alpha.shape == (1, 224, 224) and float(alpha.sum()) == 0.0
    _, alpha = render_shape_fast_in_frame(verts[:1], crop[:1], faces, _scaled(224, 1, dx=1000.0), (224, 224))
    assert float(alpha.sum()) == 0.0
    pts, quad = _quad(3.0, 3.0, 20.0, 20.0, 1.0)
    assert visible_triangles(pts[None], quad.flip(1), (32, 32))[0].numel() == 0  # back-facing: culled
    pix = visible_triangles(pts[None], quad.flip(1), (32, 32), cull_backfaces=False)[0]
    assert pix.numel() == 18 * 18  # drawn when not culled
    # ICT with its winding reversed: what faced away now faces the camera, as in the differentiable render
    flipped = faces.flip(1)
    _, alpha = render_shape_fast_in_frame(verts[:1], crop[:1], flipped, tf, (224, 224))
    _, ref_a = _reference(verts[:1], crop[:1], flipped, tf, (224, 224), cull=True)
    assert float(ref_a.sum()) > 1000 and _iou(alpha, ref_a)[0] >= 0.99


def _quad(x0, y0, x1, y1, z):
    """Two front-facing triangles (clockwise in y-down pixels) covering [x0, x1] x [y0, y1] at depth z."""
    pts = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=torch.float32)
    return pts, torch.tensor([[0, 2, 1], [0, 3, 2]])


@pytest.mark.parametrize("extent", [1.6, 3.4, 6.2, 30.0])  # dense blocks of 2, 4, 8 and one pixel at a time
def test_coverage_is_exactly_the_pixel_centres_inside(extent):
    pts, faces = _quad(10.3, 5.6, 10.3 + extent, 5.6 + extent / 2, 1.0)
    pix, face, bary = visible_triangles(pts[None], faces, (48, 64))
    ys, xs = np.divmod(pix.numpy(), 64)
    want = {(y, x) for y in range(48) for x in range(64)
            if 10.3 <= x <= 10.3 + extent and 5.6 <= y <= 5.6 + extent / 2}
    assert set(zip(ys.tolist(), xs.tolist())) == want and len(pix) == len(want)
    assert torch.allclose(bary.sum(1), torch.ones(len(pix))) and float(bary.min()) >= -1e-5


def test_the_nearer_surface_wins_and_shading_follows_the_normal():
    far, f_far = _quad(2.0, 2.0, 20.0, 20.0, 5.0)
    near, f_near = _quad(8.0, 8.0, 30.0, 30.0, 1.0)
    pts = torch.cat([far, near])[None]
    faces = torch.cat([f_far, f_near + 4])
    pix, face, _ = visible_triangles(pts, faces, (32, 32))
    winner = dict(zip(pix.tolist(), face.tolist()))
    assert winner[3 * 32 + 3] in (0, 1) and winner[10 * 32 + 10] in (2, 3) and winner[25 * 32 + 25] in (2, 3)
    normals = torch.zeros(1, 8, 3)
    normals[0, :4, 2] = 1.0  # far quad faces the camera's lights, near quad faces sideways (+x)
    normals[0, 4:, 0] = 1.0
    rgb, alpha = render_shape_pixels(normals, pts, faces, (32, 32))
    assert float(alpha[0, 3, 3]) == 1.0 and float(alpha[0, 0, 0]) == 0.0
    assert float(rgb[0, 3, 3, 0]) > float(rgb[0, 10, 10, 0]) > 0.0  # frontal light is stronger
    pts_nan = pts.clone()
    pts_nan[0, 4, 0] = float("nan")  # the near quad's corner: only its triangles vanish
    pix, face, _ = visible_triangles(pts_nan, faces, (32, 32))
    assert 10 * 32 + 10 in pix.tolist() and set(face.tolist()) <= {0, 1, 3}


def test_the_video_render_uses_the_fast_path(ict):
    """render_window with and without the fast path draws the same face (the video stage's call site)."""
    from spectre.reconstruct.videostage import FaceRows, render_window

    model = ict
    params = {k: v.numpy() for k, v in model.default_params(2).items()}
    params["expression"][:, :4] = 0.5
    s = 2.0 / 1.3 / 1.2
    face = FaceRows(params, np.array([[s, 0.0, 0.0]] * 2, np.float32), np.tile(np.eye(3), (2, 1, 1)),
                    np.array([True, False]))
    tw = np.tile(np.eye(3), (2, 1, 1))
    rgb, alpha = render_window(model, model.render_faces(), face, tw, (224, 224))
    slow, slow_a = render_window(model, model.render_faces(), face, tw, (224, 224), fast=False)
    assert alpha[0].sum() > 1000 and alpha[1].sum() == 0 and rgb[1].max() == 0
    assert _iou(torch.as_tensor(alpha[:1]), torch.as_tensor(slow_a[:1]))[0] >= 0.99
    assert np.abs(rgb - slow).mean() <= 0.005


@pytest.mark.parametrize("layout", ["grid", "render", "overlay"])
def test_the_video_stage_draws_one_face_as_the_video_process(ict, tmp_path, layout):
    """The in-process video stage (short clips) composes one face with the video process's call
    (``compose_posed``), whose bytes equal composing the render of ``render_window`` (frames without the face
    stay the input)."""
    from spectre.reconstruct.compose import compose
    from spectre.reconstruct.videostage import FaceRows, VideoStage, render_window
    from spectre.reconstruct.window import VideoWindow

    params = {k: v.numpy() for k, v in ict.default_params(3).items()}
    params["expression"][:, :4] = 0.5
    s = 2.0 / 1.3 / 1.2
    face = FaceRows(params, np.array([[s, 0.0, 0.0]] * 3, np.float32), np.tile(np.eye(3), (3, 1, 1)),
                    np.array([True, False, True]))
    tw = np.tile(np.eye(3), (3, 1, 1))
    frames = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    stage = VideoStage(ict, layout, VideoWindow(224, 224, "full", 512, layout=layout), tmp_path / "v.mp4", 25.0)
    try:
        got = stage.compose(frames, [face], tw)
    finally:
        stage.abort(RuntimeError("not written"))
    want = compose(frames, [render_window(ict, ict.render_faces(), face, tw, (224, 224))], layout)
    assert got.shape == want.shape and np.array_equal(got, want)
    assert (got[1, :, -224:] == frames[1]).all() if layout != "render" else got[1].max() == 0
    assert not (tmp_path / "v.mp4").exists()
