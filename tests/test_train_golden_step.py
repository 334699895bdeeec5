"""Golden case 6 Part B: one official ``Trainer.step`` (val and train phase) with the mocked renderer
(M1 albedo zeros, M2 the stored render tensors), through the real asset loaders and our step."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_helpers import write_synthetic_assets

from spectre.assets import AssetStore
from spectre.train.flame_step import build_flame_step
from spectre.train.step import LossWeights

pytestmark = pytest.mark.slow  # the module's fixture runs the official FLAME step on real weights (~12 s)

RTOL, ATOL = 1e-4, 1e-6  # golden README: scalar losses, features, codes


@pytest.fixture(scope="module")
def golden(golden_dir):
    return np.load(golden_dir / "losses.npz")


@pytest.fixture(scope="module")
def assets(tmp_path_factory, golden_dir, golden_weights, flame_assets):
    return write_synthetic_assets(tmp_path_factory.mktemp("train_assets"), golden_dir, golden_weights, flame_assets)


def u8(a):
    return torch.from_numpy(a.astype(np.float32) / np.float32(255))


def mock_render(g):
    images, alpha = u8(g["B_mock_render_images_u8"]), u8(g["B_mock_render_alpha_images_u8"])
    grid = torch.from_numpy(g["B_mock_render_grid"])
    return lambda verts, crop_verts, codes: (images, alpha, grid)


def close(a, b, rtol=RTOL, atol=ATOL, what=""):
    a = a.detach().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)
    np.testing.assert_allclose(a, np.asarray(b, np.float64).reshape(a.shape), rtol=rtol, atol=atol, err_msg=what)


@pytest.fixture(scope="module")
def step(golden, assets):
    return build_flame_step(AssetStore(assets), LossWeights(), init="spectre", render=mock_render(golden))


@pytest.fixture(scope="module")
def runs(golden, step):
    """A val step (eval mode: changes nothing), the same clip twice in one batch (eval mode), then a
    train step with backward, on the loaded weights."""
    assert torch.equal(step.uv_face_eye_mask, torch.from_numpy(golden["B_uv_face_eye_mask"]))
    batch = {"image": u8(golden["B_in_image_u8"]), "landmark": torch.from_numpy(golden["B_in_landmark"])}
    out = {}
    step.set_train(False)
    with torch.no_grad():
        out["val"] = (step, step(batch, train=False))
        images, alpha, grid = mock_render(golden)(None, None, None)
        step.render = lambda v, c, k: (images.repeat(2, 1, 1, 1), alpha.repeat(2, 1, 1, 1), grid.repeat(2, 1, 1, 1))
        lip, emo = step.criteria.lipreader, step.criteria.emotion
        step.criteria.lipreader = step.criteria.emotion = None  # not needed for this check; keeps it fast
        twice = {k: torch.cat([v, v]) for k, v in batch.items()}
        out["twice"] = (step, step(twice, train=False))
        step.criteria.lipreader, step.criteria.emotion = lip, emo
        step.render = mock_render(golden)
    step.set_train(True)
    res = step(batch, train=True)
    res.total.backward()
    out["train"] = (step, res)
    return out


LOSS_KEYS = ("landmark", "relative_landmark", "lip_landmarks", "photometric_texture", "expression", "lipread",
             "expression_reg", "jaw_reg")


@pytest.mark.parametrize("phase", ["val", "train"])
def test_losses_and_total(runs, golden, phase):
    _, res = runs[phase]
    for k in LOSS_KEYS:
        close(res.losses[k], golden[f"B_{phase}_loss_{k}"], what=k)
    close(res.extras["expression_reg_weighted"], golden[f"B_{phase}_expression_reg_weighted"])
    close(res.total, golden[f"B_{phase}_loss_all_loss"], what="all_loss")


@pytest.mark.parametrize("phase", ["val", "train"])
def test_codes_features_and_crops(runs, golden, phase):
    _, res = runs[phase]
    x = res.extras
    g = lambda k: golden[f"B_{phase}_{k}"]  # noqa: E731
    close(x["deca"]["exp"], g("deca_exp"), 1e-4, 1e-4)
    close(x["deca"]["pose"][:, 3:], g("deca_jaw"), 1e-4, 1e-4)
    close(x["exp_res"][0], g("E_expression_exp"), 1e-4, 1e-4)
    close(x["jaw_res"][0], g("E_expression_jaw"), 1e-4, 1e-4)
    for k in ("exp", "pose", "cam", "shape"):
        close(x["codes"][k], g(f"code_{k}"), 1e-4, 1e-4, what=k)
    close(x["landmarks2d"], g("op_landmarks2d"), 1e-4, 1e-5)
    close(x["verts"], g("op_verts"), 1e-4, 1e-5)
    close(x["mouths_gt"][0], g("op_mouths_gt"), 1e-4, 1e-5)
    close(x["mouths_pred"][0], g("op_mouths_pred"), 1e-4, 1e-5)
    close(x["lip_gt"], g("lip_feats_gt"), 1e-4, 1e-4)
    close(x["lip_pred"], g("lip_feats_pred"), 1e-4, 1e-4)
    close(x["emo_gt"], g("emo_feats_gt"), 1e-4, 1e-4)
    close(x["emo_pred"], g("emo_feats_pred"), 1e-4, 1e-4)
    if phase == "val":
        close(x["predicted_images"][2:5], golden["B_val_op_predicted_images_frames2to4"], 1e-5, 1e-6)


def test_train_gradients_and_bn_statistics(runs, golden, golden_dir):
    step, _ = runs["train"]
    named = dict(step.trainable.named_parameters())
    for k in ("temporal.1.weight", "temporal.1.bias", "layers.0.weight", "layers.0.bias"):
        ref = golden[f"B_train_grad_{k}"]
        np.testing.assert_allclose(named[k].grad.numpy(), ref, rtol=0, atol=1e-3 * np.abs(ref).max(), err_msg=k)
    names = json.loads((golden_dir / "losses_grad_norm_keys.json").read_text())
    assert names == [n for n, _ in step.trainable.named_parameters()]
    ref = golden["B_train_grad_norms_f64"]
    ours = np.array([float(named[n].grad.double().norm()) if named[n].grad is not None else 0.0 for n in names])
    big = ref >= 0.01 * ref.max()  # the rest are structurally-zero gradients (rounding noise)
    assert big.sum() > 50
    np.testing.assert_allclose(ours[big], ref[big], rtol=5e-3)
    np.testing.assert_allclose(step.trainable.temporal[1].running_mean.numpy(),
                               golden["B_train_after_step_temporal_bn_running_mean"], rtol=1e-4, atol=1e-6)


def test_clips_in_a_batch_are_not_mixed(runs):
    """A batch of B=2 clips gives each clip exactly its single-clip codes and losses: the temporal
    convolution and the loss frames 2..K-3 are per clip (the official code flattens the batch into one
    sequence, SPEC §9.3, which would mix the clips at their border)."""
    _, one = runs["val"]
    _, two = runs["twice"]
    for b in range(2):
        torch.testing.assert_close(two.extras["exp_res"][b], one.extras["exp_res"][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(two.extras["jaw_res"][b], one.extras["jaw_res"][0], rtol=1e-4, atol=1e-5)
    for k in ("landmark", "relative_landmark", "lip_landmarks", "jaw_reg", "expression_reg"):
        torch.testing.assert_close(two.losses[k], one.losses[k], rtol=1e-4, atol=1e-6)
