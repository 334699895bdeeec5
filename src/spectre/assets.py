"""The asset registry: every file spectre can use, where to find it, its licence and how to get it.

Lookup order for a user asset: ``--assets DIR`` (``AssetStore(assets_dir)``), then ``$SPECTRE_HOME``,
then the user data directory (``$XDG_DATA_HOME/spectre`` or ``~/.local/share/spectre``). In each
folder an asset may sit at any of its candidate relative paths (so both our layout and the layout
of the official downloads work). Nothing here touches the network.
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .atomic import atomic_path
from .errors import AssetError, ConfigError, InputError
from .safeload import load_checkpoint, load_restricted_pickle

BUNDLED_ICT = "ict_compact.npz"


@dataclass(frozen=True)
class AssetSpec:
    name: str
    description: str
    candidates: tuple[str, ...]  # relative paths tried in each search folder; the first is the install path
    licence: str
    obtain: str
    used_by: str
    bundled: str | None = None  # file name inside spectre/data when the package ships a copy
    check: Callable[[Path], None] | None = None

    @property
    def install_path(self) -> str:
        return self.candidates[0]


def _check_flame(path: Path) -> None:
    d = load_restricted_pickle(path)
    need = {"v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table"}
    missing = need - set(d)
    if missing:
        raise AssetError(f"{path} is not a FLAME model (missing {sorted(missing)})")


def _checkpoint_keys(path: Path) -> dict:
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise AssetError(f"{path} does not hold a dict of state dicts")
    return ckpt


def _check_deca(path: Path) -> None:
    ckpt = _checkpoint_keys(path)
    if "E_flame" not in ckpt:
        raise AssetError(f"{path} is not a DECA checkpoint (no 'E_flame'; top-level keys {sorted(ckpt)[:6]})")


def _check_spectre(path: Path) -> None:
    ckpt = _checkpoint_keys(path)
    sd = ckpt.get("state_dict", {})
    if "E_expression" not in ckpt and not any(str(k).startswith("deca.E_expression") for k in sd):
        hint = " (this looks like a DECA checkpoint)" if "E_flame" in ckpt else ""
        raise AssetError(f"{path} is not a SPECTRE checkpoint (no 'E_expression'){hint}")


def _check_lipreader(path: Path) -> None:
    ckpt = _checkpoint_keys(path)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    if not any(str(k).startswith("encoder.frontend") for k in sd):
        raise AssetError(f"{path} is not a VSR lipreader model.pth (no 'encoder.frontend.*' weights)")


def _check_lipreader_json(path: Path) -> None:
    try:
        conf = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AssetError(f"{path} is not a lipreader model.json ({exc})") from None
    if not (isinstance(conf, list) and len(conf) == 3 and isinstance(conf[2], dict)):
        raise AssetError(f"{path} is not a lipreader model.json ([idim, odim, args] expected)")


def _check_emotion(path: Path) -> None:
    ckpt = _checkpoint_keys(path)
    sd = ckpt.get("state_dict", {})
    if not any(str(k).startswith("backbone.") for k in sd):
        raise AssetError(f"{path} is not an EMOCA emotion checkpoint (no 'state_dict' with 'backbone.*')")


def _check_face_encoder(path: Path) -> None:
    """A face-encoder checkpoint (``spectre train --model ict``); other checkpoints are named."""
    ckpt = _checkpoint_keys(path)
    if "face_encoder" in ckpt and isinstance(ckpt.get("face_encoder_spec"), dict):
        return
    if "E_expression" in ckpt or "E_flame" in ckpt:
        kind = "SPECTRE" if "E_expression" in ckpt else "DECA"
        raise AssetError(f"{path} is a {kind} checkpoint, not a face encoder "
                         f"(install it with `spectre assets add {kind.lower()} FILE`)")
    raise AssetError(f"{path} is not a face-encoder checkpoint (no 'face_encoder' weights with their spec; "
                     f"top-level keys {sorted(map(str, ckpt))[:6]}); use RUN/checkpoints/best.pt of "
                     "`spectre train --model ict`")


def _check_ict(path: Path) -> None:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as d:
            missing = {"neutral_vertices", "identity_deltas", "expression_deltas", "triangles"} - set(d.files)
    except Exception as exc:
        raise AssetError(f"{path} is not an ICT face model npz ({exc})") from None
    if missing:
        raise AssetError(f"{path} is not an ICT face model npz (missing {sorted(missing)})")


_FLAME_SITE = "https://flame.is.tue.mpg.de (free registration; FLAME 2020)"
_SPECTRE_DATA = "the official SPECTRE code, folder data/ (github filby89/spectre)"
_CC_BY_NC_SA = "CC BY-NC-SA 4.0 (SPECTRE data)"

ASSETS: dict[str, AssetSpec] = {a.name: a for a in [
    AssetSpec("flame", "FLAME 2020 generic_model.pkl", ("flame/generic_model.pkl", "generic_model.pkl",
              "FLAME2020/generic_model.pkl"), "FLAME licence (non-commercial research, registration)",
              _FLAME_SITE, "--model flame, learned backend, training", check=_check_flame),
    AssetSpec("deca", "DECA checkpoint deca_model.tar (E_flame)", ("deca/deca_model.tar", "deca_model.tar"),
              "DECA licence (non-commercial research)", "the DECA project (github YadiraF/DECA, data/deca_model.tar)",
              "learned backend, training", check=_check_deca),
    AssetSpec("spectre", "SPECTRE checkpoint spectre_model.tar (E_flame + E_expression)",
              ("spectre/spectre_model.tar", "spectre_model.tar", "pretrained/spectre_model.tar"),
              "SPECTRE licence (CC BY-NC-SA 4.0)", "the official SPECTRE release (quick_install.sh, pretrained/)",
              "learned backend", check=_check_spectre),
    AssetSpec("lipreader", "VSR LRS3 visual model model.pth (LRS3_V_WER32.3)",
              ("lipreader/model.pth", "LRS3_V_WER32.3/model.pth"), "VSR licence (non-commercial)",
              "mpc001/Visual_Speech_Recognition_for_Multiple_Languages model zoo (LRS3_V_WER32.3)",
              "lipread loss, evaluate", check=_check_lipreader),
    AssetSpec("lipreader_config", "VSR model.json for the lipreader", ("lipreader/model.json",
              "LRS3_V_WER32.3/model.json"), "VSR licence (non-commercial)", "shipped in the same zip as model.pth",
              "lipread loss, evaluate", check=_check_lipreader_json),
    AssetSpec("emotion", "EMOCA ResNet-50 emotion checkpoint (.ckpt)",
              ("emotion/emotion.ckpt", "ResNet50/checkpoints/deca-epoch=01-val_loss_total/"
               "dataloader_idx_0=1.27607644.ckpt"), "EMOCA licence (non-commercial, registration)",
              "the EMOCA project (emotion recognition models, ResNet50)", "expression loss, training",
              check=_check_emotion),
    AssetSpec("ict", "ICT-FaceKit face model (full npz)", ("ict_facekit/ict_face_model.npz", "ict_face_model.npz"),
              "MIT (ICT-FaceKit)", "bundled compact copy; full model: `spectre assets convert-ict` on the "
              "ICT-FaceKit download (github ICT-VGL/ICT-FaceKit)", "default face model", bundled=BUNDLED_ICT,
              check=_check_ict),
    AssetSpec("ict-encoder", "learned ICT face encoder (a `spectre train --model ict` checkpoint)",
              ("ict-encoder/encoder.pt",), "yours (trained on your videos)",
              "`spectre train CACHE -o RUN --model ict`, then RUN/checkpoints/best.pt", "learned backend, --model ict",
              check=_check_face_encoder),
    AssetSpec("head_template", "FLAME template mesh with UVs (head_template.obj)",
              ("spectre_data/head_template.obj", "flame/head_template.obj", "head_template.obj"),
              _CC_BY_NC_SA, _SPECTRE_DATA, "FLAME UVs and textured rendering"),
    AssetSpec("landmark_embedding", "FLAME 68-landmark embedding (landmark_embedding.npy)",
              ("spectre_data/landmark_embedding.npy", "flame/landmark_embedding.npy", "landmark_embedding.npy"),
              _CC_BY_NC_SA, _SPECTRE_DATA, "FLAME landmarks"),
    AssetSpec("uv_face_eye_mask", "FLAME UV face+eye mask (uv_face_eye_mask.png)",
              ("spectre_data/uv_face_eye_mask.png", "flame/uv_face_eye_mask.png", "uv_face_eye_mask.png"),
              _CC_BY_NC_SA, _SPECTRE_DATA, "photometric loss mask"),
    AssetSpec("mean_texture", "FLAME mean texture (mean_texture.jpg)",
              ("spectre_data/mean_texture.jpg", "flame/mean_texture.jpg", "mean_texture.jpg"),
              _CC_BY_NC_SA, _SPECTRE_DATA, "textured FLAME render"),
    AssetSpec("phonemes2visemes", "phoneme to viseme table (phonemes2visemes.csv)",
              ("spectre_data/phonemes2visemes.csv", "phonemes2visemes.csv"), _CC_BY_NC_SA, _SPECTRE_DATA,
              "viseme error rates in evaluate"),
]}


def user_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "spectre"


def bundled_path(filename: str) -> Path | None:
    try:
        p = Path(str(resources.files("spectre") / "data" / filename))
    except (ModuleNotFoundError, TypeError):
        return None
    return p if p.is_file() else None


@dataclass
class AssetStatus:
    spec: AssetSpec
    path: Path | None
    source: str  # "assets-dir", "SPECTRE_HOME", "user-data", "bundled", "missing"

    @property
    def found(self) -> bool:
        return self.path is not None

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path else 0


class AssetStore:
    """Finds, verifies and installs assets. ``assets_dir`` is the ``--assets`` option (highest priority)."""

    def __init__(self, assets_dir: str | Path | None = None):
        self.assets_dir = Path(assets_dir).expanduser() if assets_dir else None
        if self.assets_dir is not None and not self.assets_dir.is_dir():
            raise ConfigError(f"--assets folder does not exist: {self.assets_dir}")
        home = os.environ.get("SPECTRE_HOME")
        if home and Path(home).expanduser().exists() and not Path(home).expanduser().is_dir():
            raise ConfigError(f"SPECTRE_HOME={home} is a file, not a folder of assets (unset it or point it at "
                              "a folder)")

    @classmethod
    def coerce(cls, store: AssetStore | str | Path | None) -> AssetStore:
        return store if isinstance(store, AssetStore) else cls(store)

    def search_dirs(self) -> list[tuple[str, Path]]:
        dirs = []
        if self.assets_dir:
            dirs.append(("assets-dir", self.assets_dir))
        if os.environ.get("SPECTRE_HOME"):
            dirs.append(("SPECTRE_HOME", Path(os.environ["SPECTRE_HOME"]).expanduser()))
        dirs.append(("user-data", user_data_dir()))
        return dirs

    def locate(self, name: str) -> AssetStatus:
        spec = self.spec(name)
        for source, folder in self.search_dirs():
            for rel in spec.candidates:
                p = folder / rel
                if p.is_file():
                    return AssetStatus(spec, p, source)
        if spec.bundled and (p := bundled_path(spec.bundled)) is not None:
            return AssetStatus(spec, p, "bundled")
        return AssetStatus(spec, None, "missing")

    def find(self, name: str) -> Path | None:
        return self.locate(name).path

    def path(self, name: str) -> Path:
        """The asset's path, or an ``AssetError`` saying what it is, where to get it and where to put it."""
        status = self.locate(name)
        if status.path is None:
            spec = status.spec
            target = (self.assets_dir or user_data_dir()) / spec.install_path
            raise AssetError(f"missing asset '{name}' ({spec.description}); get it from {spec.obtain}; "
                             f"install it with `spectre assets add {name} FILE` or put it at {target}")
        return status.path

    @staticmethod
    def spec(name: str) -> AssetSpec:
        if name not in ASSETS:
            raise ConfigError(f"unknown asset {name!r} (known: {', '.join(ASSETS)})")
        return ASSETS[name]

    def status(self) -> list[AssetStatus]:
        return [self.locate(n) for n in ASSETS]

    def verify(self, name: str, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path} is not a file")
        spec = self.spec(name)
        if spec.check is not None:
            spec.check(path)

    def add(self, name: str, source: str | Path, overwrite: bool = False,
            deep_check: Callable[[Path], None] | None = None) -> Path:
        """Verify ``source`` (a file, or an http(s) URL the user gives) and install it atomically.
        ``deep_check`` (from a higher layer, e.g. building the network and loading it strictly) runs
        after the asset's own check."""
        spec = self.spec(name)
        target = (self.assets_dir or user_data_dir()) / spec.install_path
        source_str = str(source)
        if source_str.startswith(("http://", "https://")):
            with atomic_path(target.with_name(target.name + ".download")) as tmp:
                try:
                    with urllib.request.urlopen(source_str, timeout=60) as r, open(tmp, "wb") as f:
                        shutil.copyfileobj(r, f)
                except OSError as exc:
                    raise InputError(f"cannot download {source_str}: {exc}") from None
            source = target.with_name(target.name + ".download")
            try:
                self.verify(name, source)
                if deep_check is not None:
                    deep_check(Path(source))
                with atomic_path(target, overwrite) as tmp:
                    shutil.copyfile(source, tmp)
            finally:
                Path(source).unlink(missing_ok=True)
            return target
        self.verify(name, source)
        if deep_check is not None:
            deep_check(Path(source))
        with atomic_path(target, overwrite) as tmp:
            shutil.copyfile(source, tmp)
        return target
