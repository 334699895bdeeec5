"""SPECTRE with FLAME: frozen DECA codes + trained perceptual residuals (the official training step)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses as L
from ..assets import AssetStore
from ..errors import AssetError
from ..faces.crop import FACE_CROP_SIZE
from ..geometry import project_to_crop
from ..models.flame import FLAME
from ..nets.checkpoints import load_deca, load_spectre
from ..nets.perceptual import PerceptualEncoder, combine_with_deca
from ..render import Renderer
from .criteria import PerceptualCriteria, build_criteria
from .step import LossWeights, StepOutput, TrainStep, trainable_module, weighted_total

RenderFn = Any  # (vertices (N,V,3), crop_vertices (N,V,3), codes) -> (images, alpha, uv_grid)


class SpectreStep(TrainStep):
    """One official ``Trainer.step`` (SPEC §5), per clip: DECA (frozen) -> perceptual residuals ->
    FLAME -> projected landmarks -> textured SH-lit render -> mouth crops -> lipreader / emotion
    features -> losses on frames 2..K-3 of each clip."""

    face_model_name = "flame"

    def __init__(self, deca: nn.Module, encoder: nn.Module, flame: nn.Module, criteria: PerceptualCriteria,
                 render: RenderFn, uv_face_eye_mask: torch.Tensor | None = None):
        super().__init__(encoder)
        self.deca = deca.eval().requires_grad_(False)
        self.flame = flame
        self.criteria = criteria
        self.render = render
        self.uv_face_eye_mask = uv_face_eye_mask

    def checkpoint_state(self) -> dict[str, Any]:
        # the official layout: a training checkpoint is also a SPECTRE model file for inference
        return {"E_flame": self.deca.state_dict(), **super().checkpoint_state()}

    def to(self, device) -> SpectreStep:
        for m in (self.deca, self.trainable, self.flame, self.criteria.lipreader, self.criteria.emotion):
            if m is not None:
                m.to(device)
        if self.uv_face_eye_mask is not None:
            self.uv_face_eye_mask = self.uv_face_eye_mask.to(device)
        return self

    def forward(self, batch: dict, train: bool) -> StepOutput:
        images, lmk_gt = batch["image"], batch["landmark"]
        B, K = images.shape[:2]
        flat = images.flatten(0, 1)
        mask = L.valid_frame_mask(B, K, images.device)
        with torch.no_grad():
            deca = self.deca.encode(flat)
        exp_res, jaw_res = self.runner(images)  # (B,K,50), (B,K,3): clips never mixed (SPEC §9.3)
        codes = combine_with_deca(deca, exp_res.flatten(0, 1), jaw_res.flatten(0, 1))
        verts, lmk2d, _ = self.flame.decode(codes["shape"], codes["exp"], codes["pose"])
        crop_verts = project_to_crop(verts, codes["cam"])
        lmk_pred = project_to_crop(lmk2d, codes["cam"])[..., :2]
        rendered, alpha, grid = self.render(verts, crop_verts, codes)

        gt_flat = lmk_gt.flatten(0, 1)
        losses = self.criteria.landmarks(lmk_pred, gt_flat, mask)
        if self.uv_face_eye_mask is not None:
            face_eye = F.grid_sample(self.uv_face_eye_mask.expand(flat.shape[0], -1, -1, -1).to(rendered),
                                     grid.detach(), align_corners=False)
            predicted = rendered * face_eye * alpha
            region = face_eye * alpha
            losses["photometric_texture"] = (region * (predicted - flat).abs()).mean()
        else:
            predicted = rendered
        mouths_gt, mouths_pred = self.criteria.mouths(images, rendered.view(B, K, *rendered.shape[1:]), lmk_gt,
                                                      lmk_pred.view(B, K, 68, 2))
        extras: dict[str, Any] = {"deca": deca, "codes": codes, "exp_res": exp_res, "jaw_res": jaw_res,
                                  "landmarks2d": lmk_pred, "verts": verts, "mouths_gt": mouths_gt,
                                  "mouths_pred": mouths_pred, "predicted_images": predicted}
        if self.criteria.lipreader is not None:
            losses["lipread"], extras["lip_gt"], extras["lip_pred"] = self.criteria.lipread(mouths_gt, mouths_pred, mask)
        if self.criteria.emotion is not None:
            # the emotion net sees the whole textured render (no face mask), like the lipreader
            losses["expression"], extras["emo_gt"], extras["emo_pred"] = self.criteria.expression(flat, rendered, mask)
        exp, exp_ref = codes["exp"][mask], deca["exp"][mask]
        jaw, jaw_ref = codes["pose"][mask, 3:], deca["pose"][mask, 3:]
        reg = L.expression_regularizer(exp, exp_ref)
        losses["expression_reg"] = (0.5 * (exp ** 2).sum(-1)).mean().detach()  # the official logged value
        losses["jaw_reg"] = L.jaw_regularizer(jaw, jaw_ref)
        extras["expression_reg_weighted"] = reg
        total = weighted_total(losses, self.criteria.w, reg)
        visuals = {"input": images[0].detach(), "render": rendered.view(B, K, *rendered.shape[1:])[0].detach(),
                   "mouth_input": mouths_gt[0, :, None].detach(), "mouth_render": mouths_pred[0, :, None].detach()}
        return StepOutput(total, losses, visuals, extras)


def _read_image(path, what: str):
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise AssetError(f"cannot read {what} image {path}")
    return torch.from_numpy(img[:, :, ::-1].astype("float32") / 255.0).permute(2, 0, 1)[None].contiguous()


def load_uv_face_eye_mask(store, uv_size: int = 256) -> torch.Tensor | None:
    """(1,1,uv,uv) UV face+eye mask as the official renderer builds it (first channel, nearest resize)."""
    path = store.find("uv_face_eye_mask")
    if path is None:
        return None
    img = _read_image(path, "uv_face_eye_mask")  # RGB; the mask is grey so every channel is equal
    return F.interpolate(img[:, :1], [uv_size, uv_size])


def textured_renderer(model: nn.Module, texture: torch.Tensor, image_size: int = FACE_CROP_SIZE):
    """The official textured SH-lit render (``SRenderY.forward``) with a fixed albedo ``texture``
    (the BFM albedo space FLAMETex needs is not public) and DECA's per-frame light code."""
    renderer = Renderer(image_size)

    def render(verts, crop_verts, codes):
        out = renderer.render_textured(verts, crop_verts, model.faces, texture.to(verts), model.uv_coords,
                                       model.uv_faces, sh_coeffs=codes["light"])
        return out.images, out.alpha, out.uv_grid
    return render


def build_flame_step(store, weights: LossWeights, init: str | None = None, render: RenderFn | None = None,
                     image_size: int = FACE_CROP_SIZE) -> SpectreStep:
    """SPECTRE training with FLAME + DECA assets. ``init``: None (DECA's E_flame, a fresh perceptual
    encoder with its head scaled by 0.001 as ``Trainer.fit``), ``"spectre"`` (fine-tune the installed
    SPECTRE model) or a path to a SPECTRE-layout checkpoint."""
    store = AssetStore.coerce(store)
    flame = FLAME.from_store(store)
    if init is None:
        deca = load_deca(store)
        encoder = PerceptualEncoder()
        with torch.no_grad():
            encoder.layers[0].weight.mul_(0.001)
            encoder.layers[0].bias.mul_(0.001)
    else:
        deca, encoder = load_spectre(store) if init == "spectre" else load_spectre(path=init)
    criteria = build_criteria(store, weights)
    if render is None:
        if flame.uv_coords is None:
            raise AssetError("FLAME training renders with UVs: install asset 'head_template' (head_template.obj)")
        texture = _read_image(store.path("mean_texture"), "mean_texture")
        render = textured_renderer(flame, F.interpolate(texture, [256, 256]), image_size)
    return SpectreStep(deca, trainable_module(encoder), flame, criteria, render, load_uv_face_eye_mask(store))
