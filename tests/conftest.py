"""Shared fixtures. ``../shared`` is found beside the repository root, or at ``$SPECTRE_SHARED``;
tests that need it skip with a clear reason when it is absent."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPECTRE_SHARED", REPO_ROOT.parent / "shared")).resolve()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set SPECTRE_SHARED to the shared/ folder)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _hermetic_asset_lookup(tmp_path_factory):
    """Tests never see the developer's own assets: empty user data dir, no SPECTRE_HOME."""
    old = {k: os.environ.get(k) for k in ("XDG_DATA_HOME", "SPECTRE_HOME")}
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg"))
    os.environ.pop("SPECTRE_HOME", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True, scope="session")
def _interruptible_children():
    """Ctrl-C tests send SIGINT to `spectre` subprocesses. A shell that starts the suite as a background job
    (`.ci/run &`) ignores SIGINT, and children inherit an ignored signal across exec: give it a handler
    here, which exec resets to the default, so the children see Ctrl-C as a user's terminal delivers it."""
    old = signal.getsignal(signal.SIGINT)
    if old == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture(scope="module")
def ict():
    """The bundled ICT face model (no shared data needed), in eval mode."""
    from spectre.models.ict import ICTFaceModel

    return ICTFaceModel.from_store().eval()


@pytest.fixture(scope="module")
def ict_posed(ict):
    """ICT with expressions in 4 poses (neutral face; strong yaw, the silhouette over the cheek; pitch; a
    mixed pose) framed in the 224 crop: (vertices, crop vertices, render faces), for renderer tests."""
    import torch

    from spectre.geometry import project_to_crop

    n = 4
    p = {k: v.repeat(n, *[1] * (v.dim() - 1)) for k, v in ict.default_params(1).items()}
    p["expression"] = torch.rand(p["expression"].shape, generator=torch.Generator().manual_seed(3)) * 0.6
    p["expression"][0] = 0.0
    p["rotation"] = torch.zeros_like(p["rotation"])
    p["rotation"][1, 1] = 0.6
    p["rotation"][2, 0] = -0.35
    p["rotation"][3] = torch.tensor([0.2, -0.4, 0.15])
    with torch.no_grad():
        geo = ict(ict.complete(p))
    lm = geo.landmarks[0, :, :2]
    s = 2.0 / (1.3 * float((lm.amax(0) - lm.amin(0)).max()))
    cam = torch.tensor([[s, 0.0, 0.0]]).repeat(n, 1)
    return geo.vertices, project_to_crop(geo.vertices, cam), ict.render_faces().long()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def golden_dir(shared_dir) -> Path:
    return _need(shared_dir / "golden")


@pytest.fixture(scope="session")
def shared_assets(shared_dir) -> Path:
    return _need(shared_dir / "assets")


@pytest.fixture(scope="session")
def sample_videos(shared_dir) -> dict[str, Path]:
    """name -> path of every sample clip (LRS3 224x224 and MEAD 1080p)."""
    root = _need(shared_dir / "samples")
    vids = {p.stem: p for p in sorted(root.glob("*/*.mp4"))}
    if not vids:
        pytest.skip(f"no sample clips under {root}")
    return vids


@pytest.fixture(scope="session")
def short_clip(sample_videos) -> Path:
    """The shortest sample (27 frames, 224x224, with audio): streaming and process tests split it finely."""
    name = "OzA6jRYjVQs_00004"
    if name not in sample_videos:
        pytest.skip(f"sample {name} not found")
    return sample_videos[name]


@pytest.fixture(scope="session")
def lrs3_video(sample_videos) -> Path:
    return next(p for p in sample_videos.values() if p.parent.name == "LRS3")


@pytest.fixture(scope="session")
def mead_video(sample_videos) -> Path:
    return next(p for p in sample_videos.values() if p.parent.name == "MEAD")


def _import_from(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def golden_weights(golden_dir):
    """The deterministic weight/input generator ``golden_weights.py`` (numpy only)."""
    return _import_from(golden_dir / "golden_weights.py", "golden_weights")


@pytest.fixture(scope="module")
def flame(flame_assets):
    """The synthetic FLAME (``flame_assets``), in eval mode."""
    from spectre.assets import AssetStore
    from spectre.models import load_face_model
    return load_face_model("flame", AssetStore(flame_assets)).eval()


@pytest.fixture(params=["ict", "flame"])
def face_model(request):
    """Each face model in turn: the bundled ICT and the synthetic FLAME."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def flame_assets(tmp_path_factory, golden_dir, shared_assets) -> Path:
    """An asset folder holding the synthetic FLAME (built by ``make_fake_flame.py``) and the
    FLAME-topology support files, laid out as a user's ``--assets`` folder."""
    root = tmp_path_factory.mktemp("flame_assets")
    make = _import_from(golden_dir / "make_fake_flame.py", "make_fake_flame")
    model = make.build(str(shared_assets / "spectre_data" / "head_template.obj"))
    (root / "flame").mkdir()
    make.write(model, str(root / "flame" / "generic_model.pkl"))
    shutil.copytree(shared_assets / "spectre_data", root / "spectre_data")
    return root
