"""SPECTRE perceptual encoder + combination with DECA: golden case 3 (encoder parts) through
``load_spectre`` on spectre_model.tar files written in both official layouts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from nets_helpers import assert_close, golden_state_dict, load_keys, u8_images

from spectre.assets import AssetStore
from spectre.nets.checkpoints import load_spectre
from spectre.nets.deca import split_deca_params
from spectre.nets.perceptual import PerceptualEncoder, combine_with_deca


@pytest.fixture(scope="module")
def spectre_weights(golden_dir, golden_weights):
    keys = load_keys(golden_dir, "spectre_model_keys.json")
    return {part: golden_state_dict(golden_weights, keys[part], part + ".") for part in ("E_flame", "E_expression")}


@pytest.fixture(scope="module")
def golden(golden_dir):
    return np.load(golden_dir / "spectre_encoder.npz")


def _store(root, payload) -> AssetStore:
    (root / "spectre").mkdir(parents=True)
    torch.save(payload, root / "spectre" / "spectre_model.tar")
    return AssetStore(root)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, spectre_weights):
    """Training-checkpoint layout (with opt/global_step) loaded through the asset registry."""
    payload = dict(spectre_weights, opt={"state": {}}, global_step=10000, batch_size=1)
    return load_spectre(_store(tmp_path_factory.mktemp("spectre_plain"), payload))


def test_perceptual_encoder_matches_golden(loaded, golden):
    deca, perceptual = loaded
    images = u8_images(golden["in_images_u8"])
    with torch.no_grad():
        feats = perceptual.frame_features(images)
        assert_close(feats, golden["mobilenet_features_pooled"])
        assert_close(perceptual.temporal(feats.T.unsqueeze(0)), golden["temporal_out"])
        exp, jaw = perceptual(images)
        exp5, jaw5 = perceptual(images.unsqueeze(0))
        deca_params = deca(images)
    assert exp.shape == (7, 50) and jaw.shape == (7, 3) and exp5.shape == (1, 7, 50)
    assert_close(exp, golden["expr_exp"])
    assert_close(jaw, golden["expr_jaw"])
    assert_close(exp5, golden["expr_exp_5d"])
    assert_close(jaw5, golden["expr_jaw_5d"])
    assert_close(deca_params, golden["deca_params"])

    final = combine_with_deca(split_deca_params(deca_params), exp, jaw)
    for name in ("shape", "tex", "exp", "pose", "cam", "light"):
        assert_close(final[name], golden[f"final_{name}"])


def test_state_dict_layout_loads_identically(tmp_path, spectre_weights, loaded, golden):
    inner = {f"deca.{part}.{k}": v for part, sd in spectre_weights.items() for k, v in sd.items()}
    _, perceptual = load_spectre(_store(tmp_path, {"state_dict": inner}))
    images = u8_images(golden["in_images_u8"][:5])
    with torch.no_grad():
        a, b = perceptual(images), loaded[1](images)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_batched_clips_are_not_mixed(loaded, golden):
    """SPEC §9.3 fixed: clip 2 of a (B,T) batch gives what clip 2 alone gives."""
    perceptual = loaded[1]
    images = u8_images(golden["in_images_u8"])
    clip_a, clip_b = images[:4], images[3:]
    with torch.no_grad():
        exp_b, jaw_b = perceptual(torch.stack([clip_a, clip_b]))
        alone_exp, alone_jaw = perceptual(clip_b)
        flat_exp, _ = perceptual(torch.cat([clip_a, clip_b]))  # what the official flattening computes
    torch.testing.assert_close(exp_b[1], alone_exp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(jaw_b[1], alone_jaw, atol=1e-5, rtol=1e-5)
    assert (flat_exp[4:6] - alone_exp[:2]).abs().max() > 1e-3  # the concatenation would leak across clips
    assert (jaw_b[..., 0] >= 0).all()


def test_combination_semantics():
    codes = {"shape": torch.zeros(2, 100), "tex": torch.zeros(2, 50), "exp": torch.ones(2, 50),
             "pose": torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]] * 2), "cam": torch.ones(2, 3),
             "light": torch.zeros(2, 9, 3)}
    exp_res = torch.full((2, 50), 0.5, requires_grad=True)
    jaw_res = torch.tensor([[1.0, 2.0, 3.0]] * 2, requires_grad=True)
    out = combine_with_deca(codes, exp_res, jaw_res)
    assert torch.allclose(out["exp"], torch.full((2, 50), 1.5))
    assert torch.allclose(out["pose"], torch.tensor([[0.1, 0.2, 0.3, 1.4, 2.5, 3.6]] * 2))
    assert out["cam"] is codes["cam"] and out["shape"] is codes["shape"]
    (out["exp"].sum() + out["pose"].sum()).backward()
    assert exp_res.grad is not None and jaw_res.grad is not None


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match="T,3,H,W"):
        PerceptualEncoder()(torch.zeros(3, 224, 224))
