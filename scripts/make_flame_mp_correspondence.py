"""Derive where MediaPipe's face-mesh points lie on FLAME's topology (``spectre/data/flame_mp478.npz``).

The ICT model knows its MediaPipe points (the 478-point surface table ``ict_mp478.npz`` and the 40-point lip
table ``models/ict_lips.py``, both derived from tracked clips). They are carried over to FLAME's mean shape
(``head_template.obj`` of the SPECTRE/DECA data folder, with FLAME's ``landmark_embedding.npy``):

1. a similarity transform (Umeyama) maps the ICT neutral face onto the FLAME template by the 51 inner
   iBUG-68 landmarks both models define (17-67; the contours differ by construction);
2. a non-rigid step: the landmarks' remaining offsets are interpolated to every point by a Gaussian RBF
   (sigma 15 mm, ridge-regularised), so mouth width and lip heights follow FLAME's own landmarks;
3. each point goes to the closest point on a FLAME skin triangle (eyeballs excluded). The lips are split
   by topology: FLAME's mouth is a hole whose boundary loop runs from one corner along the upper lip and
   back along the lower one; every skin vertex near the mouth is labelled upper or lower by its graph
   distance to the two arcs, and MediaPipe points of the upper lip (the upper inner-lip line and points
   above the closed mouth's contact line) may only land on upper-lip triangles, and vice versa;
4. the 40 lip points get the vertex of their triangle with the largest barycentric weight (the fit's dense
   lip term takes vertices); each point's weight is ICT's reliability weight times
   ``1 / (1 + (d / 3 mm)^2)``, d the distance the warped point moved onto the FLAME surface.

Only indices, barycentric and reliability weights and the transfer distances are stored (no geometry).

    PYTHONPATH=src python scripts/make_flame_mp_correspondence.py [--data SPECTRE_DATA_DIR] [--out PATH]
"""
from __future__ import annotations

import argparse
import io
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import torch

from spectre.atomic import atomic_write_bytes
from spectre.models.flame import load_landmark_embedding
from spectre.models.ict import ICTFaceModel
from spectre.reconstruct.mp_lips import MP_LIPS, MP_LIPS_INNER, MP_LIPS_OUTER

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "spectre" / "data" / "flame_mp478.npz"
DATA = ROOT.parent / "shared" / "assets" / "spectre_data"
FIRST_EYEBALL_VERTEX = 3931   # FLAME: vertices 3931.. are the two eyeballs
RBF_SIGMA_M = 0.015
RBF_RIDGE = 1e-5
SNAP_SIGMA_M = 0.003
MOUTH_RADIUS_M = 0.035


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    verts, faces = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("v "):
                verts.append([float(t) for t in line.split()[1:4]])
            elif line.startswith("f "):
                faces.append([int(t.split("/")[0]) - 1 for t in line.split()[1:4]])
    return np.asarray(verts, np.float64), np.asarray(faces, np.int64)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """s, R, t with dst ~ s R src + t (least squares)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / (a ** 2).sum(1).mean())
    return s, R, md - s * R @ ms


def rbf_warp(ctrl: np.ndarray, offsets: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Gaussian-RBF interpolation of ``offsets`` at ``ctrl`` to ``pts`` (mean offset as the far field)."""
    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * RBF_SIGMA_M ** 2))
    mean = offsets.mean(0)
    coef = np.linalg.solve(k(ctrl, ctrl) + RBF_RIDGE * np.eye(len(ctrl)), offsets - mean)
    return pts + mean + k(pts, ctrl) @ coef


def closest_on_triangles(p: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of every triangle (T, 3, 3) to ``p`` (3,) -> distances (T,), barycentrics (T, 3)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    best_d = np.full(len(tri), np.inf)
    best_w = np.zeros((len(tri), 3))
    # interior: project onto the plane
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    u = 1 - v - w
    inside = (u >= 0) & (v >= 0) & (w >= 0)
    q = u[:, None] * a + v[:, None] * b + w[:, None] * c
    d = np.linalg.norm(q - p, axis=1)
    best_d[inside] = d[inside]
    best_w[inside] = np.stack([u, v, w], 1)[inside]
    # edges
    for i, j in ((0, 1), (1, 2), (2, 0)):
        e0, e1 = tri[:, i], tri[:, j]
        e = e1 - e0
        t = np.clip(((p - e0) * e).sum(1) / np.maximum((e * e).sum(1), 1e-30), 0, 1)
        d = np.linalg.norm(e0 + t[:, None] * e - p, axis=1)
        better = d < best_d
        wt = np.zeros((len(tri), 3))
        wt[:, i], wt[:, j] = 1 - t, t
        best_d[better], best_w[better] = d[better], wt[better]
    return best_d, best_w


def mouth_loop(faces: np.ndarray, verts: np.ndarray, mouth_centre: np.ndarray) -> list[int]:
    """The boundary loop of the mesh closest to the mouth."""
    count: dict[tuple[int, int], int] = defaultdict(int)
    for f in faces:
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            count[(min(a, b), max(a, b))] += 1
    adj: dict[int, list[int]] = defaultdict(list)
    for (a, b), c in count.items():
        if c == 1:
            adj[a].append(b)
            adj[b].append(a)
    loops, seen = [], set()
    for s in adj:
        if s in seen:
            continue
        loop, prev, cur = [s], -1, s
        seen.add(s)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    return min(loops, key=lambda lp: np.linalg.norm(verts[lp].mean(0) - mouth_centre))


def lip_labels(faces: np.ndarray, verts: np.ndarray, loop: list[int], mouth_centre: np.ndarray) -> np.ndarray:
    """(V,) +1 upper lip, -1 lower lip, 0 elsewhere: the mouth loop is cut at its corners (extreme x); the
    arc with the higher mean height is the upper lip; skin vertices near the mouth take the label of the
    arc they are fewer mesh edges from."""
    lp = np.asarray(loop)
    i0, i1 = sorted((int(np.argmin(verts[lp, 0])), int(np.argmax(verts[lp, 0]))))
    arc_a, arc_b = lp[i0 + 1:i1], np.concatenate([lp[i1 + 1:], lp[:i0]])
    upper, lower = (arc_a, arc_b) if verts[arc_a, 1].mean() > verts[arc_b, 1].mean() else (arc_b, arc_a)
    nbr: dict[int, set[int]] = defaultdict(set)
    for f in faces:
        for a in f:
            nbr[int(a)].update(int(b) for b in f if b != a)
    near = np.linalg.norm(verts - mouth_centre, axis=1) < MOUTH_RADIUS_M
    near[FIRST_EYEBALL_VERTEX:] = False

    def bfs(seeds):
        dist = np.full(len(verts), np.inf)
        q = deque()
        for s in seeds:
            dist[s] = 0
            q.append(int(s))
        while q:
            v = q.popleft()
            for n in nbr[v]:
                if near[n] and dist[n] == np.inf:
                    dist[n] = dist[v] + 1
                    q.append(n)
        return dist
    du, dl = bfs(upper), bfs(lower)
    label = np.zeros(len(verts), np.int64)
    label[near & (du < dl)] = 1
    label[near & (dl < du)] = -1
    label[lp[[i0, i1]]] = 0  # the corners belong to both lips
    return label


def _samples(fv: np.ndarray, ff: np.ndarray, tris: np.ndarray, n: int = 8):
    """Points on a barycentric grid of each triangle -> (points (S, 3), triangle (S,), barycentrics (S, 3))."""
    ij = [(i, j) for i in range(n + 1) for j in range(n + 1 - i)]
    w = np.asarray([(i / n, j / n, 1 - (i + j) / n) for i, j in ij])
    pts = np.einsum("wk,tkc->twc", w, fv[ff[tris]]).reshape(-1, 3)
    return pts, np.repeat(tris, len(w)), np.tile(w, (len(tris), 1))


def contact_refine(fv, ff, upper_ok, lower_ok, warped, side, out_tri, out_bary, dist) -> None:
    """Move the inner-lip line's points (all but the corners) to where their lip meets the other one: on
    their own lip, within 5 mm of the warped point and 0.6 mm of its x (along the mouth), the place closest
    to the other lip (plus 0.3 x the distance to the warped point), so the closed template mouth's contact
    pairs touch."""
    from scipy.spatial import cKDTree

    near = np.linalg.norm(fv[ff].mean(1) - warped[list(MP_LIPS_INNER)].mean(0), axis=1) < MOUTH_RADIUS_M
    sets = {}
    for s_, ok in ((1, upper_ok), (-1, lower_ok)):
        # each lip's own triangles: allowed for it and touching a vertex labelled with it
        sets[s_] = _samples(fv, ff, np.flatnonzero(ok & near))
    trees = {s_: cKDTree(v[0]) for s_, v in sets.items()}
    for pos in list(range(1, 10)) + list(range(11, 20)):
        p = MP_LIPS_INNER[pos]
        own = sets[side[p]]
        cand = np.flatnonzero((np.linalg.norm(own[0] - warped[p], axis=1) < 0.005)
                              & (np.abs(own[0][:, 0] - warped[p, 0]) < 0.0006))
        if not cand.size:
            continue
        other = trees[-side[p]].query(own[0][cand])[0]
        k = cand[np.argmin(other + 0.3 * np.linalg.norm(own[0][cand] - warped[p], axis=1))]
        out_tri[p], out_bary[p] = ff[own[1][k]], own[2][k]
        dist[p] = np.linalg.norm(own[0][k] - warped[p])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="SPECTRE/DECA data folder (head_template.obj, "
                    "landmark_embedding.npy)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    data = Path(args.data)

    # ---- FLAME template and its 68 landmarks (fixed contour)
    fv, ff = read_obj(data / "head_template.obj")
    emb = load_landmark_embedding(data / "landmark_embedding.npy")
    lf = ff[emb["full_lmk_faces_idx"].reshape(-1).astype(np.int64)]
    flame_lmk = np.einsum("lkc,lk->lc", fv[lf], emb["full_lmk_bary_coords"].reshape(-1, 3))

    # ---- ICT neutral: landmarks, MediaPipe-478 surface points, lip vertices
    ict = ICTFaceModel.from_store().eval()
    with torch.no_grad():
        params = ict.default_params(1)
        iv = ict.vertices(params)
        ict_lmk = ict.landmarks(iv, params)[0].double().numpy()
        iv = iv[0].double().numpy()
    idx, bary, weight = (t.double().numpy() if t.is_floating_point() else t.numpy() for t in ict.mediapipe_surface())
    ict_mp = np.einsum("pkc,pk->pc", iv[idx], bary)
    ict_mp[list(MP_LIPS)] = iv[ict.mediapipe_lip_vertices().numpy()]  # the lip term's own points

    # ---- 1. similarity on landmarks 17..67, 2. RBF warp of the residuals
    inner = np.arange(17, 68)
    s, R, t = umeyama(ict_lmk[inner], flame_lmk[inner])
    sim = lambda x: s * x @ R.T + t  # noqa: E731
    res = flame_lmk[inner] - sim(ict_lmk[inner])
    print(f"similarity: scale {s:.5f} m per ICT unit; landmark residual mean "
          f"{np.linalg.norm(res, axis=1).mean() * 1000:.2f} mm, max {np.linalg.norm(res, axis=1).max() * 1000:.2f} mm")
    warped = rbf_warp(sim(ict_lmk[inner]), res, sim(ict_mp))

    # ---- 3. closest FLAME skin triangle, lips split by topology
    mouth_centre = flame_lmk[48:68].mean(0)
    loop = mouth_loop(ff, fv, mouth_centre)
    label = lip_labels(ff, fv, loop, mouth_centre)
    skin = (ff < FIRST_EYEBALL_VERTEX).all(1)
    tri_label = label[ff]
    upper_ok = skin & ~(tri_label == -1).any(1)
    lower_ok = skin & ~(tri_label == 1).any(1)
    # which MediaPipe points belong to which lip: by MediaPipe's own ordering for the inner line, else by
    # side of the closed mouth's contact line (between the corners, inside the outer lip contour)
    side = np.zeros(478, np.int64)
    side[list(MP_LIPS_INNER[11:20])] = 1
    side[list(MP_LIPS_INNER[1:10])] = -1
    lip_line = warped[list(MP_LIPS_INNER)]
    outer = warped[list(MP_LIPS_OUTER)]
    x0, x1 = lip_line[:, 0].min(), lip_line[:, 0].max()
    order = np.argsort(lip_line[:, 0])
    contact_y = np.interp(warped[:, 0], lip_line[order, 0], lip_line[order, 1])
    in_mouth = ((warped[:, 0] > x0) & (warped[:, 0] < x1) & (warped[:, 1] < outer[:, 1].max())
                & (warped[:, 1] > outer[:, 1].min()) & (side == 0))
    in_mouth[list(MP_LIPS_INNER)] = False
    side[in_mouth] = np.where(warped[in_mouth, 1] > contact_y[in_mouth], 1, -1)

    out_tri = np.zeros((478, 3), np.int64)
    out_bary = np.zeros((478, 3))
    dist = np.zeros(478)
    for p in range(478):
        allowed = upper_ok if side[p] == 1 else lower_ok if side[p] == -1 else skin
        cand = np.flatnonzero(allowed)
        d, w = closest_on_triangles(warped[p], fv[ff[cand]])
        k = int(np.argmin(d))
        out_tri[p], out_bary[p], dist[p] = ff[cand[k]], w[k], d[k]
    out_bary = np.clip(out_bary, 0, None)
    out_bary /= out_bary.sum(1, keepdims=True)
    contact_refine(fv, ff, upper_ok, lower_ok, warped, side, out_tri, out_bary, dist)
    lips = out_tri[list(MP_LIPS)][np.arange(40), out_bary[list(MP_LIPS)].argmax(1)]
    out_weight = weight / (1 + (dist / SNAP_SIGMA_M) ** 2)
    on = np.einsum("pkc,pk->pc", fv[out_tri], out_bary)
    print(f"transfer distance: median {np.median(dist) * 1000:.2f} mm, 90% {np.quantile(dist, 0.9) * 1000:.2f} mm, "
          f"max {dist.max() * 1000:.2f} mm; lips: max {dist[list(MP_LIPS)].max() * 1000:.2f} mm; "
          f"mean weight ICT {weight.mean():.3f} -> FLAME {out_weight.mean():.3f}")
    lip_err = np.linalg.norm(fv[lips] - on[list(MP_LIPS)], axis=1)
    print(f"lip vertex vs barycentric point: max {lip_err.max() * 1000:.2f} mm; "
          f"{int((side == 1).sum())} upper-lip / {int((side == -1).sum())} lower-lip points")
    buf = io.BytesIO()
    np.savez_compressed(buf, triangle_vertex=out_tri.astype(np.int16), barycentric=out_bary.astype(np.float32),
                        weight=out_weight.astype(np.float32), transfer_mm=(dist * 1000).astype(np.float32),
                        lip_vertex=lips.astype(np.int16), lip_rows=np.asarray(MP_LIPS, np.int16), lip_side=side.astype(np.int8))
    atomic_write_bytes(Path(args.out), buf.getvalue(), overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
