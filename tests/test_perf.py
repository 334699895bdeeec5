"""Speed work keeps behaviour: fast vertex normals, windowed in-frame renders, render thread control."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from spectre.geometry import project_to_crop, project_to_crop_xy, rotate_points, vertex_normals
from spectre.render import Renderer, rasterize
from spectre.render.visualize import crop_to_frame_vertices, render_shape_in_frame

ROOT = Path(__file__).resolve().parents[1]
rast_module = sys.modules["spectre.render.rasterize"]


def deca_vertex_normals(vertices, faces):
    """DECA's definition, written out: a cross product per face corner, summed per vertex."""
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    normals = torch.zeros_like(vertices)
    normals.index_add_(1, faces[:, 0], torch.cross(v1 - v0, v2 - v0, dim=-1))
    normals.index_add_(1, faces[:, 1], torch.cross(v2 - v1, v0 - v1, dim=-1))
    normals.index_add_(1, faces[:, 2], torch.cross(v0 - v2, v1 - v2, dim=-1))
    return F.normalize(normals, eps=1e-6, dim=2)


def random_mesh(B=3, V=40, F=90, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, 3, generator=g, dtype=dtype), torch.randint(0, V, (F, 3), generator=g)


def test_vertex_normals_match_deca_values_and_gradients():
    v, f = random_mesh()
    torch.testing.assert_close(vertex_normals(v, f), deca_vertex_normals(v, f), atol=1e-12, rtol=0)
    w = torch.randn_like(v)
    a = v.clone().requires_grad_(True)
    b = v.clone().requires_grad_(True)
    (vertex_normals(a, f) * w).sum().backward()
    (deca_vertex_normals(b, f) * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=0)
    small_v, small_f = random_mesh(B=1, V=8, F=10)
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, small_f), (small_v.requires_grad_(True),))


def test_rotate_points_is_points_times_r_transposed():
    g = torch.Generator().manual_seed(2)
    pts, R = torch.randn(4, 50, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(rotate_points(pts, R), pts @ R.transpose(1, 2), atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(rotate_points, (pts[:2, :5].clone().requires_grad_(True), R[:2].clone().requires_grad_(True)))


def test_project_to_crop_xy_is_the_first_two_coordinates():
    g = torch.Generator().manual_seed(4)
    pts, cam = torch.randn(3, 20, 3, generator=g), torch.randn(3, 3, generator=g)
    assert torch.equal(project_to_crop_xy(pts, cam), project_to_crop(pts, cam)[..., :2])


def test_vertex_normals_float32_and_changed_faces():
    v, f = random_mesh(dtype=torch.float32)
    torch.testing.assert_close(vertex_normals(v, f), deca_vertex_normals(v, f), atol=1e-5, rtol=0)
    f2 = f.clone()
    f2[:, [1, 2]] = f2[:, [2, 1]]  # same tensor shape, flipped winding: a cached incidence must not be reused
    torch.testing.assert_close(vertex_normals(v, f2), deca_vertex_normals(v, f2), atol=1e-5, rtol=0)


def test_dense_maps_are_the_packed_fragments():
    v, f = random_mesh(B=2, V=30, F=60, seed=1)
    v = v * 0.6
    v[..., 2] = v[..., 2].abs() + 2.0
    fr = rasterize(v, f, (20, 24))
    B, H, W = fr.shape
    flat = fr.face_index.reshape(-1)
    assert torch.equal(flat[fr.pix], fr.pix_face)
    assert int((flat >= 0).sum()) == fr.pix.numel() == int(fr.mask.sum())
    torch.testing.assert_close(fr.bary.reshape(-1, 3)[fr.pix], fr.pix_bary)
    torch.testing.assert_close(fr.depth.reshape(-1)[fr.pix], fr.pix_depth)


def _sphere(n_lat=24, n_lon=48):
    th = torch.linspace(0.15, 3.0, n_lat)
    ph = torch.linspace(0, 2 * torch.pi, n_lon + 1)[:-1]
    T, P = torch.meshgrid(th, ph, indexing="ij")
    pts = torch.stack([torch.sin(T) * torch.cos(P), -torch.cos(T), -torch.sin(T) * torch.sin(P)], -1).reshape(-1, 3)
    faces = []
    for i in range(n_lat - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            faces += [[a, b, a + n_lon], [b, b + n_lon, a + n_lon]]
    return pts, torch.tensor(faces)


def test_windowed_frame_render_equals_full_frame_render():
    pts, faces = _sphere()
    B, H, W = 2, 120, 200
    vertices = pts.expand(B, -1, -1) * 0.5
    crop = vertices * torch.tensor([1.0, 1.0, 1.0]) + torch.tensor([[[0.05, 0.0, 0.0]], [[-0.1, 0.05, 0.0]]])
    s = 224 / 60.0  # a 60-pixel face box inside the frame
    tf = torch.tensor([[[s, 0.0, -90 * s], [0.0, s, -30 * s]], [[s, 0.0, -20 * s], [0.0, s, -50 * s]]])
    with torch.no_grad():
        img, alpha = render_shape_in_frame(vertices, crop, faces, tf, (H, W))
        full = Renderer((H, W)).render_shape(vertices, crop_to_frame_vertices(crop, tf, (H, W)), faces,
                                             facing_vertices=crop)
    assert img.shape == (B, 3, H, W) and alpha.shape == (B, 1, H, W)
    covered = int((full.alpha > 0).sum())
    assert covered > 1000
    differ = ((img - full.images).abs() > 1e-3).any(1).sum() + ((alpha - full.alpha).abs() > 1e-3).sum()
    assert int(differ) <= max(3, covered // 500)  # at most rounding flips on edges


def test_render_threads_are_restored(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(rast_module, "RENDER_THREADS", 1)
    seen = []

    def probe():
        seen.append(torch.get_num_threads())

    with rast_module.cpu_render_threads("cpu"):
        probe()
    assert seen == [1]
    assert torch.get_num_threads() == before
    monkeypatch.setattr(rast_module, "RENDER_THREADS", 0)
    with rast_module.cpu_render_threads("cpu"):
        probe()
    assert seen[-1] == before


def test_bench_harness_help_runs():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout and "--json" in out.stdout


def test_vertex_normals_under_autocast():
    v, f = random_mesh(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        n = vertex_normals(v, f)
    torch.testing.assert_close(n.float(), deca_vertex_normals(v, f), atol=2e-2, rtol=0)
    x = v.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vertex_normals(x, f).sum().backward()
    assert torch.isfinite(x.grad).all()
