"""The training steps by face model: how to build each, what its batches need, when ``auto`` picks it.

Adding a face model to training is one entry here (and its step module); the trainer never tests a
model's name.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError
from ..faces.crop import FACE_CROP_SIZE
from .data import ClipDataConfig
from .encoder_step import build_encoder_step
from .flame_step import build_flame_step
from .step import LossWeights, TrainStep


@dataclass(frozen=True)
class StepKind:
    build: Callable[[object, LossWeights, str | None, ClipDataConfig, str], TrainStep]  # store, weights, init, data, name
    needs_fit: bool                       # batches carry fit-backend targets (``fit.npz`` in the cache)
    image_size: int | None = None         # the one crop size its networks take (None: any)
    available: Callable[[object], bool] = lambda store: True  # auto picks the first kind whose assets exist
    precise_bn: int = 0                   # default --precise-bn: training clips to recalibrate BatchNorm on


def _flame_assets(store) -> bool:
    return store.find("flame") is not None and (store.find("deca") is not None or store.find("spectre") is not None)


def _flame(store, weights: LossWeights, init: str | None, data: ClipDataConfig, name: str) -> TrainStep:
    return build_flame_step(store, weights, init=init, image_size=data.image_size)


def _encoder(store, weights: LossWeights, init: str | None, data: ClipDataConfig, name: str) -> TrainStep:
    return build_encoder_step(store, weights, init=init, image_size=data.image_size, clip_length=data.clip_length,
                              model_name=name)


#: in ``auto`` preference order: FLAME (official SPECTRE training) when its assets are installed, else ICT
STEP_KINDS: dict[str, StepKind] = {
    "flame": StepKind(_flame, needs_fit=False, image_size=FACE_CROP_SIZE, available=_flame_assets),
    "ict": StepKind(_encoder, needs_fit=True, precise_bn=32),  # a face encoder distilled from the fit backend (encoder_step.py)
}


def resolve_face_model(name: str, store) -> str:
    """``auto``: the first kind whose assets are installed; any other name must be a known kind."""
    if name in STEP_KINDS:
        return name
    if name != "auto":
        raise ConfigError(f"unknown face model {name!r} ({', '.join(STEP_KINDS)} or auto)")
    return next(k for k, kind in STEP_KINDS.items() if kind.available(store))
