"""ICT: a perceptual encoder trained on top of the fit backend's results (no FLAME/DECA assets)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import losses as L
from ..assets import AssetStore
from ..faces.crop import FACE_CROP_SIZE
from ..geometry import project_to_crop
from ..models import load_face_model
from ..nets.backbones import MobileNetV2
from ..render import Renderer
from ..safeload import load_checkpoint
from .criteria import PerceptualCriteria, build_criteria
from .step import LossWeights, StepOutput, TrainStep, trainable_module, weighted_total


class IctPerceptualEncoder(nn.Module):
    """SPECTRE's perceptual encoder layout for the ICT model: MobileNetV2 per frame -> Conv1d(k5) over
    time -> BN -> ReLU -> Linear to 53 expression + 3 rotation residuals (per clip, never mixed)."""

    def __init__(self, n_expression: int = 53, n_rotation: int = 3):
        super().__init__()
        self.n_expression = n_expression
        self.encoder = MobileNetV2()
        self.temporal = nn.Sequential(nn.Conv1d(1280, 256, 5, padding=2), nn.BatchNorm1d(256), nn.ReLU())
        self.layers = nn.Sequential(nn.Linear(256, n_expression + n_rotation))
        with torch.no_grad():  # residuals start near 0, as Trainer.fit does for SPECTRE's head
            self.layers[0].weight.mul_(0.001)
            self.layers[0].bias.mul_(0.001)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = images.shape[:2]
        feats = self.encoder(images.flatten(0, 1)).view(b, t, -1)
        out = self.layers(self.temporal(feats.transpose(1, 2)).transpose(1, 2))
        return out[..., :self.n_expression], out[..., self.n_expression:]


class IctStep(TrainStep):
    """Fit-backend results play DECA's role: identity, camera and the expression/rotation starting
    point per frame; the encoder learns residuals that make the render lip-read like the input."""

    face_model_name = "ict"

    def __init__(self, encoder: nn.Module, model: nn.Module, criteria: PerceptualCriteria, renderer: Any):
        super().__init__(encoder)
        self.model = model
        self.criteria = criteria
        self.renderer = renderer

    def to(self, device) -> IctStep:
        for m in (self.trainable, self.model, self.criteria.lipreader, self.criteria.emotion):
            if m is not None:
                m.to(device)
        return self

    def forward(self, batch: dict, train: bool) -> StepOutput:
        images, lmk_gt, fit = batch["image"], batch["landmark"], batch["fit"]
        B, K = images.shape[:2]
        mask = L.valid_frame_mask(B, K, images.device)
        exp_res, rot_res = self.runner(images)
        ref = {k: v.flatten(0, 1) for k, v in fit.items()}
        params = {"identity": ref["identity"], "expression": ref["expression"] + exp_res.flatten(0, 1),
                  "rotation": ref["rotation"] + rot_res.flatten(0, 1)}
        verts = self.model.vertices(params)
        crop_verts = project_to_crop(verts, ref["cam"])
        lmk_pred = project_to_crop(self.model.landmarks(verts, params), ref["cam"])[..., :2]
        out = self.renderer.render_shape(verts, crop_verts, self.model.render_faces())
        rendered = out.images
        losses = self.criteria.landmarks(lmk_pred, lmk_gt.flatten(0, 1), mask)
        mouths_gt, mouths_pred = self.criteria.mouths(images, rendered.view(B, K, *rendered.shape[1:]), lmk_gt,
                                                      lmk_pred.view(B, K, 68, 2))
        extras: dict[str, Any] = {"params": params, "landmarks2d": lmk_pred}
        if self.criteria.lipreader is not None:
            losses["lipread"], _, _ = self.criteria.lipread(mouths_gt, mouths_pred, mask)
        if self.criteria.emotion is not None:
            losses["expression"], _, _ = self.criteria.expression(images.flatten(0, 1), rendered, mask)
        # plain L2 towards the fit (the paper's regularisers); rotation plays the jaw's part
        reg = 0.5 * (exp_res.flatten(0, 1)[mask] ** 2).sum(-1).mean()
        losses["expression_reg"] = reg.detach()
        losses["jaw_reg"] = (rot_res.flatten(0, 1)[mask] ** 2).mean() / 2.0
        total = weighted_total(losses, self.criteria.w, reg)
        visuals = {"input": images[0].detach(), "render": rendered.view(B, K, *rendered.shape[1:])[0].detach(),
                   "mouth_input": mouths_gt[0, :, None].detach(), "mouth_render": mouths_pred[0, :, None].detach()}
        return StepOutput(total, losses, visuals, extras)


def build_ict_step(store, weights: LossWeights, init: str | None = None, image_size: int = FACE_CROP_SIZE) -> IctStep:
    """Perceptual encoder for the ICT model over fit-backend targets (no FLAME/DECA assets needed).
    ``init``: a checkpoint of an earlier ICT run (its ``E_expression``)."""
    store = AssetStore.coerce(store)
    model = load_face_model("ict", store)
    encoder = IctPerceptualEncoder(n_expression=model.spec["expression"].size)
    step = IctStep(trainable_module(encoder), model, build_criteria(store, weights), Renderer(image_size))
    if init is not None:
        step.load_checkpoint_state(load_checkpoint(init, what="ICT encoder checkpoint"))
        trainable_module(encoder)
    return step
