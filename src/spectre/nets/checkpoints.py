"""One loader per official checkpoint kind, strict by default, with readable mismatch reports.

Every file goes through ``spectre.safeload.load_checkpoint`` (``torch.load(weights_only=True)``);
nothing is downloaded and no ImageNet initialisation is needed. A mismatch raises a one-line
``CheckpointError`` listing the missing, unexpected and wrong-shape keys and the file and release
that were expected; a file of another kind (a DECA file given as SPECTRE's, a lipreader given as
the emotion network, ...) is named as what it looks like.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..assets import AssetStore
from ..errors import AssetError, CheckpointError
from ..safeload import load_checkpoint
from .deca import DecaEncoder
from .emotion import EmotionNet, remap_emoca_state_dict
from .lipreader import Lipreader, LipreaderConfig
from .perceptual import PerceptualEncoder

RELEASES = {
    "deca": "DECA's deca_model.tar (E_flame)",
    "spectre": "SPECTRE's spectre_model.tar (E_flame + E_expression)",
    "lipreader": "the VSR LRS3_V_WER32.3 model.pth with its model.json",
    "emotion": "EMOCA's ResNet50 emotion checkpoint (.ckpt, state_dict)",
}
_LIST_AT_MOST = 4


def _tensors(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def describe_checkpoint(obj: Any) -> str:
    """What an unpickled checkpoint looks like, for 'wrong file' messages."""
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}, not a dict of state dicts"
    keys = [str(k) for k in obj]
    inner = obj.get("state_dict") if isinstance(obj.get("state_dict"), Mapping) else {}
    inner_keys = [str(k) for k in inner]
    if "face_encoder" in obj:
        spec = obj.get("face_encoder_spec")
        model = spec.get("model", "?") if isinstance(spec, Mapping) else "?"
        return f"a spectre face-encoder checkpoint (learned {model} encoder)"
    if "E_expression" in obj or any(k.startswith("deca.E_expression.") for k in inner_keys):
        return "a SPECTRE checkpoint (E_flame + E_expression)"
    if "E_flame" in obj:
        return "a DECA checkpoint (E_flame, no E_expression)"
    if any(k.startswith("backbone.") for k in inner_keys):
        return "an EMOCA emotion checkpoint (state_dict with backbone.*)"
    if any(k.startswith("encoder.frontend.") for k in keys + inner_keys):
        return "a VSR lipreader model.pth (encoder.frontend.*)"
    if any(k.startswith("encoder.features.") for k in keys):
        return "a bare perceptual-encoder state dict (encoder.features.*)"
    if any(k.startswith("encoder.layer1.") for k in keys):
        return "a bare ResNet encoder state dict (encoder.layer*)"
    shown = ", ".join(keys[:_LIST_AT_MOST]) + (" ..." if len(keys) > _LIST_AT_MOST else "")
    return f"an unknown checkpoint (top-level keys: {shown or 'none'})"


def _short(items: list[str]) -> str:
    more = f" ... (+{len(items) - _LIST_AT_MOST} more)" if len(items) > _LIST_AT_MOST else ""
    return ", ".join(items[:_LIST_AT_MOST]) + more


def state_dict_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[list, list, list]:
    """(missing, unexpected, wrong-shape descriptions) of ``state_dict`` against ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs expected {tuple(own[k].shape)}"
             for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, wrong


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, path: Path | str,
                            part: str, release: str, strict: bool = True, hint: str = "") -> nn.Module:
    """``load_state_dict`` that reports mismatches the way timm does, as one ``CheckpointError`` line.

    Non-strict loading still refuses wrong shapes (they can never be right) and loads the rest.
    """
    missing, unexpected, wrong = state_dict_mismatch(model, state_dict)
    if wrong or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys [{_short(missing)}]")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys [{_short(unexpected)}]")
        if wrong:
            parts.append(f"{len(wrong)} wrong-shape keys [{_short(wrong)}]")
        raise CheckpointError(f"{path}: {part} does not match the network ({'; '.join(parts)}); "
                              f"expected {release}{hint}")
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=strict)
    return model


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def _resolve(store: AssetStore | str | Path | None, name: str, path: str | Path | None) -> Path:
    return Path(path) if path is not None else AssetStore.coerce(store).path(name)


def _load(path: Path, kind: str) -> Any:
    return load_checkpoint(path, what=f"{kind} checkpoint")


def _wrong_kind(path: Path, obj: Any, kind: str) -> CheckpointError:
    return CheckpointError(f"{path} is {describe_checkpoint(obj)}; expected {RELEASES[kind]}")


# ---------------------------------------------------------------------------------------------
# DECA / SPECTRE


def _spectre_parts(obj: Any) -> tuple[dict | None, dict | None]:
    """(E_flame, E_expression) state dicts from either official layout, None where absent."""
    if not isinstance(obj, Mapping):
        return None, None
    if "E_flame" in obj or "E_expression" in obj:
        flame, expr = obj.get("E_flame"), obj.get("E_expression")
        return (_tensors(flame) if isinstance(flame, Mapping) else None,
                _tensors(expr) if isinstance(expr, Mapping) else None)
    inner = obj.get("state_dict")
    if isinstance(inner, Mapping):
        flame = {k[len("deca.E_flame."):]: v for k, v in _tensors(inner).items() if k.startswith("deca.E_flame.")}
        expr = {k[len("deca.E_expression."):]: v for k, v in _tensors(inner).items()
                if k.startswith("deca.E_expression.")}
        return flame or None, expr or None
    return None, None


def deca_from_state_dict(state_dict: Mapping[str, torch.Tensor], *, path: Path | str = "<state dict>",
                         strict: bool = True, release: str = RELEASES["deca"]) -> DecaEncoder:
    return _frozen(load_state_dict_checked(DecaEncoder(), state_dict, path=path, part="E_flame",
                                           release=release, strict=strict))


def perceptual_from_state_dict(state_dict: Mapping[str, torch.Tensor], *, path: Path | str = "<state dict>",
                               strict: bool = True) -> PerceptualEncoder:
    hint = ("; an alternative-backbone (--backbone resnet50) SPECTRE model is not supported"
            if any(k.startswith("encoder.layer1.") for k in state_dict) else "")
    return _frozen(load_state_dict_checked(PerceptualEncoder(), state_dict, path=path, part="E_expression",
                                           release=RELEASES["spectre"], strict=strict, hint=hint))


def load_deca(store: AssetStore | str | Path | None = None, *, path: str | Path | None = None,
              strict: bool = True) -> DecaEncoder:
    """DECA's coarse encoder from ``deca_model.tar['E_flame']`` (asset ``deca``); SPECTRE's file works too."""
    path = _resolve(store, "deca", path)
    obj = _load(path, "DECA")
    flame, _ = _spectre_parts(obj)
    if flame is None:
        raise _wrong_kind(path, obj, "deca")
    return deca_from_state_dict(flame, path=path, strict=strict)


def load_spectre(store: AssetStore | str | Path | None = None, *, path: str | Path | None = None,
                 strict: bool = True) -> tuple[DecaEncoder, PerceptualEncoder]:
    """(E_flame, E_expression) from ``spectre_model.tar`` (asset ``spectre``), either official layout:
    ``{'E_flame', 'E_expression'}`` or ``{'state_dict': {'deca.E_flame.*', 'deca.E_expression.*'}}``."""
    path = _resolve(store, "spectre", path)
    obj = _load(path, "SPECTRE")
    flame, expr = _spectre_parts(obj)
    if flame is None or expr is None:
        raise _wrong_kind(path, obj, "spectre")
    return (deca_from_state_dict(flame, path=path, strict=strict, release=RELEASES["spectre"]),
            perceptual_from_state_dict(expr, path=path, strict=strict))


# ---------------------------------------------------------------------------------------------
# lipreader


def _lipreader_config(config_path: Path) -> LipreaderConfig:
    try:
        return LipreaderConfig.from_file(config_path)
    except FileNotFoundError:
        raise AssetError(f"lipreader model.json not found: {config_path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AssetError(f"{config_path} is not a readable model.json ({str(exc).splitlines()[0]})") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise AssetError(f"{config_path} is not a VSR visual lipreader model.json: {exc}") from None


def build_lipreader(model_pth: Path, model_json: Path, *, strict: bool = True) -> Lipreader:
    cfg = _lipreader_config(model_json)
    obj = _load(model_pth, "lipreader")
    sd = obj
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping) \
            and not any(str(k).startswith("encoder.") for k in obj):
        sd = obj["state_dict"]  # tolerate a {'state_dict': ...} wrapper around the plain E2E state dict
    if not isinstance(sd, Mapping) or not any(str(k).startswith("encoder.frontend.") for k in sd):
        raise _wrong_kind(model_pth, obj, "lipreader")
    model = Lipreader(cfg)
    hint = f" (architecture from {model_json}: does that model.json belong to this model.pth?)"
    return _frozen(load_state_dict_checked(model, _tensors(sd), path=model_pth, part="the lipreader weights",
                                           release=RELEASES["lipreader"], strict=strict, hint=hint))


def load_lipreader(store: AssetStore | str | Path | None = None, *, path: str | Path | None = None,
                   config_path: str | Path | None = None, strict: bool = True) -> Lipreader:
    """The VSR lipreader from assets ``lipreader`` (model.pth) and ``lipreader_config`` (model.json).

    Without ``config_path``, a ``model.json`` beside ``model.pth`` wins over the registry lookup.
    """
    model_pth = _resolve(store, "lipreader", path)
    if config_path is None:
        beside = model_pth.with_name("model.json")
        config_path = beside if beside.is_file() else _resolve(store, "lipreader_config", None)
    return build_lipreader(model_pth, Path(config_path), strict=strict)


# ---------------------------------------------------------------------------------------------
# emotion


def emotion_from_emoca_state_dict(state_dict: Mapping[str, torch.Tensor], *, path: Path | str = "<state dict>",
                                  strict: bool = True) -> EmotionNet:
    """EMOCA ``EmoCnnModule`` weights -> ``EmotionNet`` (key remap of golden §5, then a strict load)."""
    return _frozen(load_state_dict_checked(EmotionNet(), remap_emoca_state_dict(_tensors(state_dict)), path=path,
                                           part="the emotion network weights", release=RELEASES["emotion"],
                                           strict=strict))


def load_emotion(store: AssetStore | str | Path | None = None, *, path: str | Path | None = None,
                 strict: bool = True) -> EmotionNet:
    """SPECTRE's emotion network from EMOCA's ResNet50 ``.ckpt`` (asset ``emotion``)."""
    path = _resolve(store, "emotion", path)
    obj = _load(path, "emotion")
    inner = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if not isinstance(inner, Mapping) or not any(str(k).startswith("backbone.") for k in inner):
        raise _wrong_kind(path, obj, "emotion")
    return emotion_from_emoca_state_dict(inner, path=path, strict=strict)
