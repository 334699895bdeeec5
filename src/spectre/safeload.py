"""Loading untrusted files without running their code.

* Checkpoints: ``torch.load(weights_only=True)`` only; anything else in the pickle is refused.
* Pickles of data (FLAME's model, its landmark embedding, LRS3's split lists): the one
  ``RestrictedUnpickler``, given an allow-list per file kind. FLAME's ``generic_model.pkl`` (a Python-2
  pickle holding numpy arrays, a scipy sparse matrix and, in the real file, ``chumpy.ch.Ch`` objects):
  numpy arrays are rebuilt, chumpy objects and scipy sparse matrices become plain numpy, every other
  global is refused.
"""
from __future__ import annotations

import codecs
import copyreg
import io
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AssetError, UnsafeFileError

#: numpy's array reconstruction machinery: what a pickle of plain numpy arrays references
NUMPY_ARRAY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np.core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np.core.multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("_codecs", "encode"): codecs.encode,  # protocol-2 pickles written by Python 3 encode raw bytes this way
}


class RestrictedUnpickler(pickle.Unpickler):
    """The one restricted unpickler: a global resolves only through ``allowed`` (``(module, name) ->
    object``) or, failing that, ``resolve(module, name)`` (returns None to refuse); anything else raises
    ``UnsafeFileError`` naming the global and ``holds`` (what such a file may contain). With neither,
    only plain containers, strings and numbers load."""

    def __init__(self, file, allowed: Mapping[tuple[str, str], Any] | None = None, *, holds: str = "plain data",
                 resolve: Callable[[str, str], Any] | None = None, encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self.allowed = dict(allowed or {})
        self.resolve = resolve
        self.holds = holds

    def find_class(self, module: str, name: str) -> Any:
        hit = self.allowed.get((module, name))
        if hit is None and self.resolve is not None:
            hit = self.resolve(module, name)
        if hit is None:
            raise UnsafeFileError(f"refusing to unpickle global '{module}.{name}' ({self.holds})")
        return hit


class _PickledStub:
    """Stand-in for a chumpy or scipy.sparse object: records its pickled state, runs nothing."""

    kind = "stub"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = state[1]
        if not isinstance(state, dict):
            raise UnsafeFileError(f"unexpected pickled {self.kind} state of type {type(state).__name__}")
        if self.kind == "sparse":
            shape = tuple(state.get("_shape") or state.get("shape"))
            data = np.asarray(state["data"])
            indices = np.asarray(state["indices"]).astype(np.int64)
            indptr = np.asarray(state["indptr"]).astype(np.int64)
            dense = np.zeros(shape, dtype=data.dtype)
            if self.fmt == "csc":
                for j in range(shape[1]):
                    dense[indices[indptr[j]:indptr[j + 1]], j] = data[indptr[j]:indptr[j + 1]]
            else:
                for i in range(shape[0]):
                    dense[i, indices[indptr[i]:indptr[i + 1]]] = data[indptr[i]:indptr[i + 1]]
            return dense
        # chumpy: the value of a Ch lives under 'x' (or 'a' for some wrappers)
        for key in ("x", "a", "r"):
            if key in state and isinstance(state[key], (np.ndarray, list, float, int)):
                return np.asarray(state[key])
            if key in state and isinstance(state[key], _PickledStub):
                return state[key].to_numpy()
        raise UnsafeFileError("chumpy object without a plain array value; convert the pickle with numpy")


def _stub_class(kind: str, fmt: str = "") -> type:
    return type(f"_{kind}_{fmt}_stub", (_PickledStub,), {"kind": kind, "fmt": fmt})


def _flame_stub(module: str, name: str) -> type | None:
    if module.startswith("chumpy"):
        return _stub_class("chumpy")
    if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
        return _stub_class("sparse", name[:3])
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, _PickledStub):
        return value.to_numpy()
    if isinstance(value, bytes):
        return value.decode("latin1")
    return value


def load_restricted_pickle(path: str | Path) -> dict[str, Any]:
    """Load a FLAME-style pickle (dict of arrays) safely; chumpy/scipy objects become numpy arrays."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AssetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), NUMPY_ARRAY_GLOBALS, resolve=_flame_stub,
                                  holds="only numpy, scipy.sparse and chumpy data are allowed in a FLAME model file").load()
    except UnsafeFileError as exc:
        raise UnsafeFileError(f"{path}: {exc}") from None
    except Exception as exc:  # truncated, not a pickle, wrong protocol ...
        raise AssetError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise AssetError(f"{path} does not hold a dict of arrays (got {type(obj).__name__})")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): _plain(v) for k, v in obj.items()}


def load_checkpoint(path: str | Path, *, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` on CPU with one-line errors naming the file and the problem."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 31" on a corrupt file: the error says it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = [m.strip() for m in str(exc).splitlines() if m.strip()]
        detail = next((m for m in msg if "Unsupported global" in m or "GLOBAL" in m), None)
        if detail is not None:
            raise UnsafeFileError(f"{path}: refused to load {what}: it references code or objects outside "
                                  f"plain tensors ({detail[:200]})") from None
        # no code reference: a corrupt or foreign file (torch's own text advises weights_only=False: not us)
        reason = next((msg[i + 1] for i, m in enumerate(msg[:-1]) if m.endswith("WeightsUnpickler error:")),
                      msg[-1] if msg else type(exc).__name__)
        raise AssetError(f"{path} is not a readable {what} (corrupt or not a PyTorch file: {reason[:200]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise AssetError(f"{path} is not a readable {what} ({first[:200]})") from None
    except Exception as exc:  # noqa: BLE001 - torch's unpickler fails on garbage with any error (IndexError, ...)
        first = (str(exc).splitlines() or [""])[0]
        raise AssetError(f"{path} is not a readable {what} (corrupt: {type(exc).__name__} {first[:160]})") from None
