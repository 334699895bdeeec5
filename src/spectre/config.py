"""Typed configs: dataclasses <-> YAML, with unknown keys and wrong types reported in one line.

Every command saves its fully resolved config next to its outputs, so a result can be reproduced
with ``--config that.yaml``. The schema is the dataclass itself: each field's type hint, plus the
range or choices given with :func:`setting` (field metadata); :func:`check_fields` enforces both before
any work, naming the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .atomic import atomic_write_text
from .errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (paths become strings, tuples become lists)."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; nested dataclasses are built recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not a UTF-8 text file (binary or another encoding)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config {path} is not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    return data


def load_config(cls: type[T], path: str | Path | None = None, **overrides: Any) -> T:
    """Defaults <- YAML file <- explicit overrides (``None`` overrides are ignored)."""
    data = load_yaml(path) if path else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, data, str(path) if path else "config")


def save_config(cfg: Any, path: str | Path, overwrite: bool = True) -> Path:
    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False), overwrite)


def setting(default: Any, *, min: float | None = None, max: float | None = None, above: float | None = None,
            choices: typing.Sequence | None = None) -> Any:
    """A dataclass field with its allowed values: ``min``/``max`` inclusive, ``above`` exclusive,
    ``choices`` (``None`` is allowed when the type hint is optional)."""
    meta = {k: v for k, v in dict(min=min, max=max, above=above, choices=choices).items() if v is not None}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _kind(hint: Any) -> tuple[tuple[type, ...], bool]:
    """(accepted base types, None allowed) of a type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        kinds = tuple(k for a in args if a is not type(None) for k in _kind(a)[0])
        return kinds, type(None) in args
    if origin is not None:
        return (origin,), False
    return ((hint,) if isinstance(hint, type) else ()), hint is type(None)


def _type_ok(value: Any, kinds: tuple[type, ...]) -> bool:
    if not kinds:
        return True
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, (int, float)):
        return math.isfinite(value)
    if tuple in kinds or list in kinds:
        return isinstance(value, (list, tuple))
    return isinstance(value, kinds)


_NAMES = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
          tuple: "a list", list: "a list", dict: "a mapping"}


def _allowed(kinds: tuple[type, ...], optional: bool, meta: dict) -> str:
    if "choices" in meta:
        text = "one of " + ", ".join(map(str, meta["choices"]))
    else:
        text = " or ".join(_NAMES.get(k, k.__name__) for k in kinds) or "any value"
        bounds = [f">= {meta['min']}" if "min" in meta else "", f"> {meta['above']}" if "above" in meta else "",
                  f"<= {meta['max']}" if "max" in meta else ""]
        if any(bounds):
            text += " " + " and ".join(b for b in bounds if b)
    return text + (" (or null)" if optional else "")


def check_fields(cfg: Any, where: str = "config", prefix: str = "") -> None:
    """Every field of dataclass ``cfg`` (recursively) has its hinted type and lies in its range or
    choices; else a one-line ``ConfigError``: ``where: fit.iterations = -5 is not allowed (an integer >= 1)``."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        hint = hints.get(f.name)
        if dataclasses.is_dataclass(hint):
            if not dataclasses.is_dataclass(value):
                raise ConfigError(f"{where}: {key} must be a mapping of keys to values, not {value!r}")
            check_fields(value, where, f"{key}.")
            continue
        kinds, optional = _kind(hint)
        meta = dict(f.metadata)
        ok = (value is None and optional) or (value is not None and _type_ok(value, kinds))
        if ok and value is not None:
            if "choices" in meta:
                ok = value in meta["choices"]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                ok = ok and ("min" not in meta or value >= meta["min"]) and ("max" not in meta or value <= meta["max"])
                ok = ok and ("above" not in meta or value > meta["above"])
        if not ok:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ConfigError(f"{where}: {key} = {shown} is not allowed ({_allowed(kinds, optional, meta)})")
