"""Rasteriser: analytic coverage/depth/silhouette cases, a brute-force per-pixel reference, gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectre.render.rasterize import interpolate, perspective_project, rasterize

SQUARE_FACES = torch.tensor([[0, 1, 2], [0, 2, 3]])


def square(x0, y0, x1, y1, z=1.0, dtype=torch.float64):
    return torch.tensor([[[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]], dtype=dtype)


def pixel_centres(H, W, dtype=torch.float64):
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype), indexing="ij")
    return (xs + 0.5) / W * 2 - 1, (ys + 0.5) / H * 2 - 1


def brute_force_faces(v, f, H, W):
    """Reference: test every pixel centre against every triangle, keep the nearest."""
    px = (v[0, :, 0] + 1) * W / 2
    py = (v[0, :, 1] + 1) * H / 2
    z = v[0, :, 2]
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    best = torch.full((H, W), math.inf, dtype=torch.float64)
    idx = torch.full((H, W), -1)
    for i, (a, b, c) in enumerate(f.tolist()):
        x0, y0, x1, y1, x2, y2 = (float(t) for t in (px[a], py[a], px[b], py[b], px[c], py[c]))
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area == 0:
            continue
        w0 = ((x2 - x1) * (ys - y1) - (y2 - y1) * (xs - x1)) / area
        w1 = ((x0 - x2) * (ys - y2) - (y0 - y2) * (xs - x2)) / area
        w2 = 1 - w0 - w1
        zz = w0 * z[a] + w1 * z[b] + w2 * z[c]
        upd = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (zz < best)
        best[upd] = zz[upd].double()
        idx[upd] = i
    return idx


def uv_sphere(radius=0.6, n_lat=48, n_lon=96, centre=(0.0, 0.0, 5.0), dtype=torch.float64):
    th = torch.linspace(0, math.pi, n_lat + 1, dtype=dtype)
    ph = torch.linspace(0, 2 * math.pi, n_lon + 1, dtype=dtype)[:-1]
    T, P = torch.meshgrid(th, ph, indexing="ij")
    pts = torch.stack([torch.sin(T) * torch.cos(P), torch.cos(T), torch.sin(T) * torch.sin(P)], -1).reshape(-1, 3)
    faces = []
    for i in range(n_lat):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [[a, c, b], [b, c, d]]
    return (pts * radius + torch.tensor(centre, dtype=dtype))[None], torch.tensor(faces)


def test_square_coverage_matches_pixel_centres():
    H, W = 32, 40
    x0, y0, x1, y1 = -0.43, -0.61, 0.37, 0.52
    fr = rasterize(square(x0, y0, x1, y1), SQUARE_FACES, (H, W))
    cx, cy = pixel_centres(H, W)
    expected = (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
    assert torch.equal(fr.mask[0], expected)
    # every covered pixel belongs to exactly one of the two triangles, barycentrics sum to 1
    assert set(fr.face_index[0][expected].unique().tolist()) == {0, 1}
    torch.testing.assert_close(fr.bary[0][expected].sum(-1), torch.ones(int(expected.sum()), dtype=torch.float64))


def test_plane_depth_is_exact():
    H, W = 24, 24
    plane = lambda x, y: 3.0 + 0.4 * x - 0.25 * y  # noqa: E731
    corners = [(-1.2, -1.2), (1.2, -1.2), (1.2, 1.2), (-1.2, 1.2)]
    v = torch.tensor([[[x, y, plane(x, y)] for x, y in corners]], dtype=torch.float64)
    fr = rasterize(v, SQUARE_FACES, (H, W))
    assert bool(fr.mask.all())
    cx, cy = pixel_centres(H, W)
    torch.testing.assert_close(fr.depth[0], plane(cx, cy), atol=1e-9, rtol=0)


def test_nearest_surface_wins():
    far = square(-0.8, -0.8, 0.8, 0.8, z=5.0)
    near = square(-0.3, -0.3, 0.3, 0.3, z=2.0)
    v = torch.cat([far, near], 1)
    f = torch.cat([SQUARE_FACES, SQUARE_FACES + 4])
    fr = rasterize(v, f, 16)
    cx, cy = pixel_centres(16, 16)
    inner = (cx.abs() <= 0.3) & (cy.abs() <= 0.3)
    assert bool((fr.face_index[0][inner] >= 2).all())
    assert bool((fr.face_index[0][fr.mask[0] & ~inner] < 2).all())
    torch.testing.assert_close(fr.depth[0][inner], torch.full((int(inner.sum()),), 2.0, dtype=torch.float64))


def test_sphere_silhouette_and_depth():
    H = W = 96
    r = 0.6
    v, f = uv_sphere(r)
    fr = rasterize(v, f, (H, W))
    cx, cy = pixel_centres(H, W)
    d = torch.sqrt(cx ** 2 + cy ** 2)
    px = 2.0 / W
    # tessellation shrinks the outline by at most r*(1-cos(pi/n_lon)) << 1 pixel
    assert bool(fr.mask[0][d < r - px].all())
    assert not bool(fr.mask[0][d > r + px].any())
    area_ratio = fr.mask[0].sum().item() / (math.pi * (r / px) ** 2)
    assert abs(area_ratio - 1) < 0.02
    inner = d < r * 0.9
    front = 5.0 - torch.sqrt(r ** 2 - d[inner] ** 2)
    assert (fr.depth[0][inner] - front).abs().max().item() < 5e-3


def test_matches_brute_force_on_random_triangles():
    g = torch.Generator().manual_seed(3)
    v = torch.rand(1, 40, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2
    f = torch.randint(0, 40, (60, 3), generator=g)
    fr = rasterize(v, f, (20, 28))
    assert torch.equal(fr.face_index[0], brute_force_faces(v, f, 20, 28))


def test_batch_equals_single_images():
    v1 = square(-0.5, -0.5, 0.5, 0.5)
    v2 = square(-0.9, -0.2, 0.1, 0.7, z=2.0)
    fb = rasterize(torch.cat([v1, v2]), SQUARE_FACES, 16)
    for i, v in enumerate((v1, v2)):
        fs = rasterize(v, SQUARE_FACES, 16)
        assert torch.equal(fb.face_index[i], fs.face_index[0])
        torch.testing.assert_close(fb.bary[i], fs.bary[0])


def test_interpolate_per_vertex_and_per_corner_attributes():
    v = square(-1, -1, 1, 1)
    colours = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]], dtype=torch.float64)
    fr = rasterize(v, SQUARE_FACES, 8)
    a = interpolate(fr, colours, SQUARE_FACES)
    b = interpolate(fr, colours[:, SQUARE_FACES])  # same data laid out per face corner
    torch.testing.assert_close(a, b)
    # x coordinate as attribute reproduces the pixel centres
    xs = interpolate(fr, v[..., :1], SQUARE_FACES)[0, ..., 0]
    torch.testing.assert_close(xs, pixel_centres(8, 8)[0])


def test_perspective_correct_interpolation():
    # a slanted plane in camera space; perspective-correct depth must equal the true ray depth
    pts = torch.tensor([[[-1.0, -1.0, 2.0], [1.0, -1.0, 4.0], [1.0, 1.0, 4.0], [-1.0, 1.0, 2.0]]],
                       dtype=torch.float64)
    scr = perspective_project(pts, focal=1.0)
    fr = rasterize(scr, SQUARE_FACES, 16, perspective_correct=True)
    cx, cy = pixel_centres(16, 16)
    # plane z = 3 + x_cam; ray x_cam = cx*z  =>  z = 3 / (1 - cx)
    m = fr.mask[0]
    torch.testing.assert_close(fr.depth[0][m], (3.0 / (1.0 - cx))[m], atol=1e-9, rtol=0)
    x_attr = interpolate(fr, pts[..., :1], SQUARE_FACES)[0, ..., 0]
    torch.testing.assert_close(x_attr[m], (cx * 3.0 / (1.0 - cx))[m], atol=1e-9, rtol=0)


def test_gradcheck_interpolated_attributes():
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([[[-0.7, -0.6, 1.0], [0.65, -0.5, 1.2], [0.1, 0.7, 0.9], [-0.8, 0.55, 1.1]]],
                        dtype=torch.float64)
    colours = torch.rand(1, 4, 2, generator=g, dtype=torch.float64)

    def render(v, c):
        fr = rasterize(v, SQUARE_FACES, 9, soft_edges=True)
        img = interpolate(fr, c, SQUARE_FACES)
        return torch.cat([img.reshape(-1), fr.alpha.reshape(-1), fr.depth.reshape(-1)])

    v = base.clone().requires_grad_(True)
    c = colours.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(render, (v, c), eps=1e-6, atol=1e-5)


def test_soft_edges_move_a_vertex_towards_the_target():
    tri = torch.tensor([[0, 1, 2]])
    target_v = torch.tensor([[[-0.5, -0.5, 1.0], [0.5, -0.4, 1.0], [0.3, 0.6, 1.0]]])
    target = rasterize(target_v, tri, 32, soft_edges=True).alpha.detach()
    v = target_v.clone()
    v[0, 2, 0] -= 0.25  # the apex starts 4 pixels to the left
    v.requires_grad_(True)
    opt = torch.optim.Adam([v], lr=0.01)
    losses = []
    for _ in range(40):
        loss = ((rasterize(v, tri, 32, soft_edges=True).alpha - target) ** 2).sum()
        if not losses:
            loss.backward()
            assert v.grad[0, 2, 0] < 0  # descending the loss moves the apex right, towards the target
            opt.zero_grad()
            loss = ((rasterize(v, tri, 32, soft_edges=True).alpha - target) ** 2).sum()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.25 * losses[0]
    assert abs(v[0, 2, 0].item() - target_v[0, 2, 0].item()) < 0.08


def test_colour_loss_moves_a_vertex_through_barycentrics():
    """Hard edges (official mode): gradients reach vertices through the interpolated attributes."""
    v0 = square(-1.2, -1.2, 1.2, 1.2)
    ramp = torch.tensor([[[0.0], [1.0], [1.0], [0.0]]], dtype=torch.float64)  # intensity = x position
    target = interpolate(rasterize(v0, SQUARE_FACES, 16), ramp, SQUARE_FACES).detach()
    v = v0.clone()
    v[0, [1, 2], 0] += 0.6  # stretch the ramp to the right: image gets darker
    v.requires_grad_(True)
    img = interpolate(rasterize(v, SQUARE_FACES, 16), ramp, SQUARE_FACES)
    ((img - target) ** 2).sum().backward()
    assert bool((v.grad[0, [1, 2], 0] > 0).all())  # gradient descent pulls the right edge back left


def test_empty_and_offscreen():
    v = square(2.0, 2.0, 3.0, 3.0)
    fr = rasterize(v, SQUARE_FACES, 8)
    assert not bool(fr.mask.any())
    assert interpolate(fr, v, SQUARE_FACES).abs().sum() == 0


def test_real_meshes_render(golden_dir, shared_assets):
    g = np.load(golden_dir / "shading.npz")
    verts = torch.from_numpy(g["trans_verts_plus10"])
    faces = torch.from_numpy(g["faces"][0]).long()
    fr = rasterize(verts, faces, 224)
    cover = fr.mask.float().mean().item()
    assert 0.3 < cover < 0.95
    ict = np.load(shared_assets / "ict_facekit" / "ict_face_model.npz")
    vi = torch.from_numpy(ict["neutral_vertices"])[None] * torch.tensor([0.06, -0.06, -0.06]) + \
        torch.tensor([0.0, 0.18, 10.0])
    fi = torch.from_numpy(ict["triangles"]).long()
    fr = rasterize(vi, fi, 224)
    assert 0.3 < fr.mask.float().mean().item() < 0.95
    assert torch.isfinite(fr.bary).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    v, f = uv_sphere(dtype=torch.float32)
    cpu = rasterize(v, f, 64)
    gpu = rasterize(v.cuda(), f.cuda(), 64)
    assert torch.equal(cpu.face_index, gpu.face_index.cpu())
