"""Inference fast path: BatchNorm folding is exact (to float rounding) on the golden weights and inputs,
and the reduced-precision path stays close to float32."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from nets_helpers import golden_state_dict, load_keys, u8_images

from spectre.device import Runtime
from spectre.nets.checkpoints import perceptual_from_state_dict
from spectre.nets.fast import fold_batchnorms, prepare_for_inference
from spectre.nets.lipreader import VisualFrontend


@pytest.fixture(scope="module")
def perceptual(golden_dir, golden_weights):
    keys = load_keys(golden_dir, "spectre_model_keys.json")["E_expression"]
    return perceptual_from_state_dict(golden_state_dict(golden_weights, keys, "E_expression."))


@pytest.fixture(scope="module")
def images(golden_dir):
    return u8_images(np.load(golden_dir / "spectre_encoder.npz")["in_images_u8"][:3])


def test_fold_batchnorms_is_exact_and_leaves_original(perceptual, images):
    with torch.no_grad():
        ref_exp, ref_jaw = perceptual(images)
    fast = prepare_for_inference(perceptual, Runtime.create("cpu", "fp32"))
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fast.module.modules())
    assert n_bn == 0  # every BatchNorm of MobileNetV2 and the temporal head was folded
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in perceptual.modules())  # original untouched
    exp, jaw = fast(images)
    assert exp.dtype == torch.float32
    scale = ref_exp.abs().max()
    assert (exp - ref_exp).abs().max() / scale < 1e-5
    assert (jaw - ref_jaw).abs().max() / scale < 1e-5


def test_fold_covers_attribute_pairs_and_3d():
    torch.manual_seed(0)
    front = VisualFrontend().eval()
    for m in front.modules():  # non-trivial statistics so that folding matters
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 6, 88, 88)
    with torch.no_grad():
        ref = front(x)
        assert fold_batchnorms(front) == 1 + 2 * 8 + 3  # frontend3D, 8 BasicBlocks, 3 downsamples
        torch.testing.assert_close(front(x), ref, atol=1e-4, rtol=1e-4)


def test_reduced_precision_drift_is_small(perceptual, images):
    with torch.no_grad():
        ref_exp, _ = perceptual(images)
    fast = prepare_for_inference(perceptual, Runtime.create("cpu", "bf16"))
    exp, _ = fast(images)
    assert exp.dtype == torch.float32
    assert (exp - ref_exp).abs().max() / ref_exp.abs().max() < 3e-2  # bf16 keeps ~3 significant digits
