"""Differentiable rendering in pure PyTorch: rasteriser, DECA/SPECTRE shading, renders and video frames."""
from .rasterize import Fragments, interpolate, perspective_project, rasterize
from .renderer import Renderer, RenderOutput, warp_affine
from .shading import add_directional_light, add_point_light, add_sh_light, default_shape_lights, shape_shading

__all__ = ["Fragments", "rasterize", "interpolate", "perspective_project", "Renderer", "RenderOutput",
           "warp_affine", "add_sh_light", "add_directional_light", "add_point_light", "default_shape_lights",
           "shape_shading"]
