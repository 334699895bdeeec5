"""Emotion network: golden case 5 through ``load_emotion`` on an EMOCA Lightning .ckpt in the official layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from nets_helpers import assert_close, golden_state_dict, load_keys, u8_images

from spectre.assets import AssetStore
from spectre.nets.checkpoints import load_emotion


@pytest.fixture(scope="module")
def emotion_store(tmp_path_factory, golden_dir, golden_weights):
    keys = load_keys(golden_dir, "emotion_keys.json")["emoca_checkpoint_state_dict"]
    root = tmp_path_factory.mktemp("emotion_assets")
    target = root / "ResNet50/checkpoints/deca-epoch=01-val_loss_total/dataloader_idx_0=1.27607644.ckpt"
    target.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "global_step": 1234, "pytorch-lightning_version": "1.4.0",
                "state_dict": golden_state_dict(golden_weights, keys, "emotion."),
                "hyper_parameters": {"n_expression": 10}}, target)
    return AssetStore(root)


def test_emotion_features_match_golden(emotion_store, golden_dir):
    golden = np.load(golden_dir / "emotion.npz")
    net = load_emotion(emotion_store)
    assert not net.training
    images = u8_images(golden["in_images_u8"])
    with torch.no_grad():
        feats = net(images)
        assert_close(feats, golden["spectre_features"])
        assert_close(net.head(images), golden["spectre_linear_out"])
    # SPECTRE runs EMOCA's weights through DECA's ResNet variant: not EMOCA's own numbers
    assert np.abs(feats.numpy() - golden["emoca_native_emo_feat_2"][:, :, 0, 0]).max() > 1e-3
