"""The visible inner-lip boundary: candidate strips across each lip, derived from a model's mesh.

A tracker's inner-lip contour is where the lips are seen to end, not a fixed point of the lip surface:
when the lips press, roll, pout or the head pitches, the edge the camera sees lies on other surface points
than any fixed vertex. As the jaw contour does with its candidate vertices (``ICTFaceModel.landmarks``),
each inner-lip point gets a short strip of candidate vertices across its lip, from the red outer surface
over the lip edge into the mouth, and the visible edge is the candidate that is the extreme across the mouth
opening in the image (upper lip: lowest along the face's up direction, lower lip: highest), chosen softly.

Strips are derived from the mesh alone (topology + rest geometry), for any model whose lip points have
vertices (``FaceModel.mediapipe_lip_vertices``), so ICT and FLAME share the code:

1. from the inner-lip vertex outwards over the red lip, ``OUTER_M`` metres, each step to the neighbour
   geodesically nearer to the outer-lip vertex of the same MediaPipe lip position;
2. from the inner-lip vertex into the mouth, ``DEPTH_M`` metres, each step to a neighbour geodesically
   further from the outer vertex and behind (-z);

each step taking the allowed neighbour nearest to the strip's plane (spanned by the frontal direction
outer -> inner and the depth axis z), so the strip runs across the lip, not along it.

The side of each point follows MediaPipe's inner-lip order (the order of every model's lip table,
``spectre.reconstruct.mp_lips.MP_LIPS_INNER``): the two mouth corners keep their single vertex (there is
no lip to cross), the lower lip's edge is its highest candidate, the upper lip's its lowest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # scipy is imported where the strips are derived: the default fit never derives them, and
    import scipy.sparse as sp  # its import (0.1 s) would delay the job's first fitted window

__all__ = ["LipStrips", "derive_lip_strips", "select_lip_edge"]

#: how far the strips reach (metres; models scale by ``units_per_metre``): onto the red outer lip from the
#: tracked edge (pressed lips roll the visible edge outward by a few mm) and into the mouth
OUTER_M = 0.005
DEPTH_M = 0.005
#: temperature of the soft extreme (metres of image offset along the face's vertical)
SOFTNESS_M = 0.0003
#: per MediaPipe inner-lip point (``MP_LIPS_INNER`` order: right corner, lower lip 1-9, left corner, upper lip
#: 11-19): +1 the edge is the highest candidate (lower lip), -1 the lowest (upper lip), 0 a corner (fixed)
INNER_TOWARD = (0.0,) + (1.0,) * 9 + (0.0,) + (-1.0,) * 9


@dataclass(frozen=True)
class LipStrips:
    """Candidate vertices of the visible edge of each inner-lip point (padded by repeating the last)."""

    vertex_idx: torch.Tensor  # (N, C) int64 vertex indices
    valid: torch.Tensor       # (N, C) bool, False on padding
    toward: torch.Tensor      # (N,) +1 lower lip (edge = highest), -1 upper lip (lowest), 0 corner (fixed)

    def to(self, device) -> LipStrips:
        return LipStrips(self.vertex_idx.to(device), self.valid.to(device), self.toward.to(device))


def _edge_graph(vertices: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    import scipy.sparse as sp

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    e = e[e[:, 0] != e[:, 1]]
    w = np.linalg.norm(vertices[e[:, 0]] - vertices[e[:, 1]], axis=1) + 1e-12
    n = len(vertices)
    return sp.coo_matrix((np.r_[w, w], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n)).tocsr()


def _walk(graph: sp.csr_matrix, verts: np.ndarray, start: int, length: float, ok, normal: np.ndarray,
          seen: set) -> list[int]:
    """Greedy walk of about ``length`` from ``start``: each step to the unseen neighbour accepted by
    ``ok(cur, k)`` that lies nearest to the plane through ``start`` with ``normal``."""
    out, cur, went = [], start, 0.0
    while went < length:
        nbr = [int(k) for k in graph.indices[graph.indptr[cur]:graph.indptr[cur + 1]] if k not in seen and ok(cur, k)]
        if not nbr:
            break
        k = min(nbr, key=lambda j: abs(float((verts[j] - verts[start]) @ normal)))
        went += float(np.linalg.norm(verts[k] - verts[cur]))
        out.append(k)
        seen.add(k)
        cur = k
    return out


def _strip(graph: sp.csr_matrix, verts: np.ndarray, outer: int, inner: int, outer_len: float,
           depth: float) -> list[int]:
    """Outward from the inner-lip vertex towards the outer one (geodesically nearer at each step), then
    from it into the mouth (geodesically further and backwards), both near the strip's plane."""
    from scipy.sparse.csgraph import dijkstra

    dist = dijkstra(graph, indices=outer)
    if not np.isfinite(dist[inner]):
        return [inner]
    d = verts[inner] - verts[outer]
    normal = np.cross([d[0], d[1], 0.0], [0.0, 0.0, 1.0])
    normal /= max(float(np.linalg.norm(normal)), 1e-12)
    seen = {inner}
    out = _walk(graph, verts, inner, outer_len, lambda c, k: dist[k] < dist[c], normal, seen)
    inside = _walk(graph, verts, inner, depth, lambda c, k: dist[k] > dist[c] and verts[k, 2] < verts[c, 2],
                   normal, seen)
    return out[::-1] + [inner] + inside


def derive_lip_strips(vertices: np.ndarray, faces: np.ndarray, outer_seeds, inner_seeds,
                      units_per_metre: float = 1.0, toward=INNER_TOWARD) -> LipStrips:
    """Strips for each (outer, inner) lip-vertex pair of the same lip position (rest ``vertices`` (V, 3),
    y up, z towards the camera; ``faces`` (F, 3)); ``toward`` the side of each point (0: a corner, kept
    fixed). See the module docstring."""
    verts = np.asarray(vertices, dtype=np.float64)
    graph = _edge_graph(verts, np.asarray(faces, dtype=np.int64))
    strips = []
    for o, i, t in zip(np.asarray(outer_seeds).tolist(), np.asarray(inner_seeds).tolist(), toward):
        if t == 0 or o == i:
            strips.append([i])
            continue
        strips.append(_strip(graph, verts, o, i, OUTER_M * units_per_metre, DEPTH_M * units_per_metre))
    width = max(len(s) for s in strips)
    idx = np.stack([np.pad(np.asarray(s), (0, width - len(s)), mode="edge") for s in strips])
    valid = np.stack([np.arange(width) < len(s) for s in strips])
    return LipStrips(torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(valid),
                     torch.tensor(toward, dtype=torch.float32))


def select_lip_edge(candidates: torch.Tensor, rotation: torch.Tensor, strips: LipStrips, softness: float,
                    rotated: bool = True) -> torch.Tensor:
    """(B, N, C, 3) candidate points and (B, 3, 3) head rotations (points are ``v @ R^T``, orthographic camera
    along z) -> (B, N, 3) visible edge points, rotated: per strip the softmax over candidates of their offset
    along the face's up direction in the image (sign ``toward``), temperature ``softness`` (model units).
    ``rotated=False``: the candidates are unrotated (rotation about the origin); the offsets are then taken
    along that direction brought into model space and only the N chosen points are rotated, which is
    cheaper than rotating every candidate. Differentiable in the points (the direction is held fixed)."""
    R = rotation.detach()
    up = R[:, :2, 1]
    up = up / up.norm(dim=-1, keepdim=True).clamp(min=1e-6)                    # (B, 2) face up in the image
    direction = torch.cat([up, torch.zeros_like(up[:, :1])], -1)              # (B, 3) in camera space
    if not rotated:
        direction = (R.transpose(1, 2) @ direction.unsqueeze(-1)).squeeze(-1)  # the same, in model space
    toward = strips.toward.to(candidates)[None, :, None]
    score = (candidates * direction[:, None, None, :]).sum(-1) * toward       # (B, N, C)
    bias = torch.zeros(strips.valid.shape, dtype=score.dtype, device=score.device)
    score = (score + bias.masked_fill(~strips.valid.to(score.device), float("-inf"))) / max(float(softness), 1e-9)
    # softmax written out: over a last dimension of ~10 it is several times faster than torch.softmax on CPU
    ex = torch.exp(score - score.detach().amax(-1, keepdim=True))
    w = ex / ex.sum(-1, keepdim=True)
    edge = (w.unsqueeze(-1) * candidates).sum(-2)
    return edge if rotated else edge @ rotation.transpose(1, 2)
