"""Face models behind one interface (``FaceModel``) and a loader by name."""
from __future__ import annotations

from ..errors import ConfigError
from .base import FaceGeometry, FaceModel, ParamSpec
from .flame import FLAME
from .ict import ICTFaceModel

#: name -> model class (``from_store(store, **kwargs)`` builds one); a new model is one entry here
MODELS: dict[str, type[FaceModel]] = {"ict": ICTFaceModel, "flame": FLAME}
MODEL_NAMES = tuple(MODELS)
#: the model used where none is named (bundled, no gated asset)
DEFAULT_MODEL = "ict"
#: the model whose ARKit-named blendshapes give ARKit weights to models without them (``arkit_names``)
ARKIT_MODEL = "ict"


def load_face_model(name: str = DEFAULT_MODEL, store=None, **kwargs) -> FaceModel:
    """Build a face model by name: ``ict`` (bundled default) or ``flame`` (user-supplied pkl)."""
    if name in MODELS:
        return MODELS[name].from_store(store, **kwargs)
    raise ConfigError(f"unknown face model {name!r} (choose from {', '.join(MODEL_NAMES)})")


__all__ = ["FaceModel", "FaceGeometry", "ParamSpec", "load_face_model", "MODELS", "MODEL_NAMES", "DEFAULT_MODEL", "ARKIT_MODEL"]
