"""Asset registry, config files, device policy, atomic writes and the CLI's error contract."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from spectre.assets import ASSETS, AssetStore
from spectre.atomic import atomic_path, atomic_write_text
from spectre.cli import main
from spectre.config import load_config, save_config
from spectre.device import Runtime, resolve_device, resolve_precision
from spectre.errors import AssetError, ConfigError, OutputError


# ---- asset registry -------------------------------------------------------------------------
def test_lookup_order(tmp_path, monkeypatch):
    a, b, c = (tmp_path / n for n in ("assets", "home", "xdg"))
    for root in (a, b, c / "spectre"):
        (root / "deca").mkdir(parents=True)
        (root / "deca" / "deca_model.tar").write_text(str(root))
    monkeypatch.setenv("SPECTRE_HOME", str(b))
    monkeypatch.setenv("XDG_DATA_HOME", str(c))
    assert AssetStore(a).locate("deca").source == "assets-dir"
    assert AssetStore().locate("deca").source == "SPECTRE_HOME"
    monkeypatch.delenv("SPECTRE_HOME")
    assert AssetStore().find("deca") == c / "spectre" / "deca" / "deca_model.tar"


def test_missing_asset_message_says_what_where_and_how(tmp_path):
    with pytest.raises(AssetError) as err:
        AssetStore(tmp_path).path("flame")
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing asset 'flame'" in msg and "flame.is.tue.mpg.de" in msg
    assert "spectre assets add flame" in msg and str(tmp_path / "flame" / "generic_model.pkl") in msg


def test_every_asset_has_licence_and_source():
    for spec in ASSETS.values():
        assert spec.licence and spec.obtain and spec.candidates and spec.description


def test_add_verifies_and_refuses_overwrite(tmp_path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = AssetStore(store_dir)
    deca = tmp_path / "deca_model.tar"
    torch.save({"E_flame": {"w": torch.zeros(2)}}, deca)
    with pytest.raises(AssetError, match="looks like a DECA checkpoint"):
        store.add("spectre", deca)  # wrong asset given for another
    target = store.add("deca", deca)
    assert target == store_dir / "deca" / "deca_model.tar" and store.find("deca") == target
    with pytest.raises(OutputError, match="--overwrite"):
        store.add("deca", deca)
    store.add("deca", deca, overwrite=True)
    assert not list((store_dir / "deca").glob(".*partial*"))


def test_shared_assets_are_found(shared_assets, monkeypatch):
    monkeypatch.setenv("SPECTRE_HOME", str(shared_assets))
    store = AssetStore()
    for name in ("ict", "head_template", "landmark_embedding", "phonemes2visemes"):
        assert store.locate(name).source == "SPECTRE_HOME", name


# ---- config ---------------------------------------------------------------------------------
@dataclasses.dataclass
class _Inner:
    steps: int = 3


@dataclasses.dataclass
class _Cfg:
    name: str = "x"
    scale: float = 1.6
    inner: _Inner = dataclasses.field(default_factory=_Inner)


def test_config_roundtrip_and_errors(tmp_path):
    cfg = _Cfg(name="y", inner=_Inner(7))
    path = save_config(cfg, tmp_path / "c.yaml")
    assert load_config(_Cfg, path) == cfg
    assert load_config(_Cfg, path, scale=2.0).scale == 2.0
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(_Cfg, tmp_path / "bad.yaml")
    (tmp_path / "unknown.yaml").write_text("nmae: typo\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(_Cfg, tmp_path / "unknown.yaml")


# ---- device ---------------------------------------------------------------------------------
def test_device_policy():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    with pytest.raises(ConfigError):
        resolve_precision("fp8", torch.device("cpu"))
    rt = Runtime.create("cpu", "fp32")
    assert rt.dtype == torch.float32
    with rt.autocast():
        assert torch.ones(2).dtype == torch.float32


# ---- atomic writes --------------------------------------------------------------------------
def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(target, "done")
    with pytest.raises(OutputError, match="already exists"):
        atomic_write_text(target, "again", overwrite=False)
    assert target.read_text() == "done"


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")  # works as root too, unlike chmod
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_text(blocker / "x.txt", "x")


# ---- CLI contract ---------------------------------------------------------------------------
def test_cli_help_and_assets_list(capsys, shared_assets):
    assert main(["assets", "--assets", str(shared_assets), "list"]) == 0
    out = capsys.readouterr().out
    assert "ict" in out and "found (assets-dir)" in out and "MISSING" in out


def test_cli_one_line_error_and_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "spectre", "assets", "add", "deca", str(tmp_path / "nope.tar")],
                          capture_output=True, text=True, env={**os.environ, "XDG_DATA_HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("spectre: error:") and "nope.tar" in proc.stderr


def test_cli_help_runs():
    proc = subprocess.run([sys.executable, "-m", "spectre", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "assets" in proc.stdout


@pytest.mark.parametrize("preset", [None, "3"])
def test_cli_keeps_blas_to_one_thread_unless_told(preset):
    # numpy's OpenBLAS reads the setting once, when numpy is first imported: the CLI sets it before any
    # module that imports numpy, so its spare threads never spin beside the job's busy stage processes
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    code = ("import os, sys, spectre.cli; print('numpy' in sys.modules, os.environ['OPENBLAS_NUM_THREADS']);"
            "spectre.cli.build_parser(); print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["False", preset or "1", "True"]


def test_heavy_imports_pause_the_collector_and_are_frozen_after():
    """torch's import set off three full collections (35-95 ms each) and every later full collection walked
    its objects again (the job's last one: 80 ms): the command line imports it with the collector paused and
    freezes what it created. A collector the caller had turned off stays off."""
    code = """
import gc, sys
from spectre.collector import imports_kept
full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and full.append(1))
before = gc.get_freeze_count()
with imports_kept():
    paused = not gc.isenabled()
    junk = [[i] for i in range(300000)]  # enough allocations for automatic full collections
print(paused, gc.isenabled(), len(full), gc.get_freeze_count() - before >= 300000)
gc.disable()
with imports_kept():
    pass
print(gc.isenabled())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "0", "True", "False"]


def test_command_exit_keeps_what_a_normal_exit_does():
    """``spectre`` ends without finalising the interpreter (about 0.1 s of torch's and MediaPipe's modules),
    but still waits for other threads, runs the atexit handlers and flushes buffered output, and keeps
    the command's exit code."""
    code = """
import atexit, sys, threading, time
from spectre import cli
atexit.register(lambda: print("atexit handler ran"))
threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished"))).start()
cli.main = lambda argv=None: (sys.stdout.write("command ran, "), 7)[1]
cli.entry()
print("not reached")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 7
    assert proc.stdout.split("\n")[:3] == ["command ran, thread finished", "atexit handler ran", ""]
