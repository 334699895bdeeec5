"""DECA coarse encoder: golden case 2 through the public loader on a deca_model.tar in the official layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from nets_helpers import assert_close, golden_state_dict, load_keys, u8_images

from spectre.assets import AssetStore
from spectre.nets.checkpoints import load_deca
from spectre.nets.deca import DECA_PARAM_SPLIT, split_deca_params


@pytest.fixture(scope="module")
def deca_store(tmp_path_factory, golden_dir, golden_weights):
    keys = load_keys(golden_dir, "deca_encoder_keys.json")["keys"]
    root = tmp_path_factory.mktemp("deca_assets")
    (root / "deca").mkdir()
    # deca_model.tar holds E_flame plus the (unused) detail networks
    torch.save({"E_flame": golden_state_dict(golden_weights, keys, "E_flame."),
                "E_detail": {"layers.0.weight": torch.zeros(2, 2)}, "D_detail": {}},
               root / "deca" / "deca_model.tar")
    return AssetStore(root)


@pytest.fixture(scope="module")
def golden(golden_dir):
    return np.load(golden_dir / "deca_encoder.npz")


def test_deca_encoder_matches_golden(deca_store, golden):
    model = load_deca(deca_store)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    images = u8_images(golden["in_images_u8"])
    with torch.no_grad():
        assert_close(model.features(images), golden["encoder_features"])
        params = model(images)
    assert_close(params, golden["params"])
    codes = split_deca_params(params)
    for name, _ in DECA_PARAM_SPLIT:
        assert_close(codes[name], golden[f"code_{name}"])


def test_split_deca_params_layout():
    params = torch.arange(2 * 236, dtype=torch.float32).reshape(2, 236)
    codes = split_deca_params(params)
    assert {k: tuple(v.shape) for k, v in codes.items()} == {
        "shape": (2, 100), "tex": (2, 50), "exp": (2, 50), "pose": (2, 6), "cam": (2, 3), "light": (2, 9, 3)}
    assert codes["pose"][0, 0].item() == 200 and codes["cam"][0, 0].item() == 206
    assert codes["light"][1, 0, 0].item() == 236 + 209
    with pytest.raises(ValueError, match="236"):
        split_deca_params(torch.zeros(1, 235))
