#!/usr/bin/env python
"""Face-model evaluation speed: what a landmark fit pays per iteration.

Compares, in one run on the same machine, the full-mesh path (``vertices`` then ``landmarks``) with
the landmark-subset path (``landmarks_only``) of the bundled ICT model, forward and forward+backward,
at fit-sized batches; and FLAME's forward when a FLAME model is found (``--assets`` / $SPECTRE_HOME).

    PYTHONPATH=src python bench/models.py [--quick] [--threads N] [--assets DIR]
"""
from __future__ import annotations

import argparse
import time

import torch


def timeit(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000.0


def ict_rows(batches, repeat):
    from spectre.models import load_face_model

    m = load_face_model("ict")
    rows = []
    for B in batches:
        g = torch.Generator().manual_seed(0)
        p = {"identity": torch.randn(B, m.spec["identity"].size, generator=g),
             "expression": torch.rand(B, 53, generator=g), "rotation": 0.2 * torch.randn(B, 3, generator=g)}

        def full_fwd():
            with torch.no_grad():
                m.landmarks(m.vertices(p))

        def fast_fwd():
            with torch.no_grad():
                m.landmarks_only(p)

        def full_bwd():
            q = {k: v.clone().requires_grad_(True) for k, v in p.items()}
            m.landmarks(m.vertices(q)).sum().backward()

        def fast_bwd():
            q = {k: v.clone().requires_grad_(True) for k, v in p.items()}
            m.landmarks_only(q).sum().backward()

        for what, base, fast in (("fwd", full_fwd, fast_fwd), ("fwd+bwd", full_bwd, fast_bwd)):
            tb, tf = timeit(base, repeat), timeit(fast, repeat)
            rows.append((f"ict landmarks {what}", B, tb, tf))
    return rows


def flame_rows(batches, repeat, assets):
    from spectre.assets import AssetStore
    from spectre.errors import AssetError
    from spectre.models import load_face_model

    try:
        m = load_face_model("flame", AssetStore(assets))
    except AssetError as exc:
        print(f"(FLAME skipped: {exc})")
        return []
    rows = []
    for B in batches:
        p = m.default_params(B)
        p["shape"] = torch.randn(B, 100)
        p["expression"] = torch.randn(B, 50)

        def fwd():
            with torch.no_grad():
                m(p)

        rows.append(("flame forward (verts+lmk)", B, timeit(fwd, repeat), float("nan")))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small batches, few repeats")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--assets", help="asset folder holding a FLAME model")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches, repeat = ((50,), 3) if args.quick else ((50, 500), 5)
    rows = ict_rows(batches, repeat) + flame_rows(batches, repeat, args.assets)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {repeat}, milliseconds")
    print(f"{'case':<28}{'batch':>6}{'full mesh':>12}{'subset':>10}{'speed-up':>10}")
    for name, B, base, fast in rows:
        ratio = base / fast if fast == fast else float("nan")
        print(f"{name:<28}{B:>6}{base:>12.2f}{fast:>10.2f}{ratio:>9.1f}x")


if __name__ == "__main__":
    main()
