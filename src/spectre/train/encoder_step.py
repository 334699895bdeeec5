"""Training a :class:`~spectre.nets.face_encoder.FaceCodeEncoder` from videos alone (``--model ict``).

The fit backend is the teacher: ``spectre prepare --fit`` stores its per-frame parameters and camera.
The encoder predicts the per-frame parameters itself (expression and head rotation for ICT) from the
crops; the fit's identity and camera place them in the crop, exactly as the reconstruct backend does
with the fit's identity stage and the tracked landmarks. Terms (``--weight NAME=VALUE``):

* ``expression_reg`` (½‖exp − exp_fit‖²) and ``jaw_reg`` (½·mean (rot − rot_fit)²): the distance to the
  teacher, the role DECA's codes play in official SPECTRE training;
* ``landmark`` / ``relative_landmark``: the projected 68 landmarks against the tracked ones;
* ``lipread`` / ``expression``: the perceptual terms on renders, used when the lipreader / emotion assets
  are installed and skipped with a logged note otherwise (the recipe works with videos alone).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from ..assets import AssetStore
from ..errors import CheckpointError
from ..faces.crop import FACE_CROP_SCALE, FACE_CROP_SIZE
from ..geometry import project_to_crop
from ..losses import valid_frame_mask
from ..models import load_face_model
from ..nets.checkpoints import describe_checkpoint, load_emotion, load_lipreader, load_state_dict_checked
from ..nets.face_encoder import SPEC_KEY, WEIGHTS_KEY, EncoderSpec, FaceCodeEncoder, encoder_from_checkpoint
from ..render import Renderer
from ..safeload import load_checkpoint
from .criteria import PerceptualCriteria
from .ddp import unwrap
from .step import LossWeights, StepOutput, TrainStep, trainable_module, weighted_total

log = logging.getLogger(__name__)

__all__ = ["FaceEncoderStep", "encoder_spec_for", "optional_criteria", "build_encoder_step"]


def encoder_spec_for(model, image_size: int, clip_length: int, crop_scale: float = FACE_CROP_SCALE) -> EncoderSpec:
    """The blocks an encoder predicts for ``model``: every per-frame parameter (role ``expression`` or
    ``pose``), from the model's parameter spec; identity stays per track."""
    outputs = tuple((p.name, p.size) for p in model.param_specs if p.role != "identity")
    return EncoderSpec(model=model.name, outputs=outputs, image_size=int(image_size), clip_length=int(clip_length),
                       crop_scale=float(crop_scale))


class FaceEncoderStep(TrainStep):
    """Encoder -> per-frame parameters (+ the fit's identity) -> landmarks (and renders when a perceptual
    term is active) -> losses on frames 2..K-3 of each clip."""

    supports_precise_bn = True

    def __init__(self, encoder: FaceCodeEncoder, model: nn.Module, criteria: PerceptualCriteria,
                 renderer: Any = None):
        # channels_last convolution weights: MobileNetV2 forward + backward ~30 % faster on the CPU (bench_train);
        # the weights' values (and checkpoints' contents) are unchanged
        super().__init__(encoder.to(memory_format=torch.channels_last))
        self.model = model
        self.face_model_name = model.name
        self.criteria = criteria
        self.renderer = renderer
        self.spec = encoder.spec

    def calibration_forward(self, batch: dict) -> None:
        unwrap(self.trainable)(batch["image"])

    def to(self, device) -> FaceEncoderStep:
        for m in (self.trainable, self.model, self.criteria.lipreader, self.criteria.emotion):
            if m is not None:
                m.to(device)
        return self

    def checkpoint_state(self) -> dict[str, Any]:
        return unwrap(self.trainable).checkpoint_state()

    def load_checkpoint_state(self, ck: dict[str, Any]) -> None:
        if not isinstance(ck, dict) or WEIGHTS_KEY not in ck:
            raise CheckpointError(f"the checkpoint is {describe_checkpoint(ck)}, not a face-encoder checkpoint")
        saved = EncoderSpec.from_dict(ck.get(SPEC_KEY))
        if saved.outputs != self.spec.outputs or saved.model != self.spec.model:
            raise CheckpointError(f"the checkpoint predicts {saved.model} {list(saved.outputs)}, "
                                  f"this run {self.spec.model} {list(self.spec.outputs)}")
        load_state_dict_checked(unwrap(self.trainable), ck[WEIGHTS_KEY], path="checkpoint", part=WEIGHTS_KEY,
                                release="a face encoder of the same layout")

    def _needs_render(self) -> bool:
        return self.renderer is not None and (self.criteria.lipreader is not None or self.criteria.emotion is not None)

    def forward(self, batch: dict, train: bool) -> StepOutput:
        images, lmk_gt, fit = batch["image"], batch["landmark"], batch["fit"]
        B, K = images.shape[:2]
        mask = valid_frame_mask(B, K, images.device)
        pred = self.runner(images)
        ref = {k: v.flatten(0, 1) for k, v in fit.items()}
        params = {n: ref[n] for n in self.model.params_with_role("identity")}
        params.update({n: v.flatten(0, 1) for n, v in pred.items()})
        render = self._needs_render()
        verts = self.model.vertices(params) if render else None
        points = self.model.landmarks(verts, params) if verts is not None else self.model.landmarks_only(params)
        lmk_pred = project_to_crop(points, ref["cam"])[..., :2]
        losses = self.criteria.landmarks(lmk_pred, lmk_gt.flatten(0, 1), mask)
        rot = self.model.rotation_param
        exp_names = [n for n in pred if n != rot]
        d_exp = torch.cat([params[n] - ref[n] for n in exp_names], -1)[mask]
        reg = 0.5 * (d_exp ** 2).sum(-1).mean()
        losses["expression_reg"] = reg.detach()
        if rot in pred:
            losses["jaw_reg"] = ((params[rot] - ref[rot])[mask] ** 2).mean() / 2.0
        extras: dict[str, Any] = {"params": params, "landmarks2d": lmk_pred}
        visuals = {"input": images[0].detach()}
        if render:
            crop_verts = project_to_crop(verts, ref["cam"])
            rendered = self.renderer.render_shape(verts, crop_verts, self.model.render_faces()).images
            mouths_gt, mouths_pred = self.criteria.mouths(images, rendered.view(B, K, *rendered.shape[1:]), lmk_gt,
                                                          lmk_pred.view(B, K, 68, 2))
            if self.criteria.lipreader is not None:
                losses["lipread"], _, _ = self.criteria.lipread(mouths_gt, mouths_pred, mask)
            if self.criteria.emotion is not None:
                losses["expression"], _, _ = self.criteria.expression(images.flatten(0, 1), rendered, mask)
            visuals.update({"render": rendered.view(B, K, *rendered.shape[1:])[0].detach(),
                            "mouth_input": mouths_gt[0, :, None].detach(),
                            "mouth_render": mouths_pred[0, :, None].detach()})
        total = weighted_total(losses, self.criteria.w, reg)
        return StepOutput(total, losses, visuals, extras)


def optional_criteria(store, weights: LossWeights) -> PerceptualCriteria:
    """Lip-reading / expression terms when their assets are installed; otherwise the term is skipped
    with a logged note (training from videos alone is a supported recipe, not an error)."""
    w = dataclasses.replace(weights)
    lip = emo = None
    if w.lipread > 0:
        if store.find("lipreader") is not None and store.find("lipreader_config") is not None:
            lip = load_lipreader(store)
        else:
            log.warning("note: lipreader assets not installed: the lip-reading term is skipped "
                        "(install them with `spectre assets add lipreader FILE` to use it)")
            w.lipread = 0.0
    if w.expression > 0:
        if store.find("emotion") is not None:
            emo = load_emotion(store)
        else:
            log.warning("note: emotion asset not installed: the expression term is skipped "
                        "(install it with `spectre assets add emotion FILE` to use it)")
            w.expression = 0.0
    return PerceptualCriteria(lip, emo, w)


def build_encoder_step(store, weights: LossWeights, init: str | None = None, image_size: int = FACE_CROP_SIZE,
                       clip_length: int = 20, model_name: str = "ict") -> FaceEncoderStep:
    """A face-encoder step for ``model_name`` over fit-backend targets (no FLAME/DECA assets needed).
    ``init``: a face-encoder checkpoint of an earlier run (weights only; the layout must match)."""
    store = AssetStore.coerce(store)
    model = load_face_model(model_name, store)
    encoder = FaceCodeEncoder(encoder_spec_for(model, image_size, clip_length))
    criteria = optional_criteria(store, weights)
    renderer = Renderer(image_size) if (criteria.lipreader is not None or criteria.emotion is not None) else None
    step = FaceEncoderStep(trainable_module(encoder), model, criteria, renderer)
    if init is not None:
        ck = load_checkpoint(init, what="face-encoder checkpoint")
        src = encoder_from_checkpoint(ck, init)
        if src.spec.image_size != image_size:
            log.warning("note: --init %s was trained at %d px crops; this run uses %d px", init,
                        src.spec.image_size, image_size)
        step.load_checkpoint_state(ck)
        trainable_module(encoder)
    return step
