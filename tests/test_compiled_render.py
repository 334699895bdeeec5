"""The compiled (numba) video render (``spectre.raster_kernels``, the optional ``fast`` extra) against the
pure-torch fast path it replaces, and the ``SPECTRE_RASTER`` dispatch.

Measured on these cases: the same covered pixels (IoU 1.0) and mean |rgb difference| below 2e-7 (float64
against float32 arithmetic). Asserted with margin: IoU >= 0.9999 and mean |difference| <= 1e-5 per frame.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spectre import raster_kernels as compiled
from spectre.errors import ConfigError
from spectre.geometry import vertex_normals
from spectre.io.writer import rgb_to_i420
from spectre.reconstruct import compose
from spectre.render import fast_shape
from spectre.render.fast_shape import raster_backend, render_shape_fast_in_frame, render_shape_pixels

IOU_MIN, DIFF_MAX = 0.9999, 1e-5


@pytest.fixture(scope="module")
def kernels():
    pytest.importorskip("numba", reason="the compiled rasteriser needs the optional 'fast' extra (numba)")
    return compiled.load()


def _scaled(size: int, n: int, dx: float = 0.0, dy: float = 0.0) -> torch.Tensor:
    k = 224.0 / size
    return torch.tensor([[k, 0.0, -k * dx], [0.0, k, -k * dy]]).repeat(n, 1, 1)


def _with(monkeypatch, backend: str, fn, *args, **kwargs):
    monkeypatch.setenv("SPECTRE_RASTER", backend)
    return fn(*args, **kwargs)


def _compare(a, b):
    (rgb_a, alpha_a), (rgb_b, alpha_b) = a, b
    assert rgb_a.shape == rgb_b.shape and alpha_a.shape == alpha_b.shape
    assert rgb_a.dtype == rgb_b.dtype == alpha_a.dtype == alpha_b.dtype == torch.float32
    ma, mb = alpha_a > 0.5, alpha_b > 0.5
    iou = (ma & mb).sum((1, 2)).double() / (ma | mb).sum((1, 2)).clamp(min=1).double()
    assert float(iou.min()) >= IOU_MIN
    assert float((rgb_a - rgb_b).abs().mean((1, 2, 3)).max()) <= DIFF_MAX
    assert set(alpha_b.unique().tolist()) <= {0.0, 1.0}  # hard coverage


@pytest.mark.parametrize("size", [224, 512])
@pytest.mark.parametrize("shift", [(0.0, 0.0), (110.0, -60.0)], ids=["centred", "partly-off-frame"])
def test_matches_the_torch_fast_path_on_ict(kernels, ict_posed, monkeypatch, size, shift):
    verts, crop, faces = ict_posed
    tf = _scaled(size, verts.shape[0], *(s * size / 224 for s in shift))
    torch_out = _with(monkeypatch, "torch", render_shape_fast_in_frame, verts, crop, faces, tf, (size, size))
    numba_out = _with(monkeypatch, "numba", render_shape_fast_in_frame, verts, crop, faces, tf, (size, size))
    covered = numba_out[1].sum((1, 2))
    assert bool((covered > 500).all()), "every frame shows a good part of the face"
    if shift != (0.0, 0.0):
        assert bool((covered < 0.6 * size * size).all()) and float(numba_out[1][:, :, : size // 4].sum()) == 0.0
    _compare(numba_out, torch_out)
    assert float(numba_out[0].max()) <= 1.0 and float(numba_out[0].min()) >= 0.0


def test_vertex_normals_match_geometry(kernels, ict_posed):
    verts, _, faces = ict_posed
    out = np.empty(verts.shape, np.float32)
    kernels.vertex_normals(verts.numpy(), faces.numpy(), out)
    assert np.allclose(out, vertex_normals(verts, faces).numpy(), atol=1e-5)


def _quads():
    """A far quad and a nearer quad overlapping it, both front-facing (clockwise in y-down pixels)."""
    pts = torch.tensor([[2.0, 2.0, 5.0], [20.0, 2.0, 5.0], [20.0, 20.0, 5.0], [2.0, 20.0, 5.0],
                        [8.3, 8.6, 1.0], [30.2, 8.6, 1.0], [30.2, 29.4, 1.0], [8.3, 29.4, 1.0]])[None]
    faces = torch.tensor([[0, 2, 1], [0, 3, 2], [4, 6, 5], [4, 7, 6]])
    normals = torch.zeros(1, 8, 3)
    normals[0, :4, 2] = 1.0
    normals[0, 4:] = torch.tensor([0.6, 0.0, 0.8])
    return pts, faces, normals


def test_edge_cases_match(kernels, monkeypatch):
    pts, faces, normals = _quads()
    both = lambda *a, **k: [_with(monkeypatch, b, render_shape_pixels, *a, **k) for b in ("numba", "torch")]  # noqa: E731
    got, ref = both(normals, pts, faces, (32, 40))
    _compare(got, ref)
    assert torch.equal(got[1], ref[1])
    assert float(got[1][0, 10, 10]) == 1.0 and float(got[0][0, 10, 10, 0]) != float(got[0][0, 3, 3, 0])
    # back-facing: culled, or drawn when not culled
    assert float(both(normals, pts, faces.flip(1), (32, 40))[0][1].sum()) == 0.0
    got, ref = both(normals, pts, faces.flip(1), (32, 40), cull_backfaces=False)
    assert torch.equal(got[1], ref[1]) and float(got[1].sum()) > 300
    # a NaN or infinite vertex drops only its own triangles
    for bad in (float("nan"), float("inf")):
        broken = pts.clone()
        broken[0, 4, 0] = bad
        got, ref = both(normals, broken, faces, (32, 40))
        assert torch.equal(got[1], ref[1]) and float(got[1][0, 10, 10]) == 1.0
        assert bool(torch.isfinite(got[0]).all())
    # the same quad twice at the same depth: ties go to the lower face index (its normal shows)
    twin = torch.cat([pts[:, :4], pts[:, :4]], 1)
    twin_normals = torch.cat([normals[:, :4], normals[:, 4:]], 1)
    for first in (faces[:2], faces[:2] + 4):
        second = faces[:2] + 4 - first.min()
        got, ref = both(twin_normals, twin, torch.cat([first, second]), (32, 40))
        alone = both(twin_normals, twin, first, (32, 40))[0]
        assert torch.equal(got[1], ref[1]) and torch.equal(got[0], alone[0])
        assert float((got[0] - ref[0]).abs().max()) <= DIFF_MAX
    assert not torch.equal(got[0], both(twin_normals, twin, faces[:2], (32, 40))[0][0])
    # per-image lights (B, L, 6), a batch of two
    lights = torch.tensor([[[0.0, 0.0, 1.0, 1.0, 0.5, 0.2]], [[1.0, 0.0, 1.0, 0.3, 0.3, 0.9]]])
    got, ref = both(normals.repeat(2, 1, 1), pts.repeat(2, 1, 1), faces, (32, 40), lights=lights)
    _compare(got, ref)
    assert not torch.equal(got[0][0], got[0][1])
    # nothing to draw: no faces, no frames, every vertex NaN, off screen
    for args in ((normals, pts, faces[:0]), (normals[:0], pts[:0], faces), (normals, pts * float("nan"), faces),
                 (normals, pts + 1000.0, faces)):
        got, ref = both(*args, (32, 40))
        assert got[0].shape == ref[0].shape and got[1].shape == ref[1].shape and float(got[1].sum()) == 0.0


def test_the_environment_variable_picks_the_rasteriser(monkeypatch):
    monkeypatch.setattr(compiled, "load", lambda: None)  # as without numba
    for value in ("", "auto", "torch", " Torch "):
        monkeypatch.setenv("SPECTRE_RASTER", value)
        assert raster_backend() == "torch"
    monkeypatch.setenv("SPECTRE_RASTER", "numba")
    with pytest.raises(ConfigError, match="numba is not installed"):
        raster_backend()
    monkeypatch.setenv("SPECTRE_RASTER", "fastest")
    with pytest.raises(ConfigError, match="SPECTRE_RASTER"):
        raster_backend()


def test_auto_uses_the_kernels_when_installed(kernels, monkeypatch):
    calls = []
    real = kernels.shade_frames
    monkeypatch.setattr(kernels, "shade_frames", lambda *a: calls.append(1) or real(*a))
    pts, faces, normals = _quads()
    for value, used in (("auto", 1), ("numba", 2), ("torch", 2)):
        monkeypatch.setenv("SPECTRE_RASTER", value)
        assert raster_backend() == ("torch" if value == "torch" else "numba")
        render_shape_pixels(normals, pts, faces, (32, 40))
        assert len(calls) == used


def test_warm_up_loads_the_kernels_only_when_they_draw(monkeypatch):
    def unavailable():
        raise AssertionError("the kernels were imported although SPECTRE_RASTER=torch")

    monkeypatch.setattr(compiled, "load", unavailable)
    monkeypatch.setenv("SPECTRE_RASTER", "torch")
    compiled.warm_up()  # nothing to load
    monkeypatch.undo()
    pytest.importorskip("numba", reason="the compiled rasteriser needs the optional 'fast' extra (numba)")
    compiled.load()
    calls = []
    real = compiled.shade_frames
    monkeypatch.setattr(compiled, "shade_frames", lambda *a: (real(*a), calls.append(a[12].copy())))  # alpha
    monkeypatch.setenv("SPECTRE_RASTER", "auto")
    compiled.warm_up()
    assert len(calls) == 1 and calls[0].sum() > 0  # one small render that drew its triangle


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_the_video_process_posed_render_matches(kernels, ict_posed, monkeypatch, backend):
    """What the video process draws (posed vertices and one affine map per frame, no face model, no torch with
    the kernels) is what the job's own video render draws, by either rasteriser."""
    from spectre.reconstruct.videostage import window_affine

    verts, crop, faces = ict_posed
    x = verts[..., 0].abs() > 1.0
    s = float((crop[..., 0][x] / verts[..., 0][x]).median())  # the fixture's camera: s, 0, 0
    n, size = verts.shape[0], 512
    tf = _scaled(size, n, 30.0, -20.0)  # window px -> crop px
    crop_tform = np.concatenate([tf.numpy(), np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], 1)
    affine = window_affine(np.tile([s, 0.0, 0.0], (n, 1)), crop_tform, np.tile(np.eye(3), (n, 1, 1)))
    ref = _with(monkeypatch, "numba", render_shape_fast_in_frame, verts, crop, faces, tf, (size, size))
    rgb, alpha = _with(monkeypatch, backend, compose.render_posed, verts.numpy(), affine, faces.numpy(),
                       fast_shape.video_light_table(), (size, size))
    assert float(ref[1].sum((1, 2)).min()) > 500
    _compare((torch.from_numpy(rgb), torch.from_numpy(alpha)), ref)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_the_colours_are_drawn_alike_by_both_rasterisers(kernels, ict, ict_posed, monkeypatch, backend):
    """The video's colours (``FaceModel.render_colours``, interpolated per pixel): the torch path draws what
    the kernels draw; a tint of ones is the grey render (to rounding); the tint changes the lips, mouth, eyes and
    brows, not the rest."""
    from spectre.reconstruct.videostage import window_affine

    verts, crop, faces = ict_posed
    x = verts[..., 0].abs() > 1.0
    s = float((crop[..., 0][x] / verts[..., 0][x]).median())
    n, size = verts.shape[0], 384
    tf = _scaled(size, n, 20.0, -10.0)
    crop_tform = np.concatenate([tf.numpy(), np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], 1)
    affine = window_affine(np.tile([s, 0.0, 0.0], (n, 1)), crop_tform, np.tile(np.eye(3), (n, 1, 1)))
    tint = ict.render_colours().numpy()
    light = fast_shape.video_light_table()
    args = (verts.numpy(), affine, faces.numpy(), light, (size, size))
    grey = _with(monkeypatch, backend, compose.render_posed, *args)
    ones = _with(monkeypatch, backend, compose.render_posed, *args, np.ones_like(tint))
    assert np.array_equal(grey[1], ones[1]) and np.abs(grey[0] - ones[0]).max() < 1e-6  # barycentrics sum to 1
    tinted = _with(monkeypatch, backend, compose.render_posed, *args, tint)
    ref = _with(monkeypatch, "numba", compose.render_posed, *args, tint)
    _compare(tuple(map(torch.from_numpy, tinted)), tuple(map(torch.from_numpy, ref)))
    assert np.array_equal(tinted[1], grey[1])  # the same pixels are covered
    changed = np.abs(tinted[0] - grey[0]).max(-1) > 1e-6
    assert changed[0].sum() > 200  # the lips of the neutral face, seen from the front
    assert changed.sum() < 0.15 * grey[1].sum()  # the features only, not the face
    red = changed & (tinted[0][..., 0] > tinted[0][..., 1] + 0.1)
    assert red[0].sum() > 200  # red lips
    with pytest.raises(ValueError, match="does not fit"):
        compose.render_posed(*args, tint[:-1])


@pytest.mark.parametrize("tinted", [False, True], ids=["grey", "tinted"])
@pytest.mark.parametrize("layout", ["grid", "render", "overlay"])
def test_drawing_straight_into_the_video_frames_gives_the_composed_bytes(kernels, ict, ict_posed, monkeypatch, layout,
                                                                        tinted):
    """The video process draws into its uint8 output frames (``compose_posed``); the bytes are those of the
    float render composed and converted, with every frame drawn and with frames that have no face."""
    from spectre.reconstruct.videostage import window_affine

    verts, crop, faces = ict_posed
    x = verts[..., 0].abs() > 1.0
    s = float((crop[..., 0][x] / verts[..., 0][x]).median())
    n, size = verts.shape[0], 256
    tf = _scaled(size, n, 10.0, 5.0)
    crop_tform = np.concatenate([tf.numpy(), np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], 1)
    affine = window_affine(np.tile([s, 0.0, 0.0], (n, 1)), crop_tform, np.tile(np.eye(3), (n, 1, 1)))
    frames = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    light = fast_shape.video_light_table()
    tint = ict.render_colours().numpy() if tinted else None
    monkeypatch.setenv("SPECTRE_RASTER", "numba")
    for rows in (np.arange(n), np.arange(1, n, 2)):
        v, a = verts.numpy()[rows], affine[rows]
        rgb, alpha = compose.render_posed(v, a, faces.numpy(), light, (size, size), tint)
        want = compose.compose(frames, [compose.place_rows(n, rows, (rgb, alpha), (size, size))], layout)
        got = compose.compose_posed(frames, rows, v, a, faces.numpy(), light, layout, tint)
        assert alpha.sum() > 500 * len(rows)
        assert got.dtype == np.uint8 and np.array_equal(got, want)
        if layout == "grid":  # the windows as the tracking process sends them: the converted grid's bytes
            got = compose.compose_posed(rgb_to_i420(frames), rows, v, a, faces.numpy(), light, layout, tint)
            assert np.array_equal(got, rgb_to_i420(want))
        else:
            with pytest.raises(ValueError, match="grid"):
                compose.compose_posed(rgb_to_i420(frames), rows, v, a, faces.numpy(), light, layout, tint)


def test_skipping_hidden_triangles_draws_the_same_buffers(kernels, monkeypatch):
    """``_draw`` skips a triangle whose box is already nearer everywhere (``_hidden``). Compiled, and uncompiled
    with the skip counted, against the uncompiled loop with the skip off: identical depth and face buffers on
    a soup of overlapping layers with slivers (steep in depth across a hair of width, where a widened span
    reaches past the triangle), near-ties in depth and triangles only partly behind others."""
    rng = np.random.default_rng(3)
    H, W, F = 24, 28, 600
    xy = rng.uniform([0, 0], [W, H], (F, 1, 2)) + rng.normal(0.0, 1.0, (F, 3, 2)) * rng.choice([0.3, 1.0, 3.0], (F, 1, 1))
    xy[::7, 2] = xy[::7, 0] + 1e-3 * (xy[::7, 1] - xy[::7, 0])[:, ::-1]  # slivers
    # mostly nearer first (as a face's skin before the mouth inside), with ties and near-ties both ways
    base = np.sort(rng.choice([1.0, 2.0, 3.5], (F, 1)), 0) + rng.choice([0.0, 1e-6, -1e-6], (F, 1))
    z = base + rng.uniform(0.0, 0.5, (F, 3)) * rng.choice([0.0, 1.0], (F, 1))
    z[::7, 2] += 50.0
    points = np.concatenate([xy, z[..., None]], 2).reshape(-1, 3)
    faces = np.arange(3 * F, dtype=np.int64).reshape(F, 3)
    flip = rng.random(F) < 0.5
    faces[flip] = faces[flip][:, ::-1]

    def draw(fn):
        zbuf, fbuf, box = np.full((H, W), np.inf, np.float32), np.full((H, W), -1, np.int32), np.array([H, -1, W, -1])
        fn(points, faces, False, compiled.SPAN_EPS, compiled.FLAT, zbuf, fbuf, box)
        return zbuf, fbuf, box

    got = draw(compiled._draw)
    skipped = []
    hidden = compiled._hidden
    monkeypatch.setattr(compiled, "_hidden", lambda *args: skipped.append(hidden(*args)) or skipped[-1])
    counted = draw(compiled._draw.py_func)
    monkeypatch.setattr(compiled, "_hidden", lambda *args: False)
    ref = draw(compiled._draw.py_func)
    assert (ref[1] >= 0).sum() > 500 and len(np.unique(ref[1])) > 100  # layered: many faces show (594, 163)
    assert sum(skipped) > 50  # and many are skipped (85 of the 392 tested)
    for a, b, c in zip(got, counted, ref):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
