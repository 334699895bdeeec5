"""Reconstruction: the ``fit`` and ``learned`` backends and the video pipeline.

``spectre.reconstruct`` is both this package and the one-video API function: calling the package
(``spectre.reconstruct(path, ...)``) calls :func:`spectre.reconstruct.pipeline.reconstruct`, so the
public name keeps working after ``import spectre.reconstruct.fit`` has bound the package to it.
"""
from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .pipeline import reconstruct

        return reconstruct(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


def __getattr__(name):
    if name in ("reconstruct", "ReconstructConfig", "ReconstructionResult", "run_batch", "Reconstructor"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
