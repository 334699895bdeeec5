"""The ``learned`` backend for a face model with a trained face encoder (``--model ict --weights RUN/...``).

Per track:

1. **identity**: the fit backend's identity stage on a spread subsample of the tracked landmarks (the
   same stage that gave the training targets their identity). Identity is one vector per track and is
   determined well by landmarks; learning it would need many more speakers than an own-footage run has,
   and the stage costs the same for any clip length (``FitConfig.identity_frames`` frames).
2. **per-frame parameters** (expression, head rotation): the encoder over the official chunk plan
   (:mod:`.chunking`: edge padding, overlap, tail merge, trimming) on the official crops at the
   checkpoint's size and scale; frame features are computed once and shared by overlapping chunks.
3. **camera**: per frame, the weak-perspective ``[s, tx, ty]`` that puts the predicted model's stable
   landmarks (contour, brows, nose, eyes; SPECTRE's landmark weights) onto the tracked ones, a closed-form
   weighted least-squares (training used the fit's camera, which solves the same landmark alignment).

The result has the fit backend's schema: parameters in the model's spec (expressions clamped to their
range), camera into the 224 crop, 2D/3D landmarks, so ARKit CSV, meshes and videos work unchanged.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..faces.crop import (
    FACE_CROP_SCALE,
    FACE_CROP_SIZE,
    face_crop_transform,
    interpolate_landmarks,
    warp_crop,
    warp_crop_fast,
)
from ..geometry import crop_to_pixels, pixels_to_crop, project_to_crop
from ..io.results import FaceResult
from ..losses import landmark_weights_68
from ..nets.face_encoder import SPEC_KEY, EncoderSpec, FaceCodeEncoder, encoder_from_checkpoint, load_face_encoder
from ..nets.fast import prepare_for_inference
from ..safeload import load_checkpoint
from .chunking import plan_chunks
from .crop_stream import CropStream
from .evaluator import PointEvaluator
from .fit import FitConfig, fit_track

__all__ = ["EncoderBackend", "encoder_model", "solve_camera", "landmarks_to_frame"]

#: landmarks the camera is solved on: contour, brows, nose, eyes (the mouth follows the expression)
_CAMERA_POINTS = np.arange(0, 48)


def encoder_model(weights: str | Path) -> str:
    """The face model a face-encoder checkpoint predicts (so ``--weights`` alone picks ``--model``)."""
    ck = load_checkpoint(weights, what="face-encoder checkpoint")
    if not isinstance(ck, dict) or SPEC_KEY not in ck:
        encoder_from_checkpoint(ck, weights)  # raises the 'this file is a ...' error
    return EncoderSpec.from_dict(ck[SPEC_KEY], weights).model


def solve_camera(model_lmk: np.ndarray, crop_lmk: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(T,3) cameras ``[s, tx, ty]`` minimising Σ w‖project_to_crop(X, cam) − q‖² per frame.

    ``model_lmk`` (T,P,3) model-space points (rotation applied), ``crop_lmk`` (T,P,2) the same points in
    normalised crop coordinates. ``project_to_crop`` maps x' = s(x + tx), y' = −s(y + ty), which is linear
    in (s, s·tx, s·ty).
    """
    X = np.asarray(model_lmk, np.float64)[..., :2]
    q = np.asarray(crop_lmk, np.float64).copy()
    q[..., 1] *= -1.0
    T, P = X.shape[:2]
    w = np.ones(P) if weights is None else np.asarray(weights, np.float64)
    # rows (x): [X_x, 1, 0]; rows (y): [X_y, 0, 1]
    A = np.zeros((T, 2 * P, 3))
    A[:, :P, 0], A[:, :P, 1] = X[..., 0], 1.0
    A[:, P:, 0], A[:, P:, 2] = X[..., 1], 1.0
    b = np.concatenate([q[..., 0], q[..., 1]], 1)
    W = np.concatenate([w, w])
    AtW = A.transpose(0, 2, 1) * W
    sol = np.linalg.solve(AtW @ A + 1e-9 * np.eye(3), (AtW @ b[..., None]))[..., 0]
    s = sol[:, 0]
    s = np.where(np.abs(s) < 1e-9, 1e-9, s)
    return np.stack([s, sol[:, 1] / s, sol[:, 2] / s], -1).astype(np.float32)


def landmarks_to_frame(landmarks3d: np.ndarray, cam: np.ndarray, tforms: np.ndarray) -> np.ndarray:
    """(T,68,2) input-pixel positions of model-space landmarks seen by ``cam`` in the 224 crops of ``tforms``."""
    q = project_to_crop(torch.from_numpy(np.asarray(landmarks3d, np.float32)), torch.from_numpy(cam))[..., :2]
    px = crop_to_pixels(q.numpy().astype(np.float64), FACE_CROP_SIZE)  # crop pixels (SPEC §3.4)
    inv = np.linalg.inv(np.asarray(tforms, np.float64))
    return (np.einsum("tij,tpj->tpi", inv[:, :2, :2], px) + inv[:, None, :2, 2]).astype(np.float32)


class EncoderBackend:
    """A trained :class:`FaceCodeEncoder` for ``model``, loaded once and reused for many videos."""

    def __init__(self, model, weights: str | Path | FaceCodeEncoder, runtime, config,
                 fit_config: FitConfig | None = None, evaluator: PointEvaluator | None = None,
                 crop_scale: float = FACE_CROP_SCALE):
        net = weights if isinstance(weights, FaceCodeEncoder) else load_face_encoder(weights)
        self.spec = net.spec
        self.source = str(weights) if not isinstance(weights, FaceCodeEncoder) else "<network>"
        if self.spec.model != model.name:
            raise ConfigError(f"{self.source} is an encoder for face model {self.spec.model!r}; "
                              f"run with --model {self.spec.model}")
        missing = [n for n, _ in self.spec.outputs if n not in model.spec]
        if missing:
            raise ConfigError(f"{self.source} predicts {missing}, which {model.name} does not have")
        self.model = model
        self.cfg = config
        self.runtime = runtime
        self.fit_cfg = fit_config or FitConfig()
        self.evaluator = evaluator
        self.crop_scale = float(crop_scale)
        if config.fast:
            fast = prepare_for_inference(net, runtime)
            self.features = lambda x: fast.call("frame_features", x)
            self.head = lambda f: fast.call("head", f)
        else:
            net.eval().requires_grad_(False).to(runtime.device)
            self.features = lambda x: net.frame_features(x.to(runtime.device)).float()
            self.head = lambda f: {k: v.float() for k, v in net.head(f.to(runtime.device)).items()}

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, num_frames: int, get_crops) -> dict[str, np.ndarray]:
        """Per-frame parameter blocks for ``num_frames`` frames; ``get_crops(positions)`` returns crops of
        new, increasing positions (see :class:`CropStream`)."""
        c = self.cfg
        plan = plan_chunks(num_frames, c.chunk_length, c.chunk_overlap, c.edge_padding)
        feats: dict[int, torch.Tensor] = {}
        out: dict[str, list[np.ndarray]] = {}
        for chunk in plan:
            new = np.array([p for p in np.unique(chunk.frames) if int(p) not in feats], dtype=np.int64)
            if len(new):
                crops = get_crops(new).float()
                f = torch.cat([self.features(crops[i:i + 64]).float().cpu() for i in range(0, len(crops), 64)])
                for i, p in enumerate(new):
                    feats[int(p)] = f[i]
            blocks = self.head(torch.stack([feats[int(p)] for p in chunk.frames])[None])
            for k, v in blocks.items():
                out.setdefault(k, []).append(v[0, chunk.keep_from:chunk.keep_to].float().cpu().numpy())
            keep_from = int(chunk.out_frames[-1]) - c.chunk_overlap - c.edge_padding
            for p in [p for p in feats if p < keep_from]:
                del feats[p]
        return {k: np.concatenate(v) for k, v in out.items()}

    def identity(self, landmarks: np.ndarray, valid: np.ndarray, points478: np.ndarray | None) -> dict[str, np.ndarray]:
        """The fit's identity stage on a spread subsample of valid frames -> {identity param: (n,)}."""
        vi = np.flatnonzero(valid)
        n = min(self.fit_cfg.identity_frames, len(vi))
        sel = vi[np.linspace(0, len(vi) - 1, n).round().astype(int)]
        cfg = dataclasses.replace(self.fit_cfg, iterations=1)  # stage B is not needed: identity only
        pts = None if points478 is None else np.asarray(points478)[sel]
        fit = fit_track(self.model, landmarks[sel], np.ones(len(sel), bool), cfg, evaluator=self.evaluator,
                        points478=pts)
        return {k: np.asarray(fit.params[k][0], np.float32) for k in self.model.params_with_role("identity")}

    @torch.no_grad()
    def _landmarks3d(self, params: dict[str, np.ndarray], chunk: int = 256) -> np.ndarray:
        """(T,68,3) model-space landmarks; models that can evaluate them without the mesh do so."""
        out = []
        for a in range(0, len(next(iter(params.values()))), chunk):
            p = {k: torch.from_numpy(np.ascontiguousarray(v[a:a + chunk])) for k, v in params.items()}
            out.append(self.model.landmarks_only(p))
        return torch.cat(out).numpy()

    def run(self, source, track, tracks) -> FaceResult:
        """Reconstruct one face track of ``source`` (a ``VideoSource``)."""
        valid = np.asarray(track.valid, bool)
        lm = np.asarray(track.landmarks68, np.float64)
        filled = interpolate_landmarks(np.where(valid[:, None, None], lm, np.nan))
        scale = self.crop_scale
        tforms = face_crop_transform(filled, scale=scale)  # the schema's 224 crop
        small = face_crop_transform(filled, scale=scale, size=self.spec.image_size)
        T = len(tforms)
        stream = CropStream(source, tracks.indices, small, self.spec.image_size,
                            warp_crop_fast if self.cfg.fast else warp_crop)
        blocks = self.encode(T, stream)
        points478 = getattr(track, "points478", None)
        ident = self.identity(np.nan_to_num(lm), valid, points478)
        params = {k: np.repeat(v[None], T, 0) for k, v in ident.items()}
        for name, value in blocks.items():
            sp = self.model.spec[name]
            lo = -np.inf if sp.low is None else sp.low
            hi = np.inf if sp.high is None else sp.high
            params[name] = np.clip(value, lo, hi).astype(np.float32)
        completed = self.model.complete({k: torch.from_numpy(v) for k, v in params.items()})
        full = {k: v.numpy() for k, v in completed.items()}
        # camera: align the predicted face's stable landmarks with the tracked ones in the 224 crop
        X = self._landmarks3d(full)
        q = pixels_to_crop(np.einsum("tij,tpj->tpi", tforms[:, :2, :2], filled) + tforms[:, None, :2, 2],
                           FACE_CROP_SIZE)
        w = landmark_weights_68().numpy()[_CAMERA_POINTS]
        cam = solve_camera(X[:, _CAMERA_POINTS], q[:, _CAMERA_POINTS], w)
        lmk2d = landmarks_to_frame(X, cam, tforms)
        return FaceResult(
            track_id=int(track.track_id), model=self.model.name, backend="learned", params=full, cam=cam,
            crop_tform=tforms, landmarks2d=lmk2d, landmarks3d=X.astype(np.float32), valid=valid,
            frame_index=np.asarray(tracks.indices), timestamps=np.asarray(tracks.pts_seconds),
            tracked68=np.asarray(track.landmarks68, np.float32),
            points478=None if points478 is None else np.asarray(points478, np.float32),
            expression_names=tuple(self.model.blendshape_names or ()),
            extras={"encoder": self.source})
