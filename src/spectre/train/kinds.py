"""The training steps by face model: how to build each, what its batches need, when ``auto`` picks it.

Adding a face model to training is one entry here (and its step module); the trainer never tests a
model's name.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError
from ..faces.crop import FACE_CROP_SIZE
from .flame_step import build_flame_step
from .ict_step import build_ict_step
from .step import TrainStep


@dataclass(frozen=True)
class StepKind:
    build: Callable[..., TrainStep]       # (store, weights, init=, image_size=) -> TrainStep
    needs_fit: bool                       # batches carry fit-backend targets (``fit.npz`` in the cache)
    image_size: int | None = None         # the one crop size its networks take (None: any)
    available: Callable[[object], bool] = lambda store: True  # auto picks the first kind whose assets exist


def _flame_assets(store) -> bool:
    return store.find("flame") is not None and (store.find("deca") is not None or store.find("spectre") is not None)


#: in ``auto`` preference order: FLAME (official SPECTRE training) when its assets are installed, else ICT
STEP_KINDS: dict[str, StepKind] = {
    "flame": StepKind(build_flame_step, needs_fit=False, image_size=FACE_CROP_SIZE, available=_flame_assets),
    "ict": StepKind(build_ict_step, needs_fit=True),
}


def resolve_face_model(name: str, store) -> str:
    """``auto``: the first kind whose assets are installed; any other name must be a known kind."""
    if name in STEP_KINDS:
        return name
    if name != "auto":
        raise ConfigError(f"unknown face model {name!r} ({', '.join(STEP_KINDS)} or auto)")
    return next(k for k, kind in STEP_KINDS.items() if kind.available(store))
