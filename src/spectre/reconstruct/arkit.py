"""ARKit blendshape weights for any face model.

* Models whose expression is ARKit weights (``FaceModel.arkit_names``; ICT): native. ICT splits
  ``browInnerUp`` and ``cheekPuff`` into left/right halves, which are averaged; ARKit's ``tongueOut`` has
  no ICT shape and is 0.
* Other models (FLAME): **approximate**. The model's expression-driven motion of the 68 landmarks
  (brows, eyes, nose, lips, jaw line; identity and head rotation removed) is matched by a bounded
  least-squares fit of the ICT blendshapes' motion of the same landmarks (scaled to the model's units and
  face size). Landmarks see the lips, eyelids, brows and jaw, so mouth/jaw/blink/brow weights are
  meaningful, while shapes that barely move landmarks (cheekPuff, tongue, eye gaze) are poorly determined.
"""
from __future__ import annotations

import numpy as np
import torch

from ..faces.landmarks import IBUG68_LEFT_EYE, IBUG68_RIGHT_EYE
from ..io.results import ARKIT_NAMES
from ..models.base import FaceModel

__all__ = ["to_arkit_order", "LandmarkArkitSolver", "arkit_weights", "expression_labels"]


def expression_labels(model) -> tuple[str, ...]:
    """One distinct name per expression coefficient, for result files: the model's (ARKit) name where it
    is unique, else the name with the side its source name carries (ICT's ``browInnerUp_L`` ->
    ``browInnerUpLeft``) or a running number. The coefficients themselves stay the model's own."""
    names = tuple(str(n) for n in (model.blendshape_names or ()))
    source = tuple(str(n) for n in getattr(model, "source_expression_names", names))
    if len(source) != len(names):
        source = names
    out: list[str] = []
    for i, n in enumerate(names):
        if names.count(n) == 1:
            out.append(n)
            continue
        side = {"_L": "Left", "_R": "Right"}.get(source[i][-2:], "")
        label = n + side if side else f"{n}_{names[:i].count(n) + 1}"
        out.append(label)
    if len(set(out)) != len(out):  # sides did not separate them: number every repeat
        out = [n if names.count(n) == 1 else f"{n}_{names[:i].count(n) + 1}" for i, n in enumerate(names)]
    return tuple(out)


def to_arkit_order(expression: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(T, E) weights with ARKit ``names`` (duplicates allowed) -> (T, 52) in ``ARKIT_NAMES`` order."""
    expression = np.asarray(expression, np.float32)
    out = np.zeros((expression.shape[0], len(ARKIT_NAMES)), np.float32)
    for j, arkit in enumerate(ARKIT_NAMES):
        cols = [i for i, n in enumerate(names) if n == arkit]
        if cols:
            out[:, j] = expression[:, cols].mean(1)
    return np.clip(out, 0.0, 1.0)


class LandmarkArkitSolver:
    """Fits a reference model's ARKit blendshape weights (``ict``: a model with ``arkit_names``) to another
    model's expression motion of the 68 landmarks."""

    def __init__(self, ict: FaceModel, iterations: int = 200):
        with torch.no_grad():
            K = ict.spec["expression"].size
            zero = {"identity": torch.zeros(K + 1, ict.spec["identity"].size),
                    "expression": torch.cat([torch.zeros(1, K), torch.eye(K)]),
                    "rotation": torch.zeros(K + 1, 3)}
            lm = ict(zero).landmarks  # (K+1, 68, 3), cm
        self.neutral = lm[0].numpy().astype(np.float64)
        self.basis = (lm[1:] - lm[0]).reshape(K, -1).T.numpy().astype(np.float64)  # (204, K)
        self.names = tuple(ict.arkit_names or ())
        self.iterations = iterations

    @staticmethod
    def _size(pts: np.ndarray) -> float:
        return float(np.linalg.norm(pts[IBUG68_RIGHT_EYE].mean(0) - pts[IBUG68_LEFT_EYE].mean(0)))  # inter-ocular distance

    def solve(self, model: FaceModel, params: dict[str, np.ndarray]) -> np.ndarray:
        """(T, 52) approximate ARKit weights for ``model`` with per-frame ``params``."""
        with torch.no_grad():
            p = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in params.items()}
            rest = {k: v for k, v in p.items() if model.spec[k].role == "identity"}
            moving = {k: v for k, v in p.items() if k != model.rotation_param}
            lm_rest = model(model.complete(rest)).landmarks.double().numpy()
            lm_move = model(model.complete(moving)).landmarks.double().numpy()
        if lm_rest.shape[0] == 1:
            lm_rest = np.repeat(lm_rest, lm_move.shape[0], 0)
        scale = np.array([self._size(self.neutral) / max(self._size(x), 1e-9) for x in lm_rest])
        B = ((lm_move - lm_rest) * scale[:, None, None]).reshape(len(scale), -1)  # (T, 204)
        A = self.basis
        step = 1.0 / np.linalg.norm(A, 2) ** 2
        W = np.zeros((B.shape[0], A.shape[1]))
        for _ in range(self.iterations):  # projected gradient on the box [0, 1], all frames at once
            W = np.clip(W - step * ((W @ A.T - B) @ A), 0.0, 1.0)
        return to_arkit_order(W, self.names)


def arkit_weights(model: FaceModel, params: dict[str, np.ndarray],
                  solver: LandmarkArkitSolver | None = None) -> np.ndarray:
    """(T, 52) ARKit weights of ``params``: native where the model names its expression coefficients in
    ARKit (``arkit_names``), else fitted by ``solver`` (required then)."""
    names = model.arkit_names
    if names is not None:
        return to_arkit_order(params["expression"], tuple(names))
    if solver is None:
        raise ValueError(f"{model.name} has no ARKit blendshapes: an ARKit solver is needed")
    return solver.solve(model, params)
