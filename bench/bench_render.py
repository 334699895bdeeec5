"""Renderer speed: frames/s at 224x224 for FLAME (5,023 vertices, 9,976 triangles) and the bundled ICT
model (its ``render_faces()``), forward (grey shape render, as the output videos) and forward+backward
(SH-shaded render, loss backpropagated to the vertices), against the renderer before the speed work
(``bench/reference_render.py``) measured in the same run. Then the videos' render
(``spectre.render.fast_shape``, non-differentiable) against the differentiable in-frame render it replaced
(``render_shape_in_frame(..., cull_backfaces=True)``), ICT at 224² (16 frames a call) and 512² (4 frames,
as the video stage's chunks), in ms per frame; with numba installed also the compiled kernels against the
torch ``fast_shape`` at 1 and 2 torch threads.

    PYTHONPATH=src python bench/bench_render.py [--quick] [--threads N] [--device cpu|cuda] [--json PATH]

FLAME comes from the shared golden ``shading.npz`` (its mesh and camera) when found, else from a FLAME
model in the asset store; ICT needs nothing but the package.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_render as reference  # noqa: E402

from spectre.geometry import project_to_crop  # noqa: E402
from spectre.render import Renderer, interpolate, rasterize  # noqa: E402
from spectre.render.fast_shape import render_shape_fast_in_frame  # noqa: E402
from spectre.render.rasterize import cpu_render_threads  # noqa: E402
from spectre.render.shading import add_sh_light, vertex_normals  # noqa: E402

SHARED = Path(os.environ.get("SPECTRE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def crop_camera(model, vertices: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """A DECA camera [s, tx, ty] that frames the landmarks like the pipeline's crops (bbox * 1.25)."""
    lo, hi = landmarks[0, :, :2].amin(0), landmarks[0, :, :2].amax(0)
    centre, extent = (lo + hi) / 2, float((hi - lo).max())
    s = 2.0 / (1.25 * extent)
    return torch.tensor([[s, -float(centre[0]), -float(centre[1])]], dtype=vertices.dtype)


def load_meshes(device, flame_assets: str | Path | None = None) -> dict:
    """name -> (model-space vertices (1, V, 3), camera (1, 3), triangles (F, 3))."""
    from spectre.assets import AssetStore
    from spectre.errors import AssetError
    from spectre.models import load_face_model

    meshes = {}
    shading_npz = SHARED / "golden" / "shading.npz"
    if flame_assets is None and shading_npz.is_file():
        g = np.load(shading_npz)
        meshes["FLAME"] = (torch.from_numpy(g["verts"][:1]), torch.from_numpy(g["in_cam"][:1]),
                           torch.from_numpy(g["faces"][0]).long())
    else:
        try:
            flame = load_face_model("flame", AssetStore(flame_assets))
            geo = flame(flame.default_params(1))
            meshes["FLAME"] = (geo.vertices.detach(), crop_camera(flame, geo.vertices, geo.landmarks),
                               flame.render_faces().long())
        except AssetError as exc:
            print(f"(FLAME skipped: {exc})")
    ict = load_face_model("ict")
    with torch.no_grad():
        geo = ict(ict.default_params(1))
    meshes["ICT"] = (geo.vertices, crop_camera(ict, geo.vertices, geo.landmarks), ict.render_faces().long())
    return {k: tuple(t.to(device) for t in v) for k, v in meshes.items()}


def timeit(fn, repeats: int, sync) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call, after one warm-up call. The CPU time is a
    load-robust estimate of the work when the machine is shared."""
    fn()
    sync()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t) / repeats, (time.process_time() - c) / repeats


def run(quick: bool = True, device: str = "cpu", size: int = 224, batches=None,
        flame_assets=None) -> list[dict]:
    """One row per (mesh, batch, pass): fps of the fast path and of the reference in the same run."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    meshes = load_meshes(dev, flame_assets)
    renderer = Renderer(size)
    repeats = 2 if quick else 5
    batches = batches or ((1, 16) if quick else (1, 32))
    sh = torch.zeros(1, 9, 3, device=dev)
    sh[:, 0] = 3.0
    sh[:, 3] = 0.5
    rows = []
    with cpu_render_threads(dev):
        threads = torch.get_num_threads()
    for name, (v1, cam1, faces) in meshes.items():
        for B in batches:
            v, cam = v1.expand(B, -1, -1).contiguous(), cam1.expand(B, -1)
            c = project_to_crop(v, cam)
            shb = sh.expand(B, -1, -1)

            def forward():
                with torch.no_grad():
                    renderer.render_shape(v, c, faces)

            def forward_ref():  # with the same intra-op threads as the fast path: compares the algorithms
                with torch.no_grad(), cpu_render_threads(dev):
                    reference.reference_render_shape(v, c, faces, size)

            def backward_with(rast, normals_fn, interp):
                def step():
                    with cpu_render_threads(dev):
                        vg = v.clone().requires_grad_(True)
                        frags = rast(renderer.screen_vertices(project_to_crop(vg, cam)), faces, size)
                        normals = interp(frags, normals_fn(vg, faces), faces)
                        img = add_sh_light(normals.permute(0, 3, 1, 2), shb)
                        img.square().mean().backward()
                return step

            reps = max(1, repeats if B == 1 else repeats // 2)
            passes = (("forward", forward, forward_ref),
                      ("forward+backward", backward_with(rasterize, vertex_normals, interpolate),
                       backward_with(reference.rasterize, reference.vertex_normals, reference.interpolate)))
            for what, fast, base in passes:
                (tf, cf), (tb, cb) = timeit(fast, reps, sync), timeit(base, reps, sync)
                rows.append({"stage": f"render {what}", "mesh": name, "batch": B, "unit": "frames/s",
                             "value": B / tf, "baseline": B / tb, "baseline_name": "renderer before speed work",
                             "cpu_ms_per_frame": cf / B * 1e3, "baseline_cpu_ms_per_frame": cb / B * 1e3,
                             "faces": int(faces.shape[0]), "size": size, "threads": threads})
    return rows + video_rows(meshes["ICT"], quick, sync)


@contextlib.contextmanager
def _env(**values):
    """Environment variables set for the duration of the block (the rasteriser and its threads)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def video_rows(mesh, quick: bool, sync=lambda: None) -> list[dict]:
    """The video's grey render, ms per frame (wall and CPU), same frames, same run: the pure-torch
    ``fast_shape`` vs the differentiable in-frame render it replaced (back faces culled, as the videos
    used it); then, with numba installed, the compiled kernels (``spectre.raster_kernels``) vs that torch
    path at 1 and 2 torch threads (``SPECTRE_RENDER_THREADS=0``: the count is not lowered under load)."""
    from spectre.render.fast_shape import raster_backend
    from spectre.render.visualize import render_shape_in_frame

    v1, cam1, faces = mesh
    rows = []
    with _env(SPECTRE_RASTER="auto"):
        compiled = raster_backend() == "numba"
    reps = 2 if quick else 5
    for size, B in ((224, 16), (512, 4)):
        g = torch.Generator().manual_seed(0)
        v = v1.expand(B, -1, -1) + 0.002 * torch.randn(B, *v1.shape[1:], generator=g).to(v1)
        crop = project_to_crop(v, cam1.expand(B, -1))
        k = 224.0 / size  # the crop shown over the whole window, as in the video's face window
        tf = torch.tensor([[k, 0.0, 0.0], [0.0, k, 0.0]], dtype=v.dtype, device=v.device).expand(B, 2, 3)

        def fast(backend):
            def call():
                with _env(SPECTRE_RASTER=backend):
                    render_shape_fast_in_frame(v, crop, faces, tf, (size, size))
            return call

        def differentiable():
            with torch.no_grad():
                render_shape_in_frame(v, crop, faces, tf, (size, size), cull_backfaces=True)

        (tf_, cf), (td, cd) = timeit(fast("torch"), reps, sync), timeit(differentiable, reps, sync)
        rows.append({"stage": "render video", "case": f"ICT {size}² grey video render: fast_shape", "mesh": "ICT",
                     "batch": B, "unit": "ms/frame",
                     "value": tf_ / B * 1e3, "baseline": td / B * 1e3, "lower_is_better": True,
                     "baseline_name": "differentiable render_shape_in_frame (culled)",
                     "cpu_ms_per_frame": cf / B * 1e3, "baseline_cpu_ms_per_frame": cd / B * 1e3,
                     "faces": int(faces.shape[0]), "size": size})
        if not compiled or v.device.type != "cpu":
            continue
        before = torch.get_num_threads()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with _env(SPECTRE_RENDER_THREADS="0"):
                (tn, cn), (tt, ct) = timeit(fast("numba"), 2 * reps, sync), timeit(fast("torch"), reps, sync)
            rows.append({"stage": "render video", "mesh": "ICT", "batch": B, "unit": "ms/frame",
                         "case": f"ICT {size}² grey video render: numba, {threads} torch thread(s)",
                         "value": tn / B * 1e3, "baseline": tt / B * 1e3, "lower_is_better": True,
                         "baseline_name": f"torch fast_shape, {threads} thread(s)",
                         "cpu_ms_per_frame": cn / B * 1e3, "baseline_cpu_ms_per_frame": ct / B * 1e3,
                         "faces": int(faces.shape[0]), "size": size, "threads": threads})
        torch.set_num_threads(before)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'pass':18} {'mesh':6} {'batch':>5} {'fps':>8} {'before':>8} {'speed-up':>9} "
          f"{'CPU ms/frame':>13} {'before':>8}")
    for r in rows:
        if r["unit"] == "ms/frame":
            what = (f"numba vs torch fast_shape, {r['threads']} thread(s)" if "threads" in r
                    else "fast_shape vs differentiable")
            print(f"{'video ' + str(r['size']) + chr(178):18} {r['mesh'][:6]:6} {r['batch']:5d} {r['value']:8.1f} "
                  f"{r['baseline']:8.1f} {r['baseline'] / r['value']:8.2f}x {r['cpu_ms_per_frame']:13.1f} "
                  f"{r['baseline_cpu_ms_per_frame']:8.1f}   (ms/frame, not fps: {what})")
            continue
        print(f"{r['stage'][7:]:18} {r['mesh']:6} {r['batch']:5d} {r['value']:8.1f} {r['baseline']:8.1f} "
              f"{r['value'] / r['baseline']:8.2f}x {r['cpu_ms_per_frame']:13.1f} {r['baseline_cpu_ms_per_frame']:8.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batches 1 and 16, fewer repeats")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--assets", help="asset folder with a FLAME model (used when the golden mesh is absent)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.quick, args.device, args.size, flame_assets=args.assets)
    print(f"device={args.device} render threads={rows[0]['threads'] if rows else '-'} size={args.size} "
          f"load={os.getloadavg()[0]:.1f}"
          f"  ('before' = bench/reference_render.py, same run)")
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
