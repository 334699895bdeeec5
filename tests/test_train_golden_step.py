"""Golden case 6 Part B: one official ``Trainer.step`` (val and train phase) with the mocked renderer
(M1 albedo zeros, M2 the stored render tensors), through the real asset loaders and our step."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train_helpers import write_synthetic_assets
from spectre.assets import AssetStore
from spectre.train.step import LossWeights, SpectreStep, build_flame_step

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
    """A val step (eval mode: changes nothing), then a train step with backward, on the loaded weights."""
    assert torch.equal(step.uv_face_eye_mask, torch.from_numpy(golden["B_uv_face_eye_mask"]))
    out = {}
    for phase in ("val", "train"):
        batch = {"image": u8(golden["B_in_image_u8"]), "landmark": torch.from_numpy(golden["B_in_landmark"])}
        step.set_train(phase == "train")
        if phase == "train":
            res = step(batch, train=True)
            res.total.backward()
        else:
            with torch.no_grad():
                res = step(batch, train=False)
        out[phase] = (step, res)
    yield out
    step.render = mock_render(golden)


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


def test_per_clip_batch_matches_two_single_clips(golden, step, runs):
    """B=2 clips in one batch give each clip the losses it gets alone (no mixing, SPEC §9.3)."""
    img, lmk = u8(golden["B_in_image_u8"]), torch.from_numpy(golden["B_in_landmark"])
    rev = (img.flip(1), lmk.flip(1))

    def render2(verts, crop_verts, codes):
        i, a, gr = mock_render(golden)(None, None, None)
        n = verts.shape[0] // 7
        return i.repeat(n, 1, 1, 1), a.repeat(n, 1, 1, 1), gr.repeat(n, 1, 1, 1)

    step.render = render2
    step.criteria.emotion = step.criteria.lipreader = None  # not needed here; keeps the test fast
    step.set_train(False)
    with torch.no_grad():
        both = step({"image": torch.cat([img, rev[0]]), "landmark": torch.cat([lmk, rev[1]])}, train=False)
        one = step({"image": img, "landmark": lmk}, train=False)
        two = step({"image": rev[0], "landmark": rev[1]}, train=False)
    torch.testing.assert_close(both.extras["exp_res"][0], one.extras["exp_res"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both.extras["exp_res"][1], two.extras["exp_res"][0], rtol=1e-4, atol=1e-5)
    for k in ("landmark", "relative_landmark", "jaw_reg"):
        torch.testing.assert_close(both.losses[k], (one.losses[k] + two.losses[k]) / 2, rtol=1e-4, atol=1e-6)
