"""Safe loading: FLAME pickles through the restricted unpickler, checkpoints with weights_only=True."""
from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from spectre.errors import AssetError, UnsafeFileError
from spectre.safeload import load_checkpoint, load_restricted_pickle


class _Payload:
    """Unpickling this runs ``open(sentinel, 'w')`` — if the loader lets it."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_flame_pickle_arrays_and_sparse(tmp_path):
    J = scipy.sparse.csc_matrix(np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]))
    data = {"v_template": np.arange(9.0).reshape(3, 3), "J_regressor": J, "bs_style": "lbs",
            "f": np.array([[0, 1, 2]], dtype=np.uint32)}
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    out = load_restricted_pickle(path)
    np.testing.assert_array_equal(out["v_template"], data["v_template"])
    np.testing.assert_array_equal(out["J_regressor"], J.toarray())
    assert out["bs_style"] == "lbs" and out["f"].dtype == np.uint32


def test_chumpy_objects_become_arrays(tmp_path, monkeypatch):
    """The real FLAME file stores chumpy.ch.Ch objects; we rebuild their value without chumpy."""
    ch = types.ModuleType("chumpy.ch")

    class Ch:  # mimics chumpy's pickled state: the value lives under 'x'
        def __init__(self, x):
            self.x = x

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch)
    value = np.random.default_rng(0).normal(size=(4, 3, 2))
    path = tmp_path / "chumpy.pkl"
    path.write_bytes(pickle.dumps({"shapedirs": Ch(value)}, protocol=2))
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")
    out = load_restricted_pickle(path)
    np.testing.assert_array_equal(out["shapedirs"], value)


def test_malicious_flame_pickle_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Payload(sentinel)}, protocol=2))
    with pytest.raises(UnsafeFileError, match="refusing to unpickle global"):
        load_restricted_pickle(path)
    assert not sentinel.exists()


def test_not_a_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(AssetError, match="not a readable pickle"):
        load_restricted_pickle(path)


def test_malicious_checkpoint_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.tar"
    torch.save({"E_flame": {"w": torch.zeros(1)}, "x": _Payload(sentinel)}, path)
    with pytest.raises(UnsafeFileError, match="refused to load"):
        load_checkpoint(path)
    assert not sentinel.exists()


def test_truncated_checkpoint(tmp_path):
    good = tmp_path / "good.tar"
    torch.save({"E_flame": {"w": torch.arange(1000.0)}}, good)
    assert torch.equal(load_checkpoint(good)["E_flame"]["w"], torch.arange(1000.0))
    bad = tmp_path / "truncated.tar"
    bad.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(AssetError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(AssetError, match="not found"):
        load_checkpoint(tmp_path / "missing.tar")
