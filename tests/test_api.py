"""The public Python API: what ``dir(spectre)`` lists resolves, ``import spectre`` stays light,
``spectre.reconstruct`` shows its real signature and docstring, ARKit weights come with their names."""
from __future__ import annotations

import inspect
import pydoc
import subprocess
import sys

import numpy as np

import spectre
from spectre.io.results import ARKIT_NAMES, FaceResult


def test_dir_lists_the_api_and_every_name_resolves():
    public = [n for n in dir(spectre) if not n.startswith("_")]
    for name in ("reconstruct", "run_batch", "ReconstructionResult", "FaceResult", "ARKIT_NAMES",
                 "load_face_model", "load_face_npz", "SpectreError"):
        assert name in public and name in spectre.__all__
    for name in spectre.__all__:
        assert getattr(spectre, name) is not None


def test_import_is_light():
    code = "import sys, spectre; print(sorted(m for m in ('torch', 'mediapipe', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_reconstruct_has_its_real_signature_and_docs():
    import spectre.reconstruct.fit  # noqa: F401 - binding the package must not hide the function's signature
    from spectre.reconstruct.reconstructor import reconstruct

    sig = inspect.signature(spectre.reconstruct)
    assert sig == inspect.signature(reconstruct)
    assert "args" not in sig.parameters and "kwargs" not in sig.parameters
    text = pydoc.render_doc(spectre.reconstruct, renderer=pydoc.plaintext)
    assert "*args" not in text
    head = text[: text.index("ReconstructionResult") + 40]
    for name in sig.parameters:  # the docstring's first lines spell the whole signature
        assert f"{name}=" in head or f"({name}," in head, name


def test_arkit_weights_have_names():
    T = 3
    w = np.random.default_rng(0).uniform(0, 1, (T, 52))
    face = FaceResult(track_id=0, model="ict", backend="fit", params={}, cam=np.zeros((T, 3)),
                      crop_tform=np.zeros((T, 3, 3)), landmarks2d=np.zeros((T, 68, 2)), landmarks3d=np.zeros((T, 68, 3)),
                      valid=np.ones(T, bool), frame_index=np.arange(T), timestamps=np.arange(T) / 25.0, arkit=w)
    assert face.arkit_names == ARKIT_NAMES and len(set(ARKIT_NAMES)) == 52
    curves = face.arkit_curves()
    np.testing.assert_array_equal(curves["jawOpen"], w[:, ARKIT_NAMES.index("jawOpen")])
    res = spectre.ReconstructionResult(video=None, fps=25.0, width=1, height=1, num_frames=T, faces=[face], config=None)
    assert res.arkit is w and res.arkit_names == ARKIT_NAMES


def test_expression_labels_are_distinct_and_keep_the_model_order():
    from spectre.models import load_face_model
    from spectre.reconstruct.arkit import expression_labels

    ict = load_face_model("ict")
    labels = expression_labels(ict)
    assert len(labels) == len(ict.expression_names) == len(set(labels))
    assert {"browInnerUpLeft", "browInnerUpRight", "cheekPuffLeft", "cheekPuffRight"} <= set(labels)
    for label, name in zip(labels, ict.expression_names, strict=True):
        assert label.startswith(name)
