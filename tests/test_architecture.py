"""The package's shape, checked on its import graph (read from source; function-local imports count):
no import cycles, layers only import downward (the layer list is the import-linter contract in
pyproject.toml, so CI's ``lint-imports`` and this test check the same thing), modules stay small, and
nothing outside ``spectre.models`` tests a face model's name."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_LINES = 500
#: modules outside every layer: the package root (lazy re-exports), ``python -m spectre``, io's package file
UNLAYERED = {"spectre", "spectre.__main__", "spectre.io"}


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GRAPH = _import_graph()
EDGES, LOCAL_IMPORTS = GRAPH.graph(SRC)


def _layers() -> list[list[str]]:
    """[[sibling, ...], ...] from the top layer down, as written in the import-linter contract."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    assert len(contracts) == 1, "expected exactly one layers contract in pyproject.toml"
    return [[s.strip() for s in layer.split("|")] for layer in contracts[0]["layers"]]


def _place(module: str, layers: list[list[str]]) -> tuple[int, str] | None:
    """(layer index, sibling) of the most specific container holding ``module``."""
    best = None
    for i, siblings in enumerate(layers):
        for s in siblings:
            if module == s or module.startswith(s + "."):
                if best is None or len(s) > len(best[1]):
                    best = (i, s)
    return best


def test_no_import_cycles():
    assert GRAPH.cycles(EDGES) == []


def test_every_module_has_a_layer():
    layers = _layers()
    assert sorted(m for m in EDGES if m not in UNLAYERED and _place(m, layers) is None) == []


def _upward(edges: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    wrong = []
    for a, targets in sorted(edges.items()):
        pa = _place(a, layers)
        for b in sorted(targets):
            pb = _place(b, layers)
            if pa is None or pb is None or pa[1] == pb[1]:
                continue  # unlayered, or within one package
            if pb[0] <= pa[0]:  # a higher layer, or an independent sibling of the same layer
                wrong.append(f"{a} ({pa[1]}) imports {b} ({pb[1]})")
    return wrong


def test_layers_only_import_downward():
    assert _upward(EDGES, _layers()) == []


def test_the_layer_check_sees_an_upward_or_sideways_import():
    layers = _layers()
    assert _upward({"spectre.faces.track": {"spectre.render.renderer"}}, layers)  # up
    assert _upward({"spectre.models.ict": {"spectre.nets.backbones"}}, layers)  # independent siblings
    assert not _upward({"spectre.render.renderer": {"spectre.faces.crop"}}, layers)  # down


def test_the_contract_names_real_modules():
    for siblings in _layers():
        for s in siblings:
            assert s in EDGES, f"layer entry {s} is not a module of the package"


def test_no_module_over_500_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


_MODEL_NAME_TEST = re.compile(r"""[=!]=\s*["'](?:ict|flame)["']|["'](?:ict|flame)["']\s*[=!]=""")


def test_no_face_model_name_test_outside_models():
    hits = []
    for p in sorted((SRC / "spectre").rglob("*.py")):
        if "models" in p.relative_to(SRC / "spectre").parts[:1]:
            continue
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if _MODEL_NAME_TEST.search(line.split("#")[0]):
                hits.append(f"{p.relative_to(SRC)}:{n}: {line.strip()}")
    assert hits == []


@pytest.mark.parametrize("source", ['x = name == "ict"\n', "if 'flame' != m:\n"])
def test_the_model_name_check_sees_a_comparison(source):
    assert _MODEL_NAME_TEST.search(source)


#: where a function-local import of the package is deliberate: the CLI's commands import their implementation
#: (and with it torch, MediaPipe, PyAV) inside ``run`` so ``spectre --help`` and usage errors stay instant; the
#: viewer builds a head GLB (torch) only when the run wrote none; a stage process's entry point imports its
#: (torch) stages in the child, so the command line can start it before importing torch; the video's posed
#: render imports the torch rasteriser only where the compiled kernels are missing, so the video process
#: runs without torch
LOCAL_IMPORTS_ALLOWED = ("spectre.cli.", "spectre.view.files", "spectre.reconstruct.stagespawn",
                         "spectre.reconstruct.compose")


def test_package_imports_sit_at_module_top():
    hidden = [f"{m}:{line} imports {t}" for m, t, line in LOCAL_IMPORTS
              if not m.startswith(LOCAL_IMPORTS_ALLOWED)]
    assert hidden == []


def test_the_cycle_check_counts_function_local_imports(tmp_path):
    pkg = tmp_path / "spectre"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n    return x\n")
    edges, local = GRAPH.graph(tmp_path)
    assert GRAPH.cycles(edges) == [["spectre.a", "spectre.b"]]
    assert local == [("spectre.b", "spectre.a", 2)]
