"""Derive the dense MediaPipe-478 -> ICT surface correspondence (``spectre/data/ict_mp478.npz``) from data.

Every sample clip's track (from ``spectre reconstruct`` results, ``--results``, or tracked here) is fitted
with the default fit; all ICT face vertices are projected with the fitted camera. For each of MediaPipe's
478 points:

1. the vertex with the smallest mean image distance over all valid frames (normalised by the
   inter-ocular distance) among the front half of the face part;
2. on each triangle around that vertex, the barycentric point that best follows the tracked point over
   all frames (least squares on the weights, clamped into the triangle); the best triangle is kept;
3. a reliability weight from the residual r (RMS distance / IOD over frames): ``1 / (1 + (r / 0.01)^2)``,
   so points that the model surface cannot follow (the tracker's own noise, iris points, occluded contour)
   count less.

The file stores full-ICT vertex indices (it serves the bundled compact model and the full model alike),
barycentric weights, reliability weights and the residuals.

    PYTHONPATH=src python scripts/make_mp478_correspondence.py --results RESULTS_DIR [--out PATH]
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch

from spectre.atomic import atomic_write_bytes
from spectre.geometry import project_to_crop
from spectre.models.ict import ICTFaceModel
from spectre.reconstruct.fit import FitConfig, fit_track

OUT = Path(__file__).resolve().parents[1] / "src" / "spectre" / "data" / "ict_mp478.npz"
SIGMA = 0.01  # IOD units: residual at which a point's weight halves


def candidates(model: ICTFaceModel) -> np.ndarray:
    """Face-part vertices in front of the ears (z above the face's mid depth)."""
    face_end = model.part_vertex_range.get("Face", (0, model.v_template.shape[0]))[1]
    v = model.v_template.numpy()[:face_end]
    return np.flatnonzero(v[:, 2] > np.median(v[:, 2]))


def load_tracks(results: Path):
    for f in sorted(results.glob("*.npz")):
        d = np.load(f, allow_pickle=False)
        if "points478" in d and "tracked68" in d:
            yield f.stem, d["tracked68"].astype(np.float64), d["points478"].astype(np.float64), d["valid"].astype(bool)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="folder of spectre reconstruct .npz results (any layout)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    model = ICTFaceModel.from_store().eval()
    cand = candidates(model)
    tri = model.faces.numpy()
    P = 478
    total = np.zeros((P, len(cand)))
    frames = 0
    clips = []
    for name, lm, pts, valid in load_tracks(Path(args.results)):
        fit = fit_track(model, np.nan_to_num(lm), valid, FitConfig(), points478=pts)
        params = {k: torch.as_tensor(v) for k, v in fit.params.items()}
        with torch.no_grad():
            verts = model.vertices(params)
            proj = project_to_crop(verts, torch.as_tensor(fit.cam))[..., :2].numpy() * fit.scale + fit.center
        ok = valid & np.isfinite(pts[..., :2]).all((1, 2)) & np.isfinite(lm).all((1, 2))
        iod = np.linalg.norm(lm[ok, 36] - lm[ok, 45], axis=-1)
        tgt = pts[ok, :, :2] / iod[:, None, None]
        pc = proj[ok] / iod[:, None, None]                       # (t, V, 2), IOD units
        for a in range(0, P, 8):
            d = np.linalg.norm(tgt[:, a:a + 8, None] - pc[:, None, cand], axis=-1)  # (t, 8, C)
            total[a:a + 8] += d.sum(0)
        frames += int(ok.sum())
        clips.append((tgt, pc))
        print(f"{name}: {int(ok.sum())} frames", flush=True)
    best = cand[(total / max(frames, 1)).argmin(1)]              # (P,) local vertex index
    tgt_all = np.concatenate([c[0] for c in clips])              # (F, P, 2)
    pc_all = np.concatenate([c[1] for c in clips])               # (F, V, 2)
    out_tri = np.zeros((P, 3), np.int64)
    out_bary = np.zeros((P, 3), np.float64)
    out_res = np.zeros(P)
    for p in range(P):
        v = best[p]
        best_r, best_t, best_w = np.inf, None, None
        for t in tri[(tri == v).any(1)]:
            A = pc_all[:, t]                                     # (F, 3, 2)
            # x = w0 A0 + w1 A1 + (1 - w0 - w1) A2  ->  least squares on (w0, w1)
            M = np.stack([A[:, 0] - A[:, 2], A[:, 1] - A[:, 2]], -1).reshape(-1, 2)
            b = (tgt_all[:, p] - A[:, 2]).reshape(-1)
            w01 = np.linalg.lstsq(M, b, rcond=None)[0]
            w = np.clip(np.array([w01[0], w01[1], 1 - w01.sum()]), 0, None)
            w = w / w.sum() if w.sum() > 0 else np.array([1.0, 0.0, 0.0])
            r = np.sqrt(np.mean(np.sum((np.einsum("fkc,k->fc", A, w) - tgt_all[:, p]) ** 2, -1)))
            if r < best_r:
                best_r, best_t, best_w = r, t, w
        out_tri[p], out_bary[p], out_res[p] = best_t, best_w, best_r
    weight = 1.0 / (1.0 + (out_res / SIGMA) ** 2)
    src = model.source_vertex_idx.numpy()[out_tri]
    print(f"{frames} frames; residual / IOD: median {np.median(out_res):.4f}, 90% {np.quantile(out_res, 0.9):.4f}, "
          f"max {out_res.max():.4f}; mean weight {weight.mean():.3f}")
    buf = io.BytesIO()
    np.savez_compressed(buf, source_vertex=src.astype(np.int32), barycentric=out_bary.astype(np.float32),
                        weight=weight.astype(np.float32), residual_iod=out_res.astype(np.float32),
                        frames=np.int64(frames))
    atomic_write_bytes(Path(args.out), buf.getvalue(), overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
