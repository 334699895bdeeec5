"""spectre: visual-speech-aware 3D face reconstruction from talking-face video.

    import spectre
    result = spectre.reconstruct("clip.mp4", "out/", meshes="glb")   # -> ReconstructionResult
    result.arkit, result.arkit_names                                  # (T, 52) weights and their names

The public API below is loaded lazily so that ``import spectre`` stays cheap (no torch, mediapipe or PyAV
until a name that needs them is used); ``dir(spectre)`` lists it.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> (module, attribute); ``None`` as attribute: the module itself
_LAZY = {
    # ``spectre.reconstruct`` is the reconstruct package, callable as the one-video function (its
    # signature and docstring are the function's), so ``spectre.reconstruct.fit`` keeps working
    "reconstruct": ("spectre.reconstruct", None),
    "run_batch": ("spectre.reconstruct.batch", "run_batch"),
    "ReconstructConfig": ("spectre.reconstruct.config", "ReconstructConfig"),
    "ReconstructionResult": ("spectre.reconstruct.result", "ReconstructionResult"),
    "FaceResult": ("spectre.io.results", "FaceResult"),
    "ARKIT_NAMES": ("spectre.io.results", "ARKIT_NAMES"),
    "load_face_npz": ("spectre.io.results", "load_face_npz"),
    "load_face_model": ("spectre.models", "load_face_model"),
    "FaceModel": ("spectre.models.base", "FaceModel"),
    "AssetStore": ("spectre.assets", "AssetStore"),
    "SpectreError": ("spectre.errors", "SpectreError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'spectre' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | {k for k in globals() if k.startswith("__") and k.endswith("__")})
