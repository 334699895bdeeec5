"""Networks that load the official checkpoints (DECA, SPECTRE, VSR lipreader, EMOCA emotion), no torchvision.

Heavy modules are imported lazily so ``import spectre.nets`` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DecaEncoder": "deca", "split_deca_params": "deca", "DECA_PARAM_SPLIT": "deca",
    "PerceptualEncoder": "perceptual", "combine_with_deca": "perceptual",
    "Lipreader": "lipreader", "LipreaderConfig": "lipreader", "DecodeOptions": "beam_search",
    "EmotionNet": "emotion",
    "load_deca": "checkpoints", "load_spectre": "checkpoints", "load_lipreader": "checkpoints",
    "load_emotion": "checkpoints", "describe_checkpoint": "checkpoints",
    "prepare_for_inference": "fast", "FastPath": "fast", "fold_batchnorms": "fast",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
