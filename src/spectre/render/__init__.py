"""Differentiable rendering in pure PyTorch: rasteriser, DECA/SPECTRE shading, renders and video frames.

The public names below load lazily, so that :mod:`.posed` and :mod:`.compiled` (the video render in a
process without torch) can be imported without importing torch."""
from __future__ import annotations

import importlib

#: public name -> module that defines it
_PUBLIC = {
    "Fragments": "rasterize", "rasterize": "rasterize", "interpolate": "rasterize",
    "perspective_project": "rasterize", "Renderer": "renderer", "RenderOutput": "renderer",
    "warp_affine": "renderer", "add_sh_light": "shading", "add_directional_light": "shading",
    "add_point_light": "shading", "default_shape_lights": "shading", "shape_shading": "shading",
}

__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
