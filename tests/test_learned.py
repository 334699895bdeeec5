"""Learned backend: the official chunking of SPEC §1.5 and (when nets land) the end-to-end inference."""
from __future__ import annotations

import numpy as np
import pytest

from spectre.reconstruct.chunking import plan_chunks


def official_demo_outputs(T, L=50):
    """The official demo's bookkeeping, restated from SPEC §1.5: pad 2+2, chunks of L every L-4, a tail
    under 5 frames merged, 2 outputs trimmed at inner borders, then the concatenation trimmed [2:-2].
    Returns the input frame each final output belongs to."""
    padded = [0, 0] + list(range(T)) + [T - 1, T - 1]
    idx = list(range(len(padded)))
    chunks = [idx[i:i + L] for i in range(0, len(idx), L - 4)]
    if len(chunks) > 1 and len(chunks[-1]) < 5:
        chunks[-2] = sorted(set(chunks[-2] + chunks[-1]))
        chunks = chunks[:-1]
    outs = []
    for c, ch in enumerate(chunks):
        if len(chunks) == 1:
            kept = ch
        elif c == 0:
            kept = ch[:-2]
        elif c == len(chunks) - 1:
            kept = ch[2:]
        else:
            kept = ch[2:-2]
        outs += [padded[i] for i in kept]
    return outs[2:-2]


@pytest.mark.parametrize("T", [1, 2, 3, 7, 45, 46, 47, 50, 51, 92, 93, 96, 97, 100, 137, 138, 139, 140, 250])
def test_plan_matches_official_bookkeeping(T):
    plan = plan_chunks(T)
    outs = np.concatenate([c.out_frames for c in plan]).tolist()
    assert outs == official_demo_outputs(T)
    assert outs == list(range(T)), "every input frame gets exactly one output, in order"
    for c in plan:
        assert len(c.frames) <= 50 + 4
        assert c.keep_to - c.keep_from == len(c.out_frames)
        assert (c.frames[c.keep_from:c.keep_to] == c.out_frames).all()


def test_inner_chunk_borders_drop_two_outputs_and_tail_merges():
    plan = plan_chunks(100)  # padded 104 -> starts 0, 46, 92 (12 frames: kept as its own chunk)
    assert [len(c.frames) for c in plan] == [50, 50, 12]
    assert plan[0].keep_from == 2 and plan[0].keep_to == 48  # padding dropped, last 2 trimmed
    assert plan[1].keep_from == 2 and plan[1].keep_to == 48
    assert plan[2].keep_from == 2 and plan[2].keep_to == 10  # first 2 trimmed, end padding dropped
    merged = plan_chunks(134)  # padded 138 -> tail chunk at 138 is empty; 92..137 = 46 frames
    short = plan_chunks(135)   # padded 139 -> tail of 1 frame (< 5) merged into the previous chunk
    assert len(short) == len(merged) == 3 and len(short[-1].frames) == 47


def test_single_chunk_keeps_all_but_padding():
    (c,) = plan_chunks(10)
    assert c.frames.tolist() == [0, 0] + list(range(10)) + [9, 9]
    assert (c.keep_from, c.keep_to) == (2, 12)


# ---------------------------------------------------------------------------------------------
# end to end with the golden synthetic weights and the synthetic FLAME

@pytest.fixture(scope="module")
def learned_assets(flame_assets, golden_dir, golden_weights, tmp_path_factory):
    """flame_assets + a synthetic spectre_model.tar in the official layout (golden det weights)."""
    import json

    import torch

    from spectre.assets import AssetStore

    keys = json.loads((golden_dir / "spectre_model_keys.json").read_text())
    sd = {part: {k: torch.from_numpy(golden_weights.det_tensor(f"{part}.{k}", tuple(s)))
                 for k, s in keys[part].items()} for part in ("E_flame", "E_expression")}
    tar = tmp_path_factory.mktemp("ckpt") / "spectre_model.tar"
    torch.save(sd, tar)
    AssetStore(flame_assets).add("spectre", tar)
    return flame_assets


@pytest.fixture(scope="module")
def backend(learned_assets):
    from spectre.assets import AssetStore
    from spectre.device import Runtime
    from spectre.models import load_face_model
    from spectre.reconstruct.config import LearnedConfig
    from spectre.reconstruct.learned import LearnedBackend

    store = AssetStore(learned_assets)
    model = load_face_model("flame", store)
    return LearnedBackend(model, store, Runtime.create("cpu", "fp32"), LearnedConfig(fast=False))


def test_encode_matches_official_codes_on_golden_images(backend, golden_dir):
    """One chunk, no padding effect on the middle frames: the combined codes equal the golden official
    SPECTRE outputs for the same 7 images (golden spectre_encoder.npz, atol/rtol 1e-4)."""
    import torch

    g = np.load(golden_dir / "spectre_encoder.npz")
    images = torch.from_numpy(g["in_images_u8"].astype(np.float32) / np.float32(255))
    codes = backend.encode(7, lambda pos: images[torch.as_tensor(pos)])
    # the demo pads 2 copies of the end frames, so only frames 2..4 see exactly the golden context
    np.testing.assert_allclose(codes["shape"], g["final_shape"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(codes["cam"], g["final_cam"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(codes["exp"][2:5], g["final_exp"][2:5], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(codes["pose"][2:5], g["final_pose"][2:5], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_chunked_outputs_do_not_depend_on_chunk_length(backend, golden_dir):
    """The temporal convolution sees ±2 frames; trimming 2 outputs at chunk borders makes short chunks
    give exactly the single-chunk result (and every frame exactly one output)."""
    import dataclasses

    import torch

    g = np.load(golden_dir / "spectre_encoder.npz")
    base = torch.from_numpy(g["in_images_u8"].astype(np.float32) / np.float32(255))
    images = torch.cat([base, base.flip(0)])  # 14 frames
    one = backend.encode(14, lambda pos: images[torch.as_tensor(pos)])
    old = backend.cfg
    backend.cfg = dataclasses.replace(old, chunk_length=8)
    try:
        seen = []

        def provider(pos):
            seen.extend(int(p) for p in pos)
            return images[torch.as_tensor(pos)]
        many = backend.encode(14, provider)
    finally:
        backend.cfg = old
    assert seen == sorted(set(seen)), "frames are requested once, in order (streamable)"
    for k in ("exp", "pose", "shape", "cam"):
        np.testing.assert_allclose(many[k], one[k], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_learned_backend_end_to_end_from_the_cli(learned_assets, sample_videos, tmp_path):
    from spectre.cli import main
    from spectre.io.results import load_face_npz

    video = sample_videos.get("OzA6jRYjVQs_00004")
    if video is None:
        pytest.skip("sample OzA6jRYjVQs_00004 not found")
    out = tmp_path / "out"
    code = main(["reconstruct", str(video), "-o", str(out), "--backend", "learned", "--assets", str(learned_assets),
                 "--layout", "none", "--device", "cpu", "--quiet"])
    assert code == 0
    r = load_face_npz(out / f"{video.stem}.npz")
    T = len(r["valid"])
    assert r["model"] == "flame" and r["backend"] == "learned"
    assert r["params"]["shape"].shape == (T, 100) and r["params"]["jaw_pose"].shape == (T, 3)
    assert r["landmarks2d"].shape == (T, 68, 2) and np.isfinite(r["landmarks2d"]).all()
    assert (out / f"{video.stem}_arkit.csv").exists()


def test_learned_backend_needs_its_assets(tmp_path, sample_videos, capsys):
    from spectre.cli import main

    video = next(iter(sample_videos.values()))
    code = main(["reconstruct", str(video), "-o", str(tmp_path / "o"), "--backend", "learned",
                 "--assets", str(tmp_path), "--layout", "none", "--quiet"])
    assert code == 3
    err = capsys.readouterr().err
    assert "missing asset" in err and "flame" in err


def test_model_follows_the_backend_unless_given():
    from spectre.errors import ConfigError
    from spectre.reconstruct.config import ReconstructConfig

    assert ReconstructConfig().validate().model == "ict"
    assert ReconstructConfig(backend="learned").validate().model == "flame"
    # the learned backend runs an ICT encoder too (a trained `ict-encoder` checkpoint), so --model ict is kept
    assert ReconstructConfig(backend="learned", model="ict").validate().model == "ict"
    with pytest.raises(ConfigError, match="not allowed"):
        ReconstructConfig(backend="learned", model="nonexistent").validate()
