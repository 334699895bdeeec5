#!/usr/bin/env python
"""Build the compact ICT face model that ships inside the package (``src/spectre/data/ict_compact.npz``).

Input: the full ``ict_face_model.npz`` (``spectre assets convert-ict`` output, or the shared copy).
What is kept: the parts a talking-face reconstruction needs (face skin, mouth socket, eye sockets,
gums and tongue, teeth, eyeballs). Dropped: the back of the head and neck, lacrimal fluid, eye blend
and eye occlusion shells and the eyelash strips. All 100 identity modes and 53 expression
blendshapes are kept; their deltas are quantised to int8 with one float32 scale per
(component, block of up to 2048 vertices of one part), which keeps the file small with sub-0.2 mm error (printed at the end).

Usage: PYTHONPATH=src python scripts/make_compact_ict.py [--source FULL.npz] [--out PATH]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "spectre" / "data" / "ict_compact.npz"
LICENSE_OUT = REPO / "src" / "spectre" / "data" / "ICT_LICENSE.txt"

KEEP_PARTS = ("Face", "Mouth socket", "Eye socket left", "Eye socket right", "Gums and tongue", "Teeth",
              "Eyeball left", "Eyeball right")
FORMAT = "spectre-ict-compact-1"
BLOCK = 2048  # vertices per quantisation scale


def quant_blocks(part_ranges: np.ndarray, size: int = BLOCK) -> np.ndarray:
    """Quantisation blocks: each part cut into runs of at most ``size`` vertices (half-open ranges)."""
    edges = []
    for a, b in part_ranges:
        edges.extend(range(int(a), int(b), size))
    edges.append(int(part_ranges[-1][1]))
    return np.stack([edges[:-1], edges[1:]], axis=1).astype(np.int32)


def quantise(deltas: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and (K, nblocks) scales so that ``codes * scale[k, block(v)]`` approximates ``deltas``."""
    K = deltas.shape[0]
    codes = np.zeros(deltas.shape, dtype=np.int8)
    scales = np.zeros((K, len(blocks)), dtype=np.float32)
    for p, (a, b) in enumerate(blocks):
        block = deltas[:, a:b]
        s = np.abs(block).reshape(K, -1).max(axis=1) / 127.0
        s = np.where(s > 0, s, 1.0).astype(np.float32)
        codes[:, a:b] = np.clip(np.round(block / s[:, None, None]), -127, 127).astype(np.int8)
        scales[:, p] = s
    return codes, scales


def dequantise(codes: np.ndarray, scales: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    out = np.empty(codes.shape, dtype=np.float32)
    for p, (a, b) in enumerate(blocks):
        out[:, a:b] = codes[:, a:b].astype(np.float32) * scales[:, p, None, None]
    return out


def build(full: dict) -> tuple[dict, dict]:
    names = [str(n) for n in full["part_names"]]
    vranges = full["part_vertex_range"].astype(np.int64)   # half-open [start, end)
    franges = full["part_face_range"].astype(np.int64)
    keep = [names.index(n) for n in KEEP_PARTS]
    vertex_map = np.concatenate([np.arange(*vranges[p]) for p in keep])
    new_index = np.full(len(full["neutral_vertices"]), -1, dtype=np.int64)
    new_index[vertex_map] = np.arange(len(vertex_map))
    sizes = [vranges[p][1] - vranges[p][0] for p in keep]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    part_ranges = np.stack([starts[:-1], starts[1:]], axis=1)

    # triangles of the kept parts, remapped; their part id (index into KEEP_PARTS)
    tri_face = full["triangle_to_face"].astype(np.int64)
    tri_part_full = np.searchsorted(franges[:, 1], tri_face, side="right")
    keep_tri = np.isin(tri_part_full, keep)
    tris = full["triangles"][keep_tri].astype(np.int64)
    assert (new_index[tris] >= 0).all(), "a kept triangle uses a dropped vertex"
    tri_part = np.array([keep.index(p) for p in tri_part_full[keep_tri]], dtype=np.uint8)
    uv_tris = full["uv_triangles"][keep_tri].astype(np.int64)
    used_uv, uv_tris_new = np.unique(uv_tris, return_inverse=True)

    ident = full["identity_deltas"][:, vertex_map].astype(np.float32)
    expr = full["expression_deltas"][:, vertex_map].astype(np.float32)
    blocks = quant_blocks(part_ranges)
    id_codes, id_scale = quantise(ident, blocks)
    ex_codes, ex_scale = quantise(expr, blocks)

    def remap(key):
        idx = new_index[full[key].astype(np.int64)]
        assert (idx >= 0).all(), key
        return idx.astype(np.int32)

    out = {
        "format": np.array(FORMAT),
        "neutral_vertices": full["neutral_vertices"][vertex_map].astype(np.float32),
        "vertex_map": vertex_map.astype(np.int32),
        "identity_codes": id_codes, "identity_scale": id_scale,
        "expression_codes": ex_codes, "expression_scale": ex_scale, "quant_block_range": blocks,
        "expression_names": full["expression_names"], "expression_arkit_names": full["expression_arkit_names"],
        "triangles": new_index[tris].astype(np.int32), "triangle_part": tri_part,
        "uv_coords": full["uv_coords"][used_uv].astype(np.float32),
        "uv_triangles": uv_tris_new.reshape(-1, 3).astype(np.int32),
        "part_names": np.array(KEEP_PARTS), "part_vertex_range": part_ranges.astype(np.int32),
        "landmarks68_vertex_idx": remap("landmarks68_vertex_idx"),
        "license": full["license"], "source": full["source"], "units": full["units"],
        "attribution": np.array("ICT Face Model Light, ICT-FaceKit (github ICT-VGL/ICT-FaceKit), "
                                "Copyright (c) 2020 USC Institute for Creative Technologies, MIT License; "
                                "compacted for spectre by scripts/make_compact_ict.py"),
    }
    for key in ("jawline_left_vertex_idx", "jawline_right_vertex_idx", "jawline_left_extended_vertex_idx",
                "jawline_right_extended_vertex_idx"):
        out[key] = remap(key)
    report = {"ident": (ident, dequantise(id_codes, id_scale, blocks)),
              "expr": (expr, dequantise(ex_codes, ex_scale, blocks))}
    return out, report


def measure(full: dict, out: dict, report: dict, n: int = 200, seed: int = 0) -> dict:
    """Max/mean vertex error (cm) of compact vs full on random faces (identity ~ N(0,1), expression U(0,1))."""
    rs = np.random.RandomState(seed)
    ident, ident_q = report["ident"]
    expr, expr_q = report["expr"]
    errs = []
    for _ in range(n // 20):
        a = np.clip(rs.randn(20, ident.shape[0]), -3, 3).astype(np.float32)
        e = rs.rand(20, expr.shape[0]).astype(np.float32)
        ref = np.tensordot(a, ident, 1) + np.tensordot(e, expr, 1)
        got = np.tensordot(a, ident_q, 1) + np.tensordot(e, expr_q, 1)
        errs.append(np.linalg.norm(ref - got, axis=-1))
    err = np.concatenate(errs)
    return {"max_cm": float(err.max()), "mean_cm": float(err.mean()),
            "identity_delta_max_cm": float(np.abs(ident - ident_q).max()),
            "expression_delta_max_cm": float(np.abs(expr - expr_q).max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_src = Path(os.environ.get("SPECTRE_HOME", REPO.parent / "shared" / "assets")) / "ict_facekit" / \
        "ict_face_model.npz"
    ap.add_argument("--source", default=str(default_src), help="full ICT npz (default: %(default)s)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    with np.load(args.source, allow_pickle=False) as f:
        full = {k: f[k] for k in f.files}
    out, report = build(full)
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    Path(args.out).write_bytes(buf.getvalue())
    if Path(args.out).resolve() == DEFAULT_OUT.resolve():
        LICENSE_OUT.write_text(
            "The bundled face model ict_compact.npz is derived from the ICT Face Model Light of ICT-FaceKit\n"
            "(https://github.com/ICT-VGL/ICT-FaceKit, folder FaceXModel). It is a subset of its vertices with\n"
            "quantised blendshape deltas, made by scripts/make_compact_ict.py. Its licence:\n\n"
            + str(full["license"]).strip() + "\n")
    m = measure(full, out, report)
    nv, nf = len(out["neutral_vertices"]), len(out["triangles"])
    print(f"wrote {args.out}: {len(buf.getvalue()) / 1e6:.2f} MB, {nv} vertices (of {len(full['neutral_vertices'])}), "
          f"{nf} triangles")
    print(f"compact vs full (200 random faces, identity N(0,1) clipped to 3, expression U(0,1)): "
          f"max {m['max_cm'] * 10:.3f} mm, mean {m['mean_cm'] * 10:.4f} mm; per-delta max: identity "
          f"{m['identity_delta_max_cm'] * 10:.4f} mm, expression {m['expression_delta_max_cm'] * 10:.4f} mm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
