"""spectre: visual-speech-aware 3D face reconstruction from talking-face video.

The public API is re-exported here lazily so that ``import spectre`` stays cheap
(no mediapipe / PyAV import until a function that needs them is used).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "reconstruct": ("spectre.reconstruct.reconstructor", "reconstruct"),
    "load_face_model": ("spectre.models", "load_face_model"),
    "AssetStore": ("spectre.assets", "AssetStore"),
    "SpectreError": ("spectre.errors", "SpectreError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'spectre' has no attribute {name!r}")
