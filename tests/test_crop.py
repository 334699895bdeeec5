"""Official face crop and lipreader mouth crop against the golden vectors (golden README §6, §6b)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spectre.errors import InputError
from spectre.faces.crop import (
    cut_mouth,
    estimate_similarity,
    face_crop_transform,
    interpolate_landmarks,
    mouth_transform,
    transform_points,
    warp_crop,
    warp_crop_fast,
)


@pytest.fixture(scope="module")
def crop_golden(golden_dir):
    return dict(np.load(golden_dir / "face_crop.npz"))


@pytest.fixture(scope="module")
def loss_golden(golden_dir):
    g = np.load(golden_dir / "losses.npz")
    return {k: g[k] for k in g.files if k.startswith("A_mouth")}


def test_interpolate_landmarks_golden(crop_golden):
    raw, valid = crop_golden["in_raw_landmarks"], crop_golden["in_raw_landmarks_valid"]
    want = crop_golden["interpolated_landmarks_f64"]
    as_list = [raw[i] if valid[i] else None for i in range(len(raw))]
    np.testing.assert_allclose(interpolate_landmarks(as_list), want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(interpolate_landmarks(raw), want, atol=1e-6, rtol=0)  # NaN rows
    assert interpolate_landmarks([None, None]) is None
    assert interpolate_landmarks(np.full((3, 68, 2), np.nan)) is None


@pytest.mark.parametrize("scale,name", [(1.4, "1p4"), (1.6, "1p6"), (1.8, "1p8")])
def test_face_crop_golden(crop_golden, scale, name):
    lmk = crop_golden["interpolated_landmarks_f64"][0]
    tform = face_crop_transform(lmk, scale=scale)
    np.testing.assert_allclose(tform, crop_golden[f"crop{name}_tform_params_f64"], atol=1e-6, rtol=0)
    img = warp_crop(crop_golden["in_frames_rgb_uint8"][:1], tform[None])[0]
    np.testing.assert_allclose(img, crop_golden[f"crop{name}_image"], atol=1e-6, rtol=0)
    kpt = transform_points(tform, lmk) / 224 * 2 - 1
    np.testing.assert_allclose(kpt, crop_golden[f"crop{name}_kpt_f64"][:, :2], atol=1e-6, rtol=0)


def test_dataset_pipeline_golden(crop_golden):
    """interpolate -> crop at 1.6 -> (T,3,224,224) images and [-1,1] landmarks, as __getitem__."""
    lmk = interpolate_landmarks(crop_golden["in_raw_landmarks"])
    tforms = face_crop_transform(lmk, 1.6)
    assert tforms.shape == (5, 3, 3)
    images = warp_crop(crop_golden["in_frames_rgb_uint8"], tforms).transpose(0, 3, 1, 2).astype(np.float32)
    np.testing.assert_allclose(images, crop_golden["dataset_image"], atol=1e-6, rtol=0)
    kpt = transform_points(tforms, lmk) / 224 * 2 - 1
    np.testing.assert_allclose(kpt, crop_golden["dataset_landmark"][..., :2], atol=1e-6, rtol=0)
    # the 3x3 transform maps crop results back to frame pixels
    back = transform_points(np.linalg.inv(tforms), (kpt + 1) / 2 * 224)
    np.testing.assert_allclose(back, lmk, atol=1e-4)


def test_fast_warps_match_reference(crop_golden):
    lmk = crop_golden["interpolated_landmarks_f64"]
    frames = crop_golden["in_frames_rgb_uint8"]
    tforms = face_crop_transform(lmk, 1.6)
    ref = warp_crop(frames, tforms)
    torch_out = warp_crop_fast(frames, tforms, backend="torch")
    np.testing.assert_allclose(torch_out, ref, atol=1e-5)
    cv_out = warp_crop_fast(frames, tforms, backend="cv2")
    diff = np.abs(cv_out - ref)
    assert diff.mean() < 2.5e-3 and diff.max() < 2e-2  # documented: 1/32-px positions + uint8 rounding


def test_similarity_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(10, 2)) * 50
    ang, s, t = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = s * src @ rot.T + t
    m = estimate_similarity(src, dst)
    np.testing.assert_allclose(m[:2, :2], s * rot, atol=1e-9)
    np.testing.assert_allclose(m[:2, 2], t, atol=1e-9)


def test_face_crop_rejects_nan():
    lmk = np.zeros((68, 2))
    lmk[3] = np.nan
    with pytest.raises(InputError):
        face_crop_transform(lmk)


def _mouth_inputs(loss_golden):
    images = torch.from_numpy(loss_golden["A_mouth_in_images_u8"].astype(np.float32) / np.float32(255))
    return images, torch.from_numpy(loss_golden["A_mouth_in_landmarks"])


def test_cut_mouth_golden(loss_golden):
    images, lmk = _mouth_inputs(loss_golden)
    gray = cut_mouth(images, lmk)
    np.testing.assert_allclose(gray.numpy(), loss_golden["A_mouths_gray96"], rtol=1e-4, atol=1e-6)
    rgb = cut_mouth(images, lmk, convert_grayscale=False)
    np.testing.assert_allclose(rgb.numpy(), loss_golden["A_mouths_rgb96"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mouth_transform(gray).numpy(), loss_golden["A_mouths_transformed88"],
                               rtol=1e-4, atol=1e-5)


def test_cut_mouth_batches_do_not_mix_and_are_differentiable(loss_golden):
    images, lmk = _mouth_inputs(loss_golden)
    a, b = slice(0, 7), slice(7, 14)
    lmk_b = lmk[b].clone()
    lmk_b[:, 48:68, 1] += 0.25  # second clip: mouth ~28 px lower relative to the face (smoothing is relative)
    batched = cut_mouth(torch.stack([images[a], images[b]]), torch.stack([lmk[a], lmk_b]))
    assert batched.shape == (2, 7, 96, 96)
    torch.testing.assert_close(batched[0], cut_mouth(images[a], lmk[a]))
    torch.testing.assert_close(batched[1], cut_mouth(images[b], lmk_b))
    # had the clips been flattened into one sequence (upstream bug §9.3), the temporal smoothing would
    # pull clip 0's last frame towards clip 1's mouth position
    flat = cut_mouth(images, torch.cat([lmk[a], lmk_b]))
    assert not torch.equal(flat[6], batched[0, 6])

    x = images[a].clone().requires_grad_(True)
    out = mouth_transform(cut_mouth(x, lmk[a]))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # only pixels inside the crops get gradient
    assert (x.grad != 0).float().mean() < 0.5
