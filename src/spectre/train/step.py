"""The SPECTRE training step (SPEC §5-§6) and its model-agnostic interface.

A step owns the frozen networks and the trainable module and turns a batch of K-frame clips into
named loss terms and a weighted total. The trainer only sees :class:`TrainStep`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .ddp import unwrap


@dataclass
class LossWeights:
    """Loss weights (official ``cfg.loss.train`` defaults, SPEC §5)."""

    landmark: float = 50.0
    relative_landmark: float = 50.0
    lipread: float = 2.0
    expression: float = 0.5
    jaw_reg: float = 200.0
    expression_reg: float = 1.0  # scales the built-in non-linear weights (1e-3 / 2e-3)
    lip_landmarks: float = 0.0
    photometric_texture: float = 0.0
    lipread_kind: str = "cosine"  # "cosine" (official) or "mse" (more stable, later work)


@dataclass
class StepOutput:
    total: torch.Tensor  # weighted sum, what is back-propagated
    losses: dict[str, torch.Tensor]  # named terms as logged (unweighted)
    visuals: dict[str, torch.Tensor] | None = None  # (n,C,H,W) rows for the image grid
    extras: dict[str, Any] = field(default_factory=dict)  # intermediate tensors (tests, debugging)


class TrainStep:
    """Interface the trainer drives. ``trainable`` holds every optimised parameter; the forward pass
    must call it through ``runner`` (the trainer replaces ``runner`` with a DDP wrapper)."""

    face_model_name = "face"

    def __init__(self, trainable: nn.Module):
        self.trainable = trainable
        self.runner: nn.Module = trainable

    def to(self, device) -> "TrainStep":
        self.trainable.to(device)
        return self

    def set_train(self, flag: bool) -> None:
        """Only the trainable module switches mode; frozen networks stay in eval (SPEC §2.1)."""
        self.trainable.train(flag)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"E_expression": unwrap(self.trainable).state_dict()}

    def load_checkpoint_state(self, ck: dict[str, Any]) -> None:
        if "E_expression" not in ck:
            raise CheckpointError("checkpoint has no 'E_expression' weights")
        try:
            unwrap(self.trainable).load_state_dict(ck["E_expression"], strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"E_expression weights do not match the trained encoder: {first}") from None

    def __call__(self, batch: dict, train: bool) -> StepOutput:
        return self.forward(batch, train)

    def forward(self, batch: dict, train: bool) -> StepOutput:  # pragma: no cover - interface
        raise NotImplementedError


def valid_frame_mask(batch_size: int, clip_length: int, device=None) -> torch.Tensor:
    """(B*K,) bool: frames 2..K-3 of **each** clip, the frames whose temporal-conv output saw no
    zero padding (official: 2..N-3 of the flattened batch, SPEC §9.3 fixed)."""
    idx = torch.arange(clip_length, device=device)
    one = (idx >= 2) & (idx <= clip_length - 3)
    return one.repeat(batch_size)


# ---------------------------------------------------------------------------------------------
# the perceptual and geometric terms shared by every face model
# ---------------------------------------------------------------------------------------------
class PerceptualCriteria:
    """Lip-reading and expression features of input vs render, and the landmark terms (SPEC §5).

    ``lipreader`` (VSR, frozen) compares 512-d ResNet-18 features of grayscale mouth crops cut from
    the input (detected landmarks) and from the render (projected model landmarks); ``emotion``
    (frozen, optional when its weight is 0) compares 2048-d features of the whole frames.
    """

    def __init__(self, lipreader: nn.Module | None, emotion: nn.Module | None, weights: LossWeights):
        from ..errors import ConfigError

        if lipreader is None and weights.lipread > 0:
            raise ConfigError("the lip-reading loss needs the lipreader (asset 'lipreader'), or set its weight to 0")
        if emotion is None and weights.expression > 0:
            raise ConfigError("the expression loss needs the emotion network (asset 'emotion'), "
                              "or set its weight to 0")
        if weights.lipread_kind not in ("cosine", "mse"):
            raise ConfigError(f"unknown lipread loss {weights.lipread_kind!r} (cosine or mse)")
        self.lipreader = lipreader
        self.emotion = emotion
        self.w = weights

    def landmarks(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        from .. import losses as L

        p, g = pred[mask], gt[mask]
        return {"landmark": L.weighted_landmark_loss(p, g), "relative_landmark": L.relative_landmark_loss(p, g),
                "lip_landmarks": L.lip_landmark_loss(p, g)}

    def mouths(self, images: torch.Tensor, rendered: torch.Tensor, lmk_gt: torch.Tensor,
               lmk_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,K,96,96) grayscale mouth crops of input and render (each clip smoothed on its own)."""
        from ..faces.crop import cut_mouth

        with torch.no_grad():
            gt = cut_mouth(images, lmk_gt[..., :2])
        return gt, cut_mouth(rendered, lmk_pred[..., :2])

    def lipread(self, mouths_gt: torch.Tensor, mouths_pred: torch.Tensor, mask: torch.Tensor):
        from .. import losses as L
        from ..faces.crop import mouth_transform

        with torch.no_grad():
            f_gt = self.lipreader.resnet_features(mouth_transform(mouths_gt))
        f_pred = self.lipreader.resnet_features(mouth_transform(mouths_pred))
        a, b = f_pred.flatten(0, 1)[mask], f_gt.flatten(0, 1)[mask]
        loss = L.lipread_loss(a, b) if self.w.lipread_kind == "cosine" else L.lipread_mse_loss(a, b)
        return loss, f_gt, f_pred

    def expression(self, images: torch.Tensor, predicted: torch.Tensor, mask: torch.Tensor):
        from .. import losses as L

        with torch.no_grad():
            f_gt = self.emotion(images)
        f_pred = self.emotion(predicted)
        return L.expression_loss(f_pred[mask], f_gt[mask]), f_gt, f_pred


def _weighted_total(losses: dict[str, torch.Tensor], w: LossWeights, reg: torch.Tensor) -> torch.Tensor:
    total = w.expression_reg * reg
    for name in ("landmark", "relative_landmark", "lip_landmarks", "photometric_texture", "expression",
                 "lipread", "jaw_reg"):
        weight = getattr(w, name)
        if weight and name in losses:
            total = total + weight * losses[name]
    return total


# ---------------------------------------------------------------------------------------------
# SPECTRE with FLAME: frozen DECA codes + trained perceptual residuals
# ---------------------------------------------------------------------------------------------
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

    def to(self, device) -> "SpectreStep":
        for m in (self.deca, self.trainable, self.flame, self.criteria.lipreader, self.criteria.emotion):
            if m is not None:
                m.to(device)
        if self.uv_face_eye_mask is not None:
            self.uv_face_eye_mask = self.uv_face_eye_mask.to(device)
        return self

    def forward(self, batch: dict, train: bool) -> StepOutput:
        import torch.nn.functional as F

        from .. import losses as L
        from ..geometry import project_to_crop
        from ..nets.perceptual import combine_with_deca

        images, lmk_gt = batch["image"], batch["landmark"]
        B, K = images.shape[:2]
        flat = images.flatten(0, 1)
        mask = valid_frame_mask(B, K, images.device)
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
        total = _weighted_total(losses, self.criteria.w, reg)
        visuals = {"input": images[0].detach(), "render": rendered.view(B, K, *rendered.shape[1:])[0].detach(),
                   "mouth_input": mouths_gt[0, :, None].detach(), "mouth_render": mouths_pred[0, :, None].detach()}
        return StepOutput(total, losses, visuals, extras)


# ---------------------------------------------------------------------------------------------
# ICT: a perceptual encoder on top of the fit backend's results
# ---------------------------------------------------------------------------------------------
class IctPerceptualEncoder(nn.Module):
    """SPECTRE's perceptual encoder layout for the ICT model: MobileNetV2 per frame -> Conv1d(k5) over
    time -> BN -> ReLU -> Linear to 53 expression + 3 rotation residuals (per clip, never mixed)."""

    def __init__(self, n_expression: int = 53, n_rotation: int = 3):
        from ..nets.backbones import MobileNetV2

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

    def to(self, device) -> "IctStep":
        for m in (self.trainable, self.model, self.criteria.lipreader, self.criteria.emotion):
            if m is not None:
                m.to(device)
        return self

    def forward(self, batch: dict, train: bool) -> StepOutput:
        from ..geometry import project_to_crop

        images, lmk_gt, fit = batch["image"], batch["landmark"], batch["fit"]
        B, K = images.shape[:2]
        mask = valid_frame_mask(B, K, images.device)
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
        total = _weighted_total(losses, self.criteria.w, reg)
        visuals = {"input": images[0].detach(), "render": rendered.view(B, K, *rendered.shape[1:])[0].detach(),
                   "mouth_input": mouths_gt[0, :, None].detach(), "mouth_render": mouths_pred[0, :, None].detach()}
        return StepOutput(total, losses, visuals, extras)


# ---------------------------------------------------------------------------------------------
# building steps from assets
# ---------------------------------------------------------------------------------------------
def _read_image(path, what: str):
    import cv2

    from ..errors import AssetError

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise AssetError(f"cannot read {what} image {path}")
    return torch.from_numpy(img[:, :, ::-1].astype("float32") / 255.0).permute(2, 0, 1)[None].contiguous()


def load_uv_face_eye_mask(store, uv_size: int = 256) -> torch.Tensor | None:
    """(1,1,uv,uv) UV face+eye mask as the official renderer builds it (first channel, nearest resize)."""
    import torch.nn.functional as F

    path = store.find("uv_face_eye_mask")
    if path is None:
        return None
    img = _read_image(path, "uv_face_eye_mask")  # RGB; the mask is grey so every channel is equal
    return F.interpolate(img[:, :1], [uv_size, uv_size])


def textured_renderer(model: nn.Module, texture: torch.Tensor, image_size: int = 224):
    """The official textured SH-lit render (``SRenderY.forward``) with a fixed albedo ``texture``
    (the BFM albedo space FLAMETex needs is not public) and DECA's per-frame light code."""
    from ..render import Renderer

    renderer = Renderer(image_size)

    def render(verts, crop_verts, codes):
        out = renderer.render_textured(verts, crop_verts, model.faces, texture.to(verts), model.uv_coords,
                                       model.uv_faces, sh_coeffs=codes["light"])
        return out.images, out.alpha, out.uv_grid
    return render


def _trainable(module: nn.Module) -> nn.Module:
    """Train every parameter the forward pass uses. MobileNetV2's ImageNet classifier stays in the
    state dict (official layout) but never runs: frozen, so DDP does not wait for its gradients."""
    module.requires_grad_(True)
    classifier = getattr(getattr(module, "encoder", None), "classifier", None)
    if classifier is not None:
        classifier.requires_grad_(False)
    return module.train()


def _criteria(store, weights: LossWeights) -> PerceptualCriteria:
    from ..nets.checkpoints import load_emotion, load_lipreader

    lip = load_lipreader(store) if weights.lipread > 0 else None
    emo = load_emotion(store) if weights.expression > 0 else None
    return PerceptualCriteria(lip, emo, weights)


def build_flame_step(store, weights: LossWeights, init: str | None = None, render: RenderFn | None = None,
                     image_size: int = 224) -> SpectreStep:
    """SPECTRE training with FLAME + DECA assets. ``init``: None (DECA's E_flame, a fresh perceptual
    encoder with its head scaled by 0.001 as ``Trainer.fit``), ``"spectre"`` (fine-tune the installed
    SPECTRE model) or a path to a SPECTRE-layout checkpoint."""
    from ..assets import AssetStore
    from ..models.flame import FLAME
    from ..nets.checkpoints import load_deca, load_spectre
    from ..nets.perceptual import PerceptualEncoder

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
    criteria = _criteria(store, weights)
    if render is None:
        if flame.uv_coords is None:
            from ..errors import AssetError
            raise AssetError("FLAME training renders with UVs: install asset 'head_template' (head_template.obj)")
        texture = _read_image(store.path("mean_texture"), "mean_texture")
        render = textured_renderer(flame, torch.nn.functional.interpolate(texture, [256, 256]), image_size)
    return SpectreStep(deca, _trainable(encoder), flame, criteria, render, load_uv_face_eye_mask(store))


def build_ict_step(store, weights: LossWeights, init: str | None = None, image_size: int = 224) -> IctStep:
    """Perceptual encoder for the ICT model over fit-backend targets (no FLAME/DECA assets needed).
    ``init``: a checkpoint of an earlier ICT run (its ``E_expression``)."""
    from ..assets import AssetStore
    from ..models import load_face_model
    from ..render import Renderer
    from ..safeload import load_checkpoint

    store = AssetStore.coerce(store)
    model = load_face_model("ict", store)
    encoder = IctPerceptualEncoder(n_expression=model.spec["expression"].size)
    step = IctStep(_trainable(encoder), model, _criteria(store, weights), Renderer(image_size))
    if init is not None:
        step.load_checkpoint_state(load_checkpoint(init, what="ICT encoder checkpoint"))
        _trainable(encoder)
    return step
