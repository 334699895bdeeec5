"""spectre.reconstruct(path, output_dir=None, *, backend=None, model=None, face=None, device=None,
precision=None, layout=None, render_colours=None, meshes=None, arkit_format=None, config=None, assets=None,
overwrite=False)
-> ReconstructionResult

Reconstruct the face(s) of one video (:func:`spectre.reconstruct.reconstructor.reconstruct`): without
``output_dir`` nothing is written; with it the ``.npz``, the ARKit CSV (``arkit_format``: ``csv``,
``livelink`` or ``both``), the render video (``layout``, ``render_colours``) and optional meshes
(``meshes``: ``obj``, ``ply``, ``glb``) are written there. The result holds per-face parameters, camera,
landmarks, timestamps and ``result.arkit`` (T, 52) with ``result.arkit_names``.

Reconstruction: the ``fit`` and ``learned`` backends and the video-to-results path around them.

Modules, one concept each: :mod:`.config` (what decides a run), :mod:`.result` (what one video gives),
:mod:`.reconstructor` (the one-video API), :mod:`.resume` (the output folder's bookkeeping), :mod:`.jobs`
(one video with resume semantics), :mod:`.batch` (many videos, local worker processes), :mod:`.distributed`
(the same jobs on Ray); the backends :mod:`.fit` (with :mod:`.evaluator`) and :mod:`.learned` (with
:mod:`.chunking`); :mod:`.arkit`, :mod:`.mp_lips` and :mod:`.outputs` (meshes and render videos).

``spectre.reconstruct`` is both this package and the one-video API function: calling the package
(``spectre.reconstruct(path, ...)``) calls :func:`spectre.reconstruct.reconstructor.reconstruct`, so the
public name keeps working after ``import spectre.reconstruct.fit`` has bound the package to it. The
public names below load lazily, so importing one backend does not import the others.
"""
from __future__ import annotations

import importlib
import sys
import types

#: public name -> module that defines it
_PUBLIC = {
    "reconstruct": "reconstructor", "Reconstructor": "reconstructor",
    "ReconstructConfig": "config", "LearnedConfig": "config", "make_config": "config",
    "ReconstructionResult": "result",
    "run_batch": "batch", "expand_inputs": "batch", "BatchSummary": "batch",
    "JobOutcome": "jobs", "run_job": "jobs",
    "FitConfig": "fit", "fit_track": "fit",
}

__all__ = list(_PUBLIC)


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return __getattr__("reconstruct")(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


def __getattr__(name):
    if name == "__signature__":  # inspect.signature(spectre.reconstruct) is the function's
        import inspect

        return inspect.signature(__getattr__("reconstruct"))
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
