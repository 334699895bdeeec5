"""What one reconstructed video is: :class:`ReconstructionResult`, returned by ``spectre.reconstruct``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.results import ARKIT_NAMES, FaceResult
from .config import ReconstructConfig

__all__ = ["ReconstructionResult"]


@dataclass
class ReconstructionResult:
    """What ``spectre.reconstruct`` returns for one video.

    ``faces``: one :class:`~spectre.io.results.FaceResult` per reconstructed face track (arrays per input
    frame: parameters, camera, crop transforms, 2D/3D landmarks, valid mask, timestamps, ARKit weights);
    ``arkit`` / ``arkit_names``: the first face's ARKit weights and their names (each face has the same,
    plus ``arkit_curves()``, a name -> (T,) dict); ``outputs``: files written (empty without ``output_dir``);
    ``timings``: seconds per stage.
    """

    video: Path
    fps: float
    width: int
    height: int
    num_frames: int
    faces: list[FaceResult]
    config: ReconstructConfig
    outputs: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def face(self) -> FaceResult:
        """The first (with ``face='largest'``: the only) face."""
        return self.faces[0]

    @property
    def arkit(self) -> np.ndarray | None:
        """The first face's ARKit weights, (T, 52) in the order of :attr:`arkit_names` (None without)."""
        return self.faces[0].arkit if self.faces else None

    @property
    def arkit_names(self) -> tuple[str, ...]:
        """Names of the :attr:`arkit` columns: Apple's 52 ARKit blendshapes (``"jawOpen"``, ...)."""
        return ARKIT_NAMES
