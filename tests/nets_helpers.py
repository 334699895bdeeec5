"""Shared helpers for the nets tests: golden weights in the official key layouts, images from uint8."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def golden_state_dict(gw, keys: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The deterministic golden weights for ``keys`` (name -> shape), seeded with ``prefix + name``."""
    return {k: torch.from_numpy(np.asarray(gw.det_tensor(prefix + k, tuple(s)))) for k, s in keys.items()}


def load_keys(golden_dir: Path, name: str) -> dict:
    return json.loads((golden_dir / name).read_text())


def u8_images(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32) / np.float32(255))


def max_err(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.detach().float().numpy() - b).max())


def assert_close(a: torch.Tensor, b: np.ndarray, tol: float = 1e-4) -> None:
    np.testing.assert_allclose(a.detach().float().numpy(), b, atol=tol, rtol=tol)
