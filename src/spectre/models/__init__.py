"""Face models behind one interface (``FaceModel``) and a loader by name."""
from __future__ import annotations

from .base import FaceGeometry, FaceModel, ParamSpec

MODEL_NAMES = ("ict", "flame")
#: the model used where none is named (bundled, no gated asset)
DEFAULT_MODEL = "ict"
#: the model whose ARKit-named blendshapes give ARKit weights to models without them (``arkit_names``)
ARKIT_MODEL = "ict"


def load_face_model(name: str = DEFAULT_MODEL, store=None, **kwargs) -> FaceModel:
    """Build a face model by name: ``ict`` (bundled default) or ``flame`` (user-supplied pkl)."""
    from ..errors import ConfigError

    if name == "ict":
        from .ict import ICTFaceModel
        return ICTFaceModel.from_store(store, **kwargs)
    if name == "flame":
        from .flame import FLAME
        return FLAME.from_store(store, **kwargs)
    raise ConfigError(f"unknown face model {name!r} (choose from {', '.join(MODEL_NAMES)})")


__all__ = ["FaceModel", "FaceGeometry", "ParamSpec", "load_face_model", "MODEL_NAMES", "DEFAULT_MODEL", "ARKIT_MODEL"]
