"""Synthetic assets for the training tests: the golden deterministic weights written in the official
file layouts (SPECTRE/DECA checkpoint, VSR model.pth + model.json, EMOCA .ckpt) beside the synthetic
FLAME of ``conftest.flame_assets``, so the real asset loaders are exercised end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch


def golden_state_dict(gw, keys: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(gw.det_tensor(prefix + k, tuple(s)))) for k, s in keys.items()}


def write_synthetic_assets(root: Path, golden_dir: Path, gw, flame_assets: Path | None = None) -> Path:
    """An ``--assets`` folder with every training asset built from the golden weights."""
    root.mkdir(parents=True, exist_ok=True)
    if flame_assets is not None:
        for name in ("flame", "spectre_data"):
            if not (root / name).exists():
                shutil.copytree(flame_assets / name, root / name)
    keys = json.loads((golden_dir / "spectre_model_keys.json").read_text())
    ckpt = {"E_flame": golden_state_dict(gw, keys["E_flame"], "E_flame."),
            "E_expression": golden_state_dict(gw, keys["E_expression"], "E_expression.")}
    for name, file in (("spectre", "spectre_model.tar"), ("deca", "deca_model.tar")):
        (root / name).mkdir(exist_ok=True)
        torch.save(ckpt if name == "spectre" else {"E_flame": ckpt["E_flame"]}, root / name / file)
    lip = json.loads((golden_dir / "lipreader_keys.json").read_text())
    (root / "lipreader").mkdir(exist_ok=True)
    torch.save(golden_state_dict(gw, lip["keys"], "lipreader."), root / "lipreader" / "model.pth")
    (root / "lipreader" / "model.json").write_text(json.dumps(lip["ASSUMED_model_json"]))
    emo = json.loads((golden_dir / "emotion_keys.json").read_text())["emoca_checkpoint_state_dict"]
    (root / "emotion").mkdir(exist_ok=True)
    torch.save({"state_dict": golden_state_dict(gw, emo, "emotion.")}, root / "emotion" / "emotion.ckpt")
    return root
