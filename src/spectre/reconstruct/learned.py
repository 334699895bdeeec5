"""The ``learned`` backend: the official SPECTRE inference (SPEC §1.3–§1.5, §2).

Per frame, DECA's coarse encoder predicts identity, pose, camera and an initial expression/jaw from the
official 224 crop (scale 1.6); the perceptual encoder runs over the official K-frame chunks (edge padding,
overlap, tail merge, trimming: :mod:`.chunking`) and its residuals are added to DECA's expression and
jaw. Frames are decoded and cropped in a stream, so memory does not grow with the clip length.

Fixes of SPEC §9 that touch inference: any device (no hard-coded CUDA), no crash without a face (a clear
``NoFaceError`` upstream; frames without a detection use landmarks interpolated from their neighbours),
clips are never mixed in one temporal convolution (each chunk is its own sequence).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..faces.crop import (
    FACE_CROP_SCALE,
    FACE_CROP_SIZE,
    face_crop_transform,
    interpolate_landmarks,
    warp_crop,
    warp_crop_fast,
)
from ..geometry import crop_to_pixels, project_to_crop
from ..io.results import FaceResult
from ..nets import load_spectre
from ..nets.deca import split_deca_params
from ..nets.fast import prepare_for_inference
from .chunking import plan_chunks
from .crop_stream import CropStream

__all__ = ["LearnedBackend", "LEARNED_MODEL"]

#: the face model the official encoders predict parameters of (the learned backend works with no other)
LEARNED_MODEL = "flame"


class LearnedBackend:
    """DECA + SPECTRE perceptual encoder + FLAME, loaded once and reused for many videos."""

    def __init__(self, model, store, runtime, config, crop_scale: float = FACE_CROP_SCALE, networks=None):
        self.model = model
        self.cfg = config
        self.crop_scale = crop_scale
        self.runtime = runtime
        deca, perceptual = networks if networks is not None else load_spectre(store)
        if config.fast:
            self.deca = prepare_for_inference(deca, runtime)
            self.perceptual = prepare_for_inference(perceptual, runtime)
        else:
            deca.eval().requires_grad_(False).to(runtime.device)
            perceptual.eval().requires_grad_(False).to(runtime.device)
            self.deca = lambda x: deca(x.to(runtime.device)).float()
            self.perceptual = lambda x: tuple(t.float() for t in perceptual(x.to(runtime.device)))

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, num_frames: int, get_crops: Callable[[np.ndarray], torch.Tensor]) -> dict[str, np.ndarray]:
        """Codes for ``num_frames`` frames. ``get_crops(positions)`` returns (N, 3, 224, 224) float crops in
        [0, 1] for increasing frame positions; it is called once per chunk with positions not seen before
        (the plan only moves forward), so the caller can stream. Returns shape/tex/exp/pose/cam/light."""
        plan = plan_chunks(num_frames, self.cfg.chunk_length, self.cfg.chunk_overlap, self.cfg.edge_padding)
        out: dict[str, np.ndarray] = {}
        cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # position -> (crop, deca params)
        for chunk in plan:
            need = np.unique(chunk.frames)
            new = np.array([p for p in need if p not in cache], dtype=np.int64)
            if len(new):
                crops = get_crops(new).float()
                # DECA is per frame: micro-batches bound the activation memory of its ResNet-50
                params = torch.cat([self.deca(crops[i:i + 16]).float().cpu() for i in range(0, len(crops), 16)])
                for i, p in enumerate(new):
                    cache[int(p)] = (crops[i], params[i])
            images = torch.stack([cache[int(p)][0] for p in chunk.frames])
            codes = split_deca_params(torch.stack([cache[int(p)][1] for p in chunk.frames]))
            exp_res, jaw_res = self.perceptual(images)
            exp_res, jaw_res = exp_res.float().cpu(), jaw_res.float().cpu()
            sl = slice(chunk.keep_from, chunk.keep_to)
            final = {
                "shape": codes["shape"][sl], "tex": codes["tex"][sl], "cam": codes["cam"][sl],
                "light": codes["light"][sl].reshape(-1, 27),
                "exp": codes["exp"][sl] + exp_res[sl],
                "pose": torch.cat([codes["pose"][sl, :3], codes["pose"][sl, 3:6] + jaw_res[sl]], -1),
                "deca_exp": codes["exp"][sl], "deca_jaw": codes["pose"][sl, 3:6],
            }
            for k, v in final.items():
                out.setdefault(k, []).append(v.numpy())
            # frames before the next chunk's first frame are never needed again
            keep_from = int(chunk.out_frames[-1]) - self.cfg.chunk_overlap - self.cfg.edge_padding
            for p in [p for p in cache if p < keep_from]:
                del cache[p]
        return {k: np.concatenate(v) for k, v in out.items()}

    # ------------------------------------------------------------------------------------------
    def run(self, source, track, tracks) -> FaceResult:
        """Reconstruct one face track of ``source`` (a ``VideoSource``)."""
        valid = np.asarray(track.valid, bool)
        lm = np.asarray(track.landmarks68, np.float64)
        filled = interpolate_landmarks(np.where(valid[:, None, None], lm, np.nan))
        tforms = face_crop_transform(filled, scale=self.crop_scale)
        T = len(tracks.indices)
        warp = warp_crop_fast if self.cfg.fast else warp_crop
        stream = CropStream(source, tracks.indices, tforms, FACE_CROP_SIZE, warp)
        codes = self.encode(T, stream)
        params = {"shape": codes["shape"], "expression": codes["exp"], "jaw_pose": codes["pose"][:, 3:6],
                  "global_pose": codes["pose"][:, :3]}
        full = {k: v.numpy() for k, v in self.model.complete({k: torch.from_numpy(v) for k, v in params.items()}).items()}
        lmk3d, lmk2d = self._landmarks(full, codes["cam"], tforms)
        return FaceResult(
            track_id=int(track.track_id), model=self.model.name, backend="learned", params=full,
            cam=codes["cam"].astype(np.float32), crop_tform=tforms, landmarks2d=lmk2d, landmarks3d=lmk3d,
            valid=valid, frame_index=np.asarray(tracks.indices), timestamps=np.asarray(tracks.pts_seconds),
            tracked68=np.asarray(track.landmarks68, np.float32), points478=np.asarray(track.points478, np.float32),
            expression_names=tuple(f"exp{i:02d}" for i in range(codes["exp"].shape[1])),
            extras={"tex": codes["tex"], "light": codes["light"], "deca_exp": codes["deca_exp"],
                    "deca_jaw": codes["deca_jaw"]})

    @torch.no_grad()
    def _landmarks(self, params: dict[str, np.ndarray], cam: np.ndarray, tforms: np.ndarray, chunk: int = 64):
        T = cam.shape[0]
        l3, l2 = [], []
        inv = np.linalg.inv(np.asarray(tforms, np.float64))
        for a in range(0, T, chunk):
            sl = slice(a, min(a + chunk, T))
            p = {k: torch.from_numpy(np.ascontiguousarray(v[sl])) for k, v in params.items()}
            g = self.model(self.model.complete(p))
            q = project_to_crop(g.landmarks, torch.from_numpy(cam[sl]).to(g.landmarks))[..., :2].numpy()
            px = crop_to_pixels(q.astype(np.float64), FACE_CROP_SIZE)  # crop pixels (SPEC §3.4)
            frame = np.einsum("tij,tpj->tpi", inv[sl, :2, :2], px) + inv[sl, None, :2, 2]
            l3.append(g.landmarks.numpy())
            l2.append(frame.astype(np.float32))
        return np.concatenate(l3), np.concatenate(l2)
