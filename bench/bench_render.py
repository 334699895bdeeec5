"""Renderer speed: frames/s at 224x224 for FLAME (5,023 vertices) and the ICT model (~26k vertices),
batch 1 and 32, forward (grey shape render) and forward+backward (SH-shaded render, loss backpropagated
to the vertices), against a naive per-pixel rasteriser (every pixel tested against every triangle,
vectorised over pixels) measured in the same run.

    PYTHONPATH=src python bench/bench_render.py [--quick] [--threads N] [--device cpu|cuda]

Needs the shared data (``SPECTRE_SHARED`` or ../shared): golden/shading.npz (FLAME-topology mesh)
and assets/ict_facekit/ict_face_model.npz.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from spectre.geometry import project_to_crop
from spectre.render import Renderer, interpolate, rasterize
from spectre.render.shading import add_sh_light, vertex_normals

SHARED = Path(os.environ.get("SPECTRE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def load_meshes(device):
    g = np.load(SHARED / "golden" / "shading.npz")
    ict = np.load(SHARED / "assets" / "ict_facekit" / "ict_face_model.npz")
    return {  # model-space vertices, camera [s, tx, ty] filling the crop like a face track, triangles
        "FLAME": (torch.from_numpy(g["verts"][:1]).to(device), torch.from_numpy(g["in_cam"][:1]).to(device),
                  torch.from_numpy(g["faces"][0]).long().to(device)),
        "ICT": (torch.from_numpy(ict["neutral_vertices"])[None].to(device),
                torch.tensor([[0.06, 0.0, -3.0]], device=device),
                torch.from_numpy(ict["triangles"]).long().to(device)),
    }


def naive_rasterize(screen, faces, size, chunk=256):
    """Baseline: for every chunk of triangles test all pixel centres, keep the nearest (per-pixel)."""
    B = screen.shape[0]
    ys, xs = torch.meshgrid(torch.arange(size, device=screen.device) + 0.5,
                            torch.arange(size, device=screen.device) + 0.5, indexing="ij")
    xs, ys = xs.reshape(1, 1, -1), ys.reshape(1, 1, -1)
    best = torch.full((B, size * size), float("inf"), device=screen.device)
    idx = torch.full((B, size * size), -1, dtype=torch.long, device=screen.device)
    px = (screen[..., 0] + 1) * size / 2
    py = (screen[..., 1] + 1) * size / 2
    for s in range(0, faces.shape[0], chunk):
        f = faces[s:s + chunk]
        x0, x1, x2 = (px[:, f[:, k], None] for k in range(3))
        y0, y1, y2 = (py[:, f[:, k], None] for k in range(3))
        z0, z1, z2 = (screen[:, f[:, k], 2, None] for k in range(3))
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        area = torch.where(area == 0, torch.full_like(area, 1e-12), area)
        w0 = ((x2 - x1) * (ys - y1) - (y2 - y1) * (xs - x1)) / area
        w1 = ((x0 - x2) * (ys - y2) - (y0 - y2) * (xs - x2)) / area
        w2 = 1 - w0 - w1
        z = w0 * z0 + w1 * z1 + w2 * z2
        z = torch.where((w0 >= 0) & (w1 >= 0) & (w2 >= 0), z, torch.full_like(z, float("inf")))
        zmin, arg = z.min(1)
        upd = zmin < best
        best = torch.where(upd, zmin, best)
        idx = torch.where(upd, arg + s, idx)
    return idx.view(B, size, size)


def timeit(fn, repeats, sync):
    """Wall seconds per call; also stores process CPU seconds per call in ``timeit.cpu`` (a load-robust
    estimate of the work when the machine is shared)."""
    fn()
    sync()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    sync()
    timeit.cpu = (time.process_time() - c) / repeats
    return (time.perf_counter() - t) / repeats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, baseline on FLAME batch 1 only")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    meshes = load_meshes(device)
    renderer = Renderer(args.size)
    repeats = 2 if args.quick else 5
    sh = torch.zeros(1, 9, 3, device=device)
    sh[:, 0] = 3.0
    sh[:, 3] = 0.5
    rows = []
    for name, (v1, cam1, faces) in meshes.items():
        for B in (1, 32):
            v, cam = v1.expand(B, -1, -1).contiguous(), cam1.expand(B, -1)
            c = project_to_crop(v, cam)
            shb = sh.expand(B, -1, -1)

            def forward():
                with torch.no_grad():
                    renderer.render_shape(v, c, faces)

            def forward_backward():
                vg = v.clone().requires_grad_(True)
                frags = rasterize(renderer.screen_vertices(project_to_crop(vg, cam)), faces, args.size)
                normals = interpolate(frags, vertex_normals(vg, faces), faces)
                img = add_sh_light(normals.permute(0, 3, 1, 2), shb)
                img.square().mean().backward()

            reps = max(1, repeats if B == 1 else repeats // 2)
            fwd = timeit(forward, reps, sync) / B
            fwd_cpu = timeit.cpu / B
            fb = timeit(forward_backward, reps, sync) / B
            base = None
            if not args.quick or (name == "FLAME" and B == 1):
                screen = renderer.screen_vertices(c[:1])
                base = timeit(lambda: naive_rasterize(screen, faces, args.size), 1, sync)
            rows.append((name, B, 1 / fwd, fwd_cpu * 1e3, 1 / fb, None if base is None else 1 / base))
    print(f"device={device} threads={torch.get_num_threads()} size={args.size}  (naive = per-pixel "
          f"test of every triangle, rasterisation only, batch 1)")
    print(f"{'mesh':6} {'batch':>5} {'fwd fps':>9} {'fwd CPU ms/frame':>17} {'fwd+bwd fps':>12} {'naive fps':>10} "
          f"{'fwd speed-up':>13}")
    for name, B, f, cpu_ms, fb, base in rows:
        b = f"{base:10.2f}" if base else f"{'-':>10}"
        sp = f"{f / base:12.0f}x" if base else f"{'-':>13}"
        print(f"{name:6} {B:5d} {f:9.1f} {cpu_ms:17.1f} {fb:12.1f} {b} {sp}")


if __name__ == "__main__":
    main()
