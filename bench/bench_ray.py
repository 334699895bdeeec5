"""Throughput of ``spectre reconstruct --ray`` with one and two worker nodes, against the local
``--workers 1`` run of the same batch measured in the same run.

    PYTHONPATH=src python bench/bench_ray.py [--quick] [--clips N] [--frames N] [--layout grid|none]

Each figure is the wall time of the whole CLI command (start-up, connecting, model loading on each worker,
every video written), so it is what a user waits for. The cluster is a head without CPUs plus worker
nodes of one CPU each, started with ``ray start`` on 127.0.0.1 with token authentication, inside
namespaces whose only network is the loopback (the harness of ``tests/ray_cluster.py``); every node
shares this machine, so two nodes can at best match what two local workers reach on the same cores.
Needs the ``[ray]`` extra and ``unshare`` (unprivileged namespaces).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPECTRE_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def _clips(n: int, frames: int, folder: Path) -> list[str]:
    """``n`` clips of ``frames`` frames from the LRS3 samples (looped forwards and backwards when short)."""
    import numpy as np

    from spectre.io import open_video
    from spectre.io.writer import VideoWriter

    sources = sorted((SHARED / "samples" / "LRS3").glob("*.mp4"))
    if not sources:
        raise FileNotFoundError(f"no LRS3 sample clip under {SHARED / 'samples'}")
    out = []
    for i in range(n):
        video = open_video(sources[i % len(sources)])
        base = video.read().frames
        cycle = np.concatenate([base, base[::-1]])
        dst = folder / f"clip{i}.mp4"
        with VideoWriter(dst, video.fps, (video.width, video.height), overwrite=True) as w:
            for k in range(frames):
                w.write(cycle[k % len(cycle)])
        out.append(str(dst))
    return out


def run(quick: bool = False, clips: int = 4, frames: int | None = None, layout: str = "grid") -> list[dict]:
    import ray_cluster

    frames = frames or (20 if quick else 50)
    if ray_cluster.confinement() is None:
        raise RuntimeError("unshare (unprivileged namespaces) is not available: Ray cannot be kept on 127.0.0.1")
    with tempfile.TemporaryDirectory() as d:
        paths = _clips(clips, frames, Path(d))
        report = ray_cluster.run_scenario({"mode": "bench", "clips": paths, "work": str(Path(d) / "w"),
                                           "layout": layout, "max_nodes": 2, "step_timeout": 600}, timeout=1500)
    if report.get("error"):
        raise RuntimeError(report["error"])
    runs = report["runs"]
    for name, r in runs.items():
        if r["rc"] != 0:
            raise RuntimeError(f"{name} run failed (exit {r['rc']}): {r['stderr'][-300:]}")
    base = runs["local"]["seconds"]
    case = f"{clips} clips x {frames} frames, fit + {layout}"
    rows = []
    for name, label in (("local", "local --workers 1"), ("ray1", "Ray, 1 worker node"),
                        ("ray2", "Ray, 2 worker nodes")):
        t = runs[name]["seconds"]
        for unit, amount in (("videos/s", clips), ("frames/s", clips * frames)):
            rows.append({"stage": "ray", "case": f"{label}, {case}", "unit": unit, "value": amount / t,
                         "baseline": None if name == "local" else amount / base,
                         "baseline_name": "local --workers 1", "seconds": t})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20-frame clips instead of 50")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int)
    ap.add_argument("--layout", choices=("grid", "none"), default="grid")
    args = ap.parse_args(argv)
    rows = run(args.quick, args.clips, args.frames, args.layout)
    print(f"{'case':62} {'unit':9} {'value':>8} {'vs local':>9} {'wall s':>7}")
    for r in rows:
        ratio = f"{r['value'] / r['baseline']:.2f}x" if r["baseline"] else "-"
        print(f"{r['case'][:62]:62} {r['unit']:9} {r['value']:8.3f} {ratio:>9} {r['seconds']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
