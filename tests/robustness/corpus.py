"""The bad-input corpus: every case builds its input in a temporary folder, names the command to run
and states the behaviour the user must see (exit code, words in the one-line error, outputs).

A case is data, so the table test, the documentation (docs/robustness.md) and the reviewers read the
same list. Inputs are synthesised with PyAV/numpy; faces come from the sample clips.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import pickle
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import media

#: options every reconstruct case shares: the input-handling cases need no render
FAST = ["--layout", "none", "--no-arkit"]
#: a short landmark-fit schedule: the corpus tests input handling, not fit quality
FAST_FIT_YAML = "fit:\n  identity_iterations: 15\n  iterations: 10\n"


def fast_config(folder: Path) -> Path:
    path = folder / "fast_fit.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(FAST_FIT_YAML)
    return path


@dataclass
class Ctx:
    """Where a case builds its files: ``tmp`` (inputs), ``out`` (the output folder), ``samples``."""

    tmp: Path
    out: Path
    samples: Path
    sentinel: Path = field(init=False)
    stderr: str = ""  # what the command printed (stderr + warnings), set before ``check`` runs

    def __post_init__(self) -> None:
        self.sentinel = self.tmp / "PAYLOAD_RAN"

    def reconstruct(self, *inputs: Path | str, extra: tuple[str, ...] = ()) -> list[str]:
        config = fast_config(self.tmp.parent)
        return ["reconstruct", *map(str, inputs), "-o", str(self.out), *FAST, "--config", str(config), *extra]

    def faces(self, n: int = 6, size: int | None = None) -> np.ndarray:
        return media.face_frames(self.samples, n, size)


@dataclass
class Case:
    name: str
    what: str                              # the input, for the table
    build: Callable[[Ctx], list[str]]      # makes the files, returns the CLI argv
    code: int                              # expected exit code
    says: tuple[str, ...] = ()             # words the stderr must contain (case-insensitive)
    behaviour: str = ""                    # the result the user gets, for the table
    check: Callable[[Ctx], None] | None = None  # extra assertions on the outputs
    runs_before: Callable[[Ctx], None] | None = None  # e.g. a first run for the resume cases
    around: Callable[[Ctx], contextlib.AbstractContextManager] | None = None  # e.g. a file-size limit during the run
    needs_non_root: bool = False
    skip: Callable[[], str | None] | None = None  # a reason to skip on this machine, or None


# ------------------------------------------------------------------------------------------------ helpers
def _npz(ctx: Ctx, name: str) -> dict:
    from spectre.io.results import load_face_npz

    return load_face_npz(ctx.out / name)


def _outputs(ctx: Ctx) -> list[str]:
    return sorted(p.name for p in ctx.out.iterdir()) if ctx.out.exists() else []


def _no_outputs(ctx: Ctx) -> None:
    assert _outputs(ctx) == [], f"a failed case left files behind: {_outputs(ctx)}"


def _finite_result(data: dict, frames: int) -> None:
    assert len(data["valid"]) == frames, (len(data["valid"]), frames)
    for name, p in data["params"].items():
        assert p.shape[0] == frames and np.isfinite(p).all(), f"param {name} not finite / wrong length"
    assert np.isfinite(data["landmarks2d"]).all() and np.isfinite(data["cam"]).all()


def _one_face_ok(stem: str, frames: int, min_valid: float = 0.8) -> Callable[[Ctx], None]:
    def check(ctx: Ctx) -> None:
        data = _npz(ctx, f"{stem}.npz")
        _finite_result(data, frames)
        assert data["valid"].mean() >= min_valid, f"face found in only {data['valid'].mean():.0%} of frames"
        assert (ctx.out / f"{stem}.yaml").is_file()
    return check


def _face_clip(ctx: Ctx, name: str = "clip.mp4", n: int = 6, **kw) -> Path:
    return media.write_video(ctx.tmp / name, ctx.faces(n), **kw)


# ------------------------------------------------------------------------------------------------ builders
def _zero_byte(ctx):
    (ctx.tmp / "empty.mp4").write_bytes(b"")
    return ctx.reconstruct(ctx.tmp / "empty.mp4")


def _truncated(fraction: float, faststart: bool = False):
    def build(ctx):
        src = _face_clip(ctx, "full.mp4", 10, container_options={"movflags": "+faststart"} if faststart else None)
        data = src.read_bytes()
        cut = ctx.tmp / "cut.mp4"
        cut.write_bytes(data[: int(len(data) * fraction)])
        src.unlink()
        return ctx.reconstruct(cut)
    return build


def _cut_last_frame(ctx):
    src = _face_clip(ctx, "full.mp4", 30, container_options={"movflags": "+faststart"})
    data = src.read_bytes()
    # drop the tail of the file: all of the last sample's data (the index, at the front, still lists it).
    # Cutting less (64 bytes) left a partial frame that FFmpeg's frame threads sometimes concealed and
    # output, so that all 30 frames decoded and no warning was due (a flaky test)
    import av

    with av.open(str(src)) as c:
        last = max((p for p in c.demux(video=0) if p.size), key=lambda p: p.pos)
        end = last.pos + last.size
    assert end == len(data), "the last frame's sample ends the file (fast start: the index comes first)"
    cut = ctx.tmp / "cut.mp4"
    cut.write_bytes(data[: last.pos])
    src.unlink()
    return ctx.reconstruct(cut)


def _check_truncated(ctx):
    data = _npz(ctx, "cut.npz")
    n = len(data["valid"])
    assert 27 <= n < 30, f"{n} frames from a 30-frame clip missing its last frame"
    _finite_result(data, n)


def _corrupt_middle(ctx):
    src = _face_clip(ctx, "clip.mp4", 10, container_options={"movflags": "+faststart"})
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid: mid + 2048] = np.random.default_rng(7).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    src.write_bytes(bytes(data))
    return ctx.reconstruct(src)


def _text_as_mp4(ctx):
    (ctx.tmp / "notes.mp4").write_text("this is not a video\n" * 50)
    return ctx.reconstruct(ctx.tmp / "notes.mp4")


def _audio_only(ctx):
    return ctx.reconstruct(media.write_audio_only(ctx.tmp / "voice.mp4"))


def _no_frames(ctx):
    import av

    path = ctx.tmp / "noframes.avi"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    return ctx.reconstruct(path)


def _single_image(ctx):
    return ctx.reconstruct(media.write_image(ctx.tmp / "portrait.png", ctx.faces(1)[0]))


def _image_folder(ctx):
    folder = ctx.tmp / "frames"
    folder.mkdir()
    for i, f in enumerate(ctx.faces(4)):
        media.write_image(folder / f"{i:04d}.png", f)
    (folder / "README.txt").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"\0" * 64)
    return ctx.reconstruct(folder, extra=("--image-folder",))


def _image_folder_corrupt(ctx):
    folder = ctx.tmp / "frames"
    folder.mkdir()
    for i, f in enumerate(ctx.faces(3)):
        media.write_image(folder / f"{i:04d}.png", f)
    (folder / "0001.png").write_text("oops, a text file")
    return ctx.reconstruct(folder, extra=("--image-folder",))


def _one_pixel(ctx):
    return ctx.reconstruct(media.write_video(ctx.tmp / "dot.mkv", media.blank_frames(3, 1, 1), codec="ffv1",
                                             pix_fmt="yuv444p"))


def _big_frame(h: int, w: int, n: int):
    def build(ctx):
        import cv2

        # a talking head filling most of the height (the detector's short range model)
        face = np.stack([cv2.resize(f, (h * 4 // 5, h * 4 // 5)) for f in ctx.faces(n)])
        frames = media.place((h, w), [face], [(h // 10, w // 3)])
        return ctx.reconstruct(media.write_video(ctx.tmp / f"big{w}.mp4", frames, options={"preset": "ultrafast"}))
    return build


def _rotated(ctx):
    upright = ctx.faces(6)
    stored = np.ascontiguousarray(np.rot90(upright, k=1, axes=(1, 2))[:, :, :-32])  # portrait-ish, turned
    path = media.write_video(ctx.tmp / "phone.mp4", stored)
    media.set_mp4_rotation(path, 90)
    return ctx.reconstruct(path)


def _check_rotated(ctx):
    data = _npz(ctx, "phone.npz")
    _finite_result(data, 6)
    assert (data["width"], data["height"]) == (224, 192), "rotation metadata not applied to the frame size"
    assert data["valid"].all(), "the upright face was not found in every frame"


VFR_PTS = [0, 40, 80, 200, 240, 400, 440, 480]


def _vfr(ctx):
    return ctx.reconstruct(_face_clip(ctx, "vfr.mp4", len(VFR_PTS), pts=VFR_PTS, time_base=Fraction(1, 1000)))


def _check_vfr(ctx):
    data = _npz(ctx, "vfr.npz")
    _finite_result(data, len(VFR_PTS))
    np.testing.assert_allclose(data["timestamps"], np.array(VFR_PTS) / 1000.0, atol=1e-3)


def _fps60(ctx):
    return ctx.reconstruct(_face_clip(ctx, "fast.mp4", 8, fps=60))


def _check_fps60(ctx):
    data = _npz(ctx, "fast.npz")
    _finite_result(data, 8)
    assert abs(data["fps"] - 60) < 1e-6
    np.testing.assert_allclose(np.diff(data["timestamps"]), 1 / 60, atol=1e-3)


def _no_face(ctx):
    return ctx.reconstruct(media.write_video(ctx.tmp / "wall.mp4", media.blank_frames(6, 96, 96)))


def _leaves_and_returns(ctx):
    f = ctx.faces(16)
    frames = f.copy()
    frames[5:11] = media.blank_frames(6, 224, 224)
    return ctx.reconstruct(media.write_video(ctx.tmp / "away.mp4", frames))


def _check_leaves(ctx):
    data = _npz(ctx, "away.npz")
    _finite_result(data, 16)
    valid = data["valid"]
    assert valid[:5].all() and valid[11:].all(), valid
    assert not valid[5:11].any(), f"frames without a face are marked valid: {valid}"


def _many(n_faces: int, face_opt: str | None):
    def build(ctx):
        import cv2

        size = 112
        face = np.stack([cv2.resize(x, (size, size)) for x in ctx.faces(4)])
        cols = min(n_faces, 3)
        pos = [((i // cols) * (size + 8) + 8, (i % cols) * (size + 8) + 8) for i in range(n_faces)]
        h = ((n_faces - 1) // cols + 1) * (size + 8) + 8
        frames = media.place((h, cols * (size + 8) + 8), [face] * n_faces, pos)
        path = media.write_video(ctx.tmp / f"group{n_faces}.mp4", frames)
        return ctx.reconstruct(path, extra=("--face", face_opt) if face_opt else ())
    return build


def _check_many(stem: str, expect: int):
    def check(ctx):
        if expect == 1:
            _finite_result(_npz(ctx, f"{stem}.npz"), 4)
            return
        npzs = sorted(p.name for p in ctx.out.glob(f"{stem}_face*.npz"))
        assert len(npzs) == expect, f"expected {expect} faces, got {npzs}"
        for n in npzs:
            _finite_result(_npz(ctx, n), 4)
    return check


def _head_turns(ctx):
    import cv2

    f = ctx.faces(12)
    out = []
    for i, img in enumerate(f):
        angle = -90 + 180 * i / (len(f) - 1)          # roll through -90..+90 degrees
        squeeze = 1.0 - 0.7 * abs(angle) / 90          # and foreshorten like a yaw turn
        m = cv2.getRotationMatrix2D((112, 112), angle, 1.0)
        m[0] *= squeeze
        m[0, 2] += 112 * (1 - squeeze)
        out.append(cv2.warpAffine(img, m, (224, 224), borderValue=(90, 90, 90)))
    return ctx.reconstruct(media.write_video(ctx.tmp / "turns.mp4", np.stack(out)))


def _check_turns(ctx):
    data = _npz(ctx, "turns.npz")
    _finite_result(data, 12)
    assert data["valid"][5:7].all(), "the frontal frames in the middle must be tracked"


def _odd_path(ctx):
    folder = ctx.tmp / "my clips (2024) ü"
    return ctx.reconstruct(_face_clip(ctx, f"{folder.name}/vidéo 東京 #1.mp4", 4))


def _odd_path_check(ctx):
    _one_face_ok("vidéo 東京 #1", 4)(ctx)


NON_UTF8_STEM = os.fsdecode(b"caf\xe9 latin-1")


def _non_utf8_name(ctx):
    return ctx.reconstruct(_face_clip(ctx, f"{NON_UTF8_STEM}.mp4", 4))


def _odd_pix_fmt(ctx):
    f = ctx.faces(4)[:, :223, :221]  # odd width and height
    return ctx.reconstruct(media.write_video(ctx.tmp / "odd.mkv", np.ascontiguousarray(f), codec="ffv1",
                                             pix_fmt="yuv420p10le"))


def _output_is_file(ctx):
    clip = _face_clip(ctx, n=3)
    blocker = ctx.tmp / "results"
    blocker.write_text("a file where the output folder should be")
    ctx.out = blocker / "sub"
    return ctx.reconstruct(clip)


def _unwritable(ctx):
    clip = _face_clip(ctx, n=3)
    ctx.out.mkdir()
    ctx.out.chmod(0o500)
    return ctx.reconstruct(clip)


def _already_done_first(ctx):
    from spectre.cli import main

    clip = _face_clip(ctx, n=4)
    assert main(ctx.reconstruct(clip)) == 0
    ctx.first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ctx.out.iterdir()}


def _already_done(ctx):
    return ctx.reconstruct(ctx.tmp / "clip.mp4")


def _check_untouched(ctx):
    now = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ctx.out.iterdir()}
    assert now == ctx.first, "a finished result was rewritten without --overwrite"


def _other_config(ctx):
    return ctx.reconstruct(ctx.tmp / "clip.mp4", extra=("--face", "all"))


def _long_name(ctx):
    return ctx.reconstruct(_face_clip(ctx, "v" * 240 + ".mp4", 3))


def _binary_config(ctx):
    cfg = ctx.tmp / "settings.yaml"
    cfg.write_bytes(bytes(range(256)) * 4)
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--config", str(cfg)))


def _overwrite(ctx):
    return ctx.reconstruct(ctx.tmp / "clip.mp4", extra=("--overwrite",))


def _check_rewritten(ctx):
    now = {p.name: p.stat().st_mtime_ns for p in ctx.out.iterdir()}
    assert set(now) == set(ctx.first) and all(now[k] != ctx.first[k][0] for k in now), "not redone"
    _one_face_ok("clip", 4)(ctx)


def _foreign_file(ctx):
    clip = _face_clip(ctx, n=3)
    ctx.out.mkdir()
    (ctx.out / "clip.npz").write_bytes(b"the user's own file, not ours")
    return ctx.reconstruct(clip)


def _check_foreign(ctx):
    assert (ctx.out / "clip.npz").read_bytes() == b"the user's own file, not ours"


def _output_is_input_folder(ctx):
    clip = _face_clip(ctx, n=4)
    ctx.original = clip.read_bytes()
    ctx.out = ctx.tmp
    return ctx.reconstruct(clip)


def _check_input_kept(ctx):
    assert (ctx.tmp / "clip.mp4").read_bytes() == ctx.original, "the input video was replaced or deleted"
    _one_face_ok("clip", 4)(ctx)


def _render_over_input(ctx):
    clip = _face_clip(ctx, n=3)
    ctx.original = clip.read_bytes()
    ctx.out = ctx.tmp
    return [*ctx.reconstruct(clip), "--layout", "render", "--overwrite"]


def _check_input_untouched(ctx):
    assert (ctx.tmp / "clip.mp4").read_bytes() == ctx.original, "the input video was replaced or deleted"
    hidden = [p.name for p in ctx.tmp.iterdir() if p.name.endswith(".spectre-writing")]
    assert not hidden, f"a refused run left a marker behind: {hidden}"


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Writes past ``nbytes`` fail with EFBIG (SIGXFSZ ignored), as when a disk fills up mid-file."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def tiny_tmpfs(folder: Path, size: str = "12k"):
    """Mount a tiny tmpfs on ``folder`` (a real ENOSPC); returns an unmount callable, or None when
    mounting is not permitted here (not root / no CAP_SYS_ADMIN)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return None
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if r.returncode != 0:
        return None
    return lambda: subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _disk_full(ctx):
    return ctx.reconstruct(_face_clip(ctx, n=6))


def _check_disk_full_then_resume(ctx):
    from spectre.cli import main

    assert not any(p.name.endswith(".npz") or ".partial" in p.name for p in ctx.out.iterdir()), _outputs(ctx)
    assert main(ctx.reconstruct(ctx.tmp / "clip.mp4")) == 0, "the rerun after the disk was freed failed"
    _one_face_ok("clip", 6)(ctx)
    assert not any(p.name.startswith(".") for p in ctx.out.iterdir()), _outputs(ctx)


def _malicious_pickle_payload(sentinel: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch '{sentinel}'",))

    return pickle.dumps({"v_template": Payload(), "f": np.zeros((1, 3))}, protocol=2)


def _malicious_flame(ctx):
    assets = ctx.tmp / "assets"
    (assets / "flame").mkdir(parents=True)
    (assets / "flame" / "generic_model.pkl").write_bytes(_malicious_pickle_payload(ctx.sentinel))
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--model", "flame", "--assets", str(assets)))


def _truncated_flame(ctx):
    assets = ctx.tmp / "assets"
    (assets / "flame").mkdir(parents=True)
    good = pickle.dumps({"v_template": np.zeros((5, 3)), "f": np.zeros((2, 3), np.uint32)}, protocol=2)
    (assets / "flame" / "generic_model.pkl").write_bytes(good[: len(good) // 2])
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--model", "flame", "--assets", str(assets)))


@functools.lru_cache(maxsize=1)
def _fake_flame(golden: str, spectre_data: str) -> Path:
    """The synthetic FLAME of the golden folder, built once per test session (76 MB, a few seconds)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fake_flame", Path(golden) / "make_fake_flame.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    folder = Path(tempfile.mkdtemp(prefix="spectre_robust_flame_"))
    atexit.register(shutil.rmtree, folder, True)
    make.write(make.build(str(Path(spectre_data) / "head_template.obj")), str(folder / "generic_model.pkl"))
    return folder / "generic_model.pkl"


def _learned_assets(ctx) -> Path:
    """An --assets folder with a (synthetic) FLAME and the FLAME-topology files, but no SPECTRE weights."""
    shared = ctx.samples.parent
    assets = ctx.tmp / "assets"
    (assets / "flame").mkdir(parents=True)
    (assets / "flame" / "generic_model.pkl").symlink_to(
        _fake_flame(str(shared / "golden"), str(shared / "assets" / "spectre_data")))
    (assets / "spectre_data").symlink_to(shared / "assets" / "spectre_data", target_is_directory=True)
    return assets


def _learned_missing_weights(ctx):
    assets = _learned_assets(ctx)
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--backend", "learned", "--assets", str(assets)))


def _learned_malicious_weights(ctx):
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch '{ctx.sentinel}'",))

    assets = _learned_assets(ctx)
    (assets / "spectre").mkdir()
    torch.save({"E_flame": {"w": Payload()}, "E_expression": {}}, assets / "spectre" / "spectre_model.tar")
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--backend", "learned", "--assets", str(assets)))


def _no_sentinel(ctx):
    assert not ctx.sentinel.exists(), "the malicious payload ran"


def _malicious_checkpoint(ctx):
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch '{ctx.sentinel}'",))

    evil = ctx.tmp / "spectre_model.tar"
    torch.save({"E_flame": {"w": torch.zeros(2)}, "E_expression": Payload()}, evil)
    assert not ctx.sentinel.exists()
    (ctx.tmp / "assets").mkdir()
    return ["assets", "--assets", str(ctx.tmp / "assets"), "add", "spectre", str(evil)]


def _deca_as_spectre(ctx):
    import torch

    deca = ctx.tmp / "deca_model.tar"
    torch.save({"E_flame": {"layers.0.weight": torch.zeros(3, 3)}, "E_detail": {}, "D_detail": {}}, deca)
    (ctx.tmp / "assets").mkdir()
    return ["assets", "--assets", str(ctx.tmp / "assets"), "add", "spectre", str(deca)]


def _check_not_installed(ctx):
    assert not any((ctx.tmp / "assets").rglob("*")), "a refused asset was installed"


def _corrupt_config(ctx):
    cfg = ctx.tmp / "broken.yaml"
    cfg.write_text("backend: fit\nfit: {iterations: [1, 2\n  layout: : grid\n")
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--config", str(cfg)))


def _config_bad_values(ctx):
    cfg = ctx.tmp / "odd.yaml"
    cfg.write_text("backend: fit\nlayuot: grid\n")
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--config", str(cfg)))


def _config_not_mapping(ctx):
    cfg = ctx.tmp / "list.yaml"
    cfg.write_text("- a\n- b\n")
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--config", str(cfg)))


def _missing_input(ctx):
    return ctx.reconstruct(ctx.tmp / "nowhere.mp4")


def _mixed_batch(ctx):
    good = _face_clip(ctx, "a_good.mp4", 4)
    (ctx.tmp / "b_empty.mp4").write_bytes(b"")
    (ctx.tmp / "c_text.mp4").write_text("hello")
    media.write_video(ctx.tmp / "d_noface.mp4", media.blank_frames(4, 64, 64))
    return ctx.reconstruct(good, ctx.tmp / "b_empty.mp4", ctx.tmp / "c_text.mp4", ctx.tmp / "d_noface.mp4")


def _check_mixed(ctx):
    _one_face_ok("a_good", 4)(ctx)
    assert _outputs(ctx) == ["a_good.npz", "a_good.yaml"], _outputs(ctx)


def _list_missing(ctx):
    lst = ctx.tmp / "videos.txt"
    _face_clip(ctx, n=3)
    lst.write_text("# my videos\nclip.mp4\ngone.mp4\n")
    return ctx.reconstruct(lst)


def _bad_workers(ctx):
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--workers", "0"))


def _track(ctx, *inputs, extra=()):
    return ["track", *map(str, inputs), "-o", str(ctx.out), *extra]


def _track_zero_byte(ctx):
    (ctx.tmp / "empty.mp4").write_bytes(b"")
    return _track(ctx, ctx.tmp / "empty.mp4")


def _track_first(ctx):
    from spectre.cli import main

    assert main(_track(ctx, _face_clip(ctx, n=3))) == 0
    ctx.first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ctx.out.iterdir()}


def _track_again(ctx):
    return _track(ctx, ctx.tmp / "clip.mp4")


def _track_mixed(ctx):
    good = _face_clip(ctx, "a.mp4", 3)
    (ctx.tmp / "b.mp4").write_text("not a video")
    return _track(ctx, good, ctx.tmp / "b.mp4")


def _check_track_mixed(ctx):
    assert _outputs(ctx) == ["a.tracks.npz"], _outputs(ctx)


# ------------------------------------------------------------------------------------------------ datasets
# issue 16: folder trees, sources with the same name, validation before work, the smaller cases
def _other_face_clip(ctx: Ctx, path: Path, n: int = 4) -> Path:
    """A clip with the sample face mirrored: another video (other bytes) that still has a face."""
    return media.write_video(path, np.ascontiguousarray(ctx.faces(n)[:, :, ::-1]))


def _same_name_first(ctx):
    from spectre.cli import main

    _face_clip(ctx, "a/00001.mp4", 4)
    _other_face_clip(ctx, ctx.tmp / "b" / "00001.mp4")
    assert main(ctx.reconstruct(ctx.tmp / "a" / "00001.mp4")) == 0
    ctx.first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ctx.out.iterdir()}


def _same_name_other_video(ctx):
    return ctx.reconstruct(ctx.tmp / "b" / "00001.mp4")


def _copied_dataset(ctx):
    moved = ctx.tmp / "moved"
    moved.mkdir()
    shutil.copy2(ctx.tmp / "a" / "00001.mp4", moved / "00001.mp4")
    return ctx.reconstruct(moved / "00001.mp4")


def _strip_identity(ctx):
    """Make the finished sidecar look like one an older spectre wrote (no ``source``)."""
    import yaml

    sidecar = ctx.out / "00001.yaml"
    data = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
    data.pop("source")
    sidecar.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    ctx.first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ctx.out.iterdir()}


def _old_sidecar_first(ctx):
    _same_name_first(ctx)
    _strip_identity(ctx)


def _old_sidecar_same(ctx):
    return ctx.reconstruct(ctx.tmp / "a" / "00001.mp4")


def _folder_tree(ctx):
    _face_clip(ctx, "lrs3/spk1/00001.mp4", 4)
    _other_face_clip(ctx, ctx.tmp / "lrs3" / "spk2" / "00001.mp4")
    (ctx.tmp / "lrs3" / "spk2" / "README.txt").write_text("not a video")
    return ctx.reconstruct(ctx.tmp / "lrs3")


def _check_tree(ctx):
    for spk in ("spk1", "spk2"):
        data = _npz(ctx, f"{spk}/00001.npz")
        _finite_result(data, 4)
        assert str(data["video"]).endswith(f"{spk}/00001.mp4"), (spk, str(data["video"]))
    assert sorted(p.name for p in ctx.out.iterdir()) == ["spk1", "spk2"], _outputs(ctx)


def _glob_with_loop(ctx):
    _face_clip(ctx, "data/x/clip1.mp4", 3)
    _face_clip(ctx, "data/y/clip2.mp4", 3)
    os.symlink("..", ctx.tmp / "data" / "x" / "up")       # data/x/up -> data: a loop
    os.symlink("../..", ctx.tmp / "data" / "y" / "top")   # data/y/top -> in: a bigger one
    return ctx.reconstruct(f"{ctx.tmp}/data/**/*.mp4")


def _check_glob_loop(ctx):
    found = sorted(str(p.relative_to(ctx.out)) for p in ctx.out.rglob("*.npz"))
    assert found == ["x/clip1.npz", "y/clip2.npz"], found


def _same_file_twice(ctx):
    clip = _face_clip(ctx, "clip.mp4", 3)
    os.symlink(clip, ctx.tmp / "alias.mp4")
    return ctx.reconstruct(clip, ctx.tmp / "alias.mp4", ctx.tmp / ".." / ctx.tmp.name / "clip.mp4")


def _check_once(ctx):
    assert _outputs(ctx) == ["clip.npz", "clip.yaml"], _outputs(ctx)


def _frames_folder(ctx) -> Path:
    folder = ctx.tmp / "frames"
    folder.mkdir()
    for i, f in enumerate(ctx.faces(3)):
        media.write_image(folder / f"{i:04d}.png", f)
    return folder


def _image_folder_no_switch(ctx):
    return ctx.reconstruct(_frames_folder(ctx))


def _output_in_input_tree(ctx):
    clip = _face_clip(ctx, "data/clip.mp4", 3)
    (ctx.tmp / "data" / "results").mkdir()
    (ctx.tmp / "data" / "results" / "old_render.mp4").write_text("an earlier run's render (not a real video)")
    ctx.out = ctx.tmp / "data" / "results"
    return ctx.reconstruct(clip.parent)


def _check_output_in_tree(ctx):
    assert (ctx.out / "clip.npz").is_file() and not (ctx.out / "results").exists(), _outputs(ctx)


def _config_with(text: str):
    def build(ctx):
        cfg = ctx.tmp / "bad.yaml"
        cfg.write_text(text)
        return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--config", str(cfg)))
    return build


def _missing_face_id(ctx):
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--face", "99"))


def _output_under_sys(ctx):
    ctx.out = Path("/sys/kernel")
    return ctx.reconstruct(_face_clip(ctx, n=3))


def _no_sysfs() -> str | None:
    kernel = Path("/sys/kernel")
    if not kernel.is_dir():
        return "no /sys/kernel on this machine"
    try:
        tempfile.NamedTemporaryFile(dir=kernel).close()
    except OSError:
        return None
    return "/sys/kernel takes files on this machine"


NEWLINE_NAME = "bad\n  FAILED forged.mp4: this line is not ours\nx.mp4"


def _newline_name(ctx):
    good = _face_clip(ctx, "good.mp4", 3)
    bad = ctx.tmp / NEWLINE_NAME
    bad.write_bytes(b"")
    return ctx.reconstruct(good, bad)


def _check_no_forged_line(ctx):
    assert not any(ln.strip().startswith("FAILED forged") for ln in ctx.stderr.splitlines()), ctx.stderr
    assert sum(ln.strip().startswith("FAILED") for ln in ctx.stderr.splitlines()) == 1, ctx.stderr


def _single_failure(ctx):
    (ctx.tmp / "empty.mp4").write_bytes(b"")
    return ctx.reconstruct(ctx.tmp / "empty.mp4")


def _check_reported_once(ctx):
    assert ctx.stderr.lower().count("not a readable video") == 1, ctx.stderr
    _no_outputs(ctx)


def _debug_after(ctx):
    return [*ctx.reconstruct(_face_clip(ctx, n=3)), "--debug"]


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _home_is_file(ctx):
    (ctx.tmp / "spectre_home").write_text("a file, not a folder")
    return ctx.reconstruct(_face_clip(ctx, n=3))


def _two_runs(ctx):
    from spectre.cli import main

    rng = np.random.default_rng(0)
    ref = rng.uniform(50, 150, (12, 68, 2)).astype(np.float32)
    np.save(ctx.tmp / "ref.npy", ref)
    for run, noise in (("A", 0.5), ("B", 2.0)):
        np.save(ctx.tmp / "clip.npy", ref + rng.normal(0, noise, ref.shape).astype(np.float32))
        assert main(["evaluate", str(ctx.tmp / "clip.npy"), "-r", str(ctx.tmp / "ref.npy"), "-o",
                     str(ctx.tmp / run), "--no-plots"]) == 0


def _compare(ctx):
    return ["evaluate", "--compare", str(ctx.tmp / "A"), str(ctx.tmp / "B"), "-o", str(ctx.out)]


def _check_compare(ctx):
    text = (ctx.out / "compare.md").read_text(encoding="utf-8")
    assert "A = " in text and "B = " in text and "clip" in text, text


def _many_workers(ctx):
    return ctx.reconstruct(_face_clip(ctx, n=3), extra=("--workers", "1000"))


def _zero_timestamps(ctx):
    clip = media.zero_mp4_timestamps(media.write_video(ctx.tmp / "frozen.mp4", ctx.faces(6), options={"bf": "0"}))
    return ctx.reconstruct(clip)


def _check_zero_timestamps(ctx):
    data = _npz(ctx, "frozen.npz")
    _finite_result(data, 6)
    assert (np.diff(data["timestamps"]) > 0).all(), data["timestamps"]


def _track_tree(ctx):
    _face_clip(ctx, "lrs3/spk1/00001.mp4", 3)
    _other_face_clip(ctx, ctx.tmp / "lrs3" / "spk2" / "00001.mp4", 3)
    return _track(ctx, ctx.tmp / "lrs3")


def _check_track_tree(ctx):
    found = sorted(str(p.relative_to(ctx.out)) for p in ctx.out.rglob("*.tracks.npz"))
    assert found == ["spk1/00001.tracks.npz", "spk2/00001.tracks.npz"], found


def _track_image_folder(ctx):
    return _track(ctx, _frames_folder(ctx), extra=("--image-folder",))


def _check_frames_tracked(ctx):
    assert _outputs(ctx) == ["frames.tracks.npz"], _outputs(ctx)


def _track_image_folder_no_switch(ctx):
    return _track(ctx, _frames_folder(ctx))


# ------------------------------------------------------------------------------------------------ the table
CASES: list[Case] = [
    Case("zero_byte", "0-byte .mp4", _zero_byte, 2, ("empty.mp4", "not a readable video"),
         "one-line error, no output", _no_outputs),
    Case("truncated_10", "mp4 cut at 10% (index at the end)", _truncated(0.10), 2, ("cut.mp4", "not a readable video"),
         "one-line error, no output", _no_outputs),
    Case("truncated_50", "mp4 cut at 50% (index at the end)", _truncated(0.50), 2, ("cut.mp4", "not a readable video"),
         "one-line error, no output", _no_outputs),
    Case("truncated_95", "mp4 cut at 95% (index at the end)", _truncated(0.95), 2,
         ("cut.mp4", "truncated or not a video"),
         "one-line error, no output", _no_outputs),
    Case("truncated_faststart_60", "fast-start mp4 (index first) cut at 60%", _truncated(0.60, faststart=True), 2,
         ("cut.mp4", "truncated"), "one-line error: decoded N of the M frames the index lists", _no_outputs),
    Case("truncated_faststart_last_frame", "fast-start mp4 of 30 frames missing its last frame's data",
         _cut_last_frame, 0, ("cut.mp4", "of the 30 frames", "truncated"),
         "the decodable frames are reconstructed, with a warning naming how many were read", _check_truncated),
    Case("corrupt_middle", "2 KiB of random bytes in the middle of an H.264 mp4", _corrupt_middle, 2,
         ("clip.mp4", "corrupt"), "one-line error, no output", _no_outputs),
    Case("text_as_mp4", "a text file named .mp4", _text_as_mp4, 2, ("notes.mp4", "not a readable video"),
         "one-line error, no output", _no_outputs),
    Case("audio_only", "audio-only .mp4 (AAC)", _audio_only, 2, ("voice.mp4", "audio-only"),
         "one-line error, no output", _no_outputs),
    Case("no_frames", "video stream with zero frames (.avi)", _no_frames, 2, ("noframes.avi", "no frame"),
         "one-line error, no output", _no_outputs),
    Case("single_image", "one PNG portrait", _single_image, 0, (), "a one-frame result",
         _one_face_ok("portrait", 1, 1.0)),
    Case("image_folder", "folder of PNG frames plus a .txt and a Thumbs.db, --image-folder", _image_folder, 0, (),
         "the frames are reconstructed (non-images ignored)", _one_face_ok("frames", 4)),
    Case("image_folder_corrupt", "folder of PNG frames, one is a text file, --image-folder", _image_folder_corrupt, 2,
         ("0001.png", "not a readable image"), "one-line error naming the bad frame", _no_outputs),
    Case("one_pixel", "1x1-pixel video (FFV1)", _one_pixel, 2, ("dot.mkv", "no face"),
         "no-face error, no output", _no_outputs),
    Case("frame_4k", "3840x2160 H.264, 2 frames", _big_frame(2160, 3840, 2), 0, (), "face found and reconstructed",
         _one_face_ok("big3840", 2, 1.0)),
    Case("frame_8k", "7680x4320 H.264, 1 frame", _big_frame(4320, 7680, 1), 0, (), "face found and reconstructed",
         _one_face_ok("big7680", 1, 1.0)),
    Case("rotated_phone", "phone video stored sideways with a 90-degree display matrix", _rotated, 0, (),
         "frames turned upright before tracking; width/height are the displayed ones", _check_rotated),
    Case("variable_frame_rate", "VFR mp4 with irregular timestamps", _vfr, 0, (),
         "per-frame timestamps kept exactly (warns that fps is not 25)", _check_vfr),
    Case("fps_60", "60 fps clip", _fps60, 0, (), "reconstructed at 60 fps, timestamps 1/60 s apart (warning)",
         _check_fps60),
    Case("no_face", "grey noise, no face anywhere", _no_face, 2, ("wall.mp4", "no face found"),
         "no-face error, no output", _no_outputs),
    Case("face_leaves_returns", "face, 6 empty frames, face again", _leaves_and_returns, 0, (),
         "one result; the empty frames are marked invalid (params interpolated)", _check_leaves),
    Case("two_faces", "two faces side by side (default --face largest)", _many(2, None), 0, (),
         "the largest face only", _check_many("group2", 1)),
    Case("two_faces_all", "two faces, --face all", _many(2, "all"), 0, (), "one result per face (_face<id>)",
         _check_many("group2", 2)),
    Case("five_faces_all", "five faces, --face all", _many(5, "all"), 0, ("max_faces",),
         "4 faces (tracker limit max_faces=4) and a warning naming the limit", _check_many("group5", 4)),
    Case("extreme_head_turns", "roll -90..+90 degrees with yaw-like foreshortening", _head_turns, 0, (),
         "finite parameters for every frame; untrackable frames marked invalid", _check_turns),
    Case("odd_path", "folder and file names with spaces, accents, CJK and '#'", _odd_path, 0, (),
         "outputs named after the file", _odd_path_check),
    Case("non_utf8_file_name", "a file name that is not valid UTF-8 (Latin-1 bytes)", _non_utf8_name, 0, (),
         "outputs named with the same bytes", _one_face_ok(NON_UTF8_STEM, 4)),
    Case("odd_size_10bit", "221x223 frames, 10-bit FFV1", _odd_pix_fmt, 0, (), "reconstructed",
         _one_face_ok("odd", 4)),
    Case("output_is_a_file", "-o points below a regular file", _output_is_file, 5,
         ("cannot create output folder",), "one-line error, exit 5"),
    Case("unwritable_output", "-o is a read-only folder", _unwritable, 5, ("not writable",),
         "one-line error, exit 5", needs_non_root=True),
    Case("already_finished", "same command twice", _already_done, 0, ("1 skipped",),
         "second run skips the video, files untouched", _check_untouched, runs_before=_already_done_first),
    Case("finished_other_config", "finished output, then the same video with another option (--face all)",
         _other_config, 0, ("1 skipped", "different config", "--overwrite"),
         "skipped with a warning that the finished result used another config", _check_untouched,
         runs_before=_already_done_first),
    Case("file_name_too_long", "a 244-byte file name (the outputs' names would pass the 255-byte limit)", _long_name,
         5, ("vvvvvvvv", "too long"), "one-line error before any work, saying how long the name may be",
         _no_outputs),
    Case("overwrite", "finished output, then --overwrite", _overwrite, 0, ("1 done",),
         "redone and replaced atomically", _check_rewritten, runs_before=_already_done_first),
    Case("foreign_file_in_the_way", "the output folder already holds a user's clip.npz", _foreign_file, 5,
         ("clip.npz", "--overwrite"), "refused, the user's file is untouched", _check_foreign),
    Case("output_folder_is_input_folder", "-o is the folder holding the input clip.mp4", _output_is_input_folder, 0,
         (), "results written beside the input; the input is never touched", _check_input_kept),
    Case("render_would_replace_input", "--layout render into the input's folder (clip.mp4 -> clip.mp4)",
         _render_over_input, 5, ("clip.mp4", "input"),
         "refused before tracking, even with --overwrite; the input is untouched, no marker left",
         _check_input_untouched),
    Case("disk_full_on_write", "output file system full while the .npz is written (file-size limit)", _disk_full,
         5, ("clip.npz", "file too large"), "one-line error, no partial file; a rerun completes",
         _check_disk_full_then_resume, around=lambda ctx: file_size_limit(8000)),
    Case("malicious_flame_pickle", "FLAME generic_model.pkl whose pickle calls os.system", _malicious_flame, 4,
         ("generic_model.pkl", "refusing"), "refused, the payload never runs", _no_sentinel),
    Case("truncated_flame_pickle", "FLAME pkl cut in half", _truncated_flame, 3,
         ("generic_model.pkl", "not a readable pickle"), "one-line asset error"),
    Case("learned_without_weights", "--backend learned with FLAME but no SPECTRE checkpoint installed",
         _learned_missing_weights, 3, ("missing asset 'spectre'", "spectre assets add"),
         "one-line error saying where to get the file and where to put it", _no_outputs),
    Case("learned_malicious_weights", "--backend learned with a spectre_model.tar whose pickle calls os.system",
         _learned_malicious_weights, 4, ("spectre_model.tar", "refused"), "refused, the payload never runs",
         lambda ctx: (_no_sentinel(ctx), _no_outputs(ctx))),
    Case("malicious_checkpoint", "torch checkpoint whose pickle calls os.system (spectre assets add)",
         _malicious_checkpoint, 4, ("spectre_model.tar", "refused"), "refused, the payload never runs",
         lambda ctx: (_no_sentinel(ctx), _check_not_installed(ctx))),
    Case("deca_given_as_spectre", "DECA checkpoint installed as the SPECTRE asset", _deca_as_spectre, 3,
         ("deca_model.tar", "looks like a deca checkpoint"), "refused with the reason", _check_not_installed),
    Case("corrupt_config", "YAML syntax error in --config", _corrupt_config, 2, ("broken.yaml",),
         "one-line config error naming the file", _no_outputs),
    Case("binary_config", "--config pointing at a binary file", _binary_config, 2,
         ("settings.yaml", "not a utf-8 text file"), "one-line config error", _no_outputs),
    Case("config_unknown_key", "misspelt key in --config", _config_bad_values, 2, ("odd.yaml", "layuot"),
         "one-line config error naming the key", _no_outputs),
    Case("config_not_a_mapping", "--config holding a YAML list", _config_not_mapping, 2, ("list.yaml",),
         "one-line config error", _no_outputs),
    Case("missing_input", "input path does not exist", _missing_input, 2, ("nowhere.mp4", "no such file"),
         "one-line error before any work"),
    Case("mixed_batch", "1 good clip + 0-byte + text + faceless in one batch", _mixed_batch, 1,
         ("b_empty.mp4", "not a readable video", "c_text.mp4", "d_noface.mp4", "no face", "1 done", "3 failed"),
         "the good clip is finished, each failure listed on one line", _check_mixed),
    Case("list_with_missing_entry", ".txt list naming a missing file", _list_missing, 2, ("videos.txt", "gone.mp4"),
         "one-line error before any work"),
    Case("bad_option_value", "--workers 0", _bad_workers, 2, ("--workers",), "one-line usage error"),
    Case("track_zero_byte", "`spectre track` on a 0-byte file", _track_zero_byte, 2,
         ("empty.mp4", "not a readable video"), "one-line error, no output", _no_outputs),
    Case("track_output_present", "`spectre track` twice into the same folder", _track_again, 5,
         ("clip.tracks.npz", "--overwrite"), "refused without --overwrite, the first result untouched",
         _check_untouched, runs_before=_track_first),
    Case("track_mixed_batch", "`spectre track` on a good clip and a text file", _track_mixed, 1,
         ("b.mp4", "not a readable video"), "the good clip is tracked, the bad one reported on one line",
         _check_track_mixed),
    Case("same_name_other_video", "a/00001.mp4 finished, then a different b/00001.mp4 into the same -o",
         _same_name_other_video, 5, ("00001.yaml", "another video"),
         "refused naming both videos (--overwrite or another folder); the first result untouched", _check_untouched,
         runs_before=_same_name_first),
    Case("copied_dataset_resumes", "a/00001.mp4 finished, then the same bytes copied elsewhere", _copied_dataset, 0,
         ("1 skipped",), "recognised by size and content hash: skipped, files untouched", _check_untouched,
         runs_before=_same_name_first),
    Case("old_sidecar_other_video", "a finished sidecar without source identity (older spectre), another video",
         _same_name_other_video, 5, ("00001.yaml", "older spectre"), "refused: only the recorded path can match",
         _check_untouched, runs_before=_old_sidecar_first),
    Case("old_sidecar_same_path", "a finished sidecar without source identity, the video it records", _old_sidecar_same,
         0, ("1 skipped",), "skipped (the recorded path is this file)", _check_untouched, runs_before=_old_sidecar_first),
    Case("folder_tree", "lrs3/spk1/00001.mp4 and lrs3/spk2/00001.mp4 (+ a .txt) as one folder", _folder_tree, 0,
         ("2 done",), "walked recursively; outputs mirror the tree (out/spk1/00001.npz), no collision", _check_tree),
    Case("glob_symlink_loop", "quoted data/**/*.mp4 with two symlink loops in the tree", _glob_with_loop, 0,
         ("2 done",), "each video once (loops not followed), outputs mirror the tree", _check_glob_loop),
    Case("same_file_two_paths", "one clip given as itself, through a symlink and through '..'", _same_file_twice, 0,
         ("1 done",), "de-duplicated by real path: processed once", _check_once),
    Case("image_folder_without_switch", "folder of PNG frames without --image-folder", _image_folder_no_switch, 2,
         ("frames", "--image-folder"), "one-line error before any work naming the switch", _no_outputs),
    Case("output_inside_input_tree", "-o data/results while data/ is walked (holds an old render .mp4)",
         _output_in_input_tree, 0, ("1 done",), "the output folder is never searched for inputs",
         _check_output_in_tree),
    Case("config_negative_iterations", "fit: {iterations: -5} in --config", _config_with("fit: {iterations: -5}\n"), 2,
         ("fit.iterations = -5", "integer >= 1"), "one-line config error before any work: key, value, allowed",
         _no_outputs),
    Case("config_string_lr", "fit: {lr: fast} in --config", _config_with("fit: {lr: fast}\n"), 2,
         ("fit.lr = 'fast'", "number > 0"), "one-line config error before any work", _no_outputs),
    Case("config_negative_lr", "fit: {lr: -0.1} in --config", _config_with("fit: {lr: -0.1}\n"), 2,
         ("fit.lr = -0.1", "number > 0"), "one-line config error before any work", _no_outputs),
    Case("face_id_missing", "--face 99 on a one-face clip", _missing_face_id, 2, ("clip.mp4", "no face track 99"),
         "one-line error right after tracking, before the fit", _no_outputs),
    Case("output_under_sys", "-o /sys/kernel (exists; refuses files even to root)", _output_under_sys, 5,
         ("/sys/kernel", "not writable"), "one-line error before any work", skip=_no_sysfs),
    Case("newline_in_file_name", "a good clip and a 0-byte file whose name holds newlines and 'FAILED ...'",
         _newline_name, 1, ("\\n", "not a readable video"), "the name is escaped (\\n): no forged summary line",
         _check_no_forged_line),
    Case("single_failure_reported_once", "one 0-byte input", _single_failure, 2, ("empty.mp4", "not a readable video"),
         "the failure is printed once", _check_reported_once),
    Case("debug_after_command", "--debug after the subcommand", _debug_after, 0, (), "accepted like before it",
         _one_face_ok("clip", 3)),
    Case("spectre_home_is_a_file", "SPECTRE_HOME pointing to a file", _home_is_file, 2, ("SPECTRE_HOME", "is a file"),
         "one-line error before any work", _no_outputs,
         around=lambda ctx: _env("SPECTRE_HOME", str(ctx.tmp / "spectre_home"))),
    Case("compare_honours_output", "evaluate --compare A B -o OUT", _compare, 0, (), "the comparison is printed and "
         "written to OUT/compare.md", _check_compare, runs_before=_two_runs),
    Case("workers_above_cpus", "--workers 1000", _many_workers, 0, ("--workers 1000", "cpu"),
         "a warning; the CPU count is used", _one_face_ok("clip", 3)),
    Case("zero_timestamps", "mp4 whose frames all have timestamp 0", _zero_timestamps, 0,
         ("frozen.mp4", "timestamps do not increase"), "a warning; frames timed 1/fps apart", _check_zero_timestamps),
    Case("track_folder_tree", "`spectre track` on lrs3/spk{1,2}/00001.mp4", _track_tree, 0, (),
         "outputs mirror the tree (out/spk1/00001.tracks.npz)", _check_track_tree),
    Case("track_image_folder", "`spectre track --image-folder` on a folder of PNG frames", _track_image_folder, 0, (),
         "one image-sequence input (frames.tracks.npz)", _check_frames_tracked),
    Case("track_image_folder_without_switch", "`spectre track` on a folder of PNG frames, no switch",
         _track_image_folder_no_switch, 2, ("frames", "--image-folder"), "one-line error naming the switch (as "
         "reconstruct)", _no_outputs),
]


# ------------------------------------------------------------------------------------------------ checkpoints
# No CLI command loads network weights yet without the full official assets, so these cases call the
# strict loaders (spectre.nets.checkpoints) the learned backend uses, and check the error they raise.
@dataclass
class LoaderCase:
    name: str
    what: str
    load: Callable[[Ctx], object]   # builds the file and loads it
    code: int
    says: tuple[str, ...]
    behaviour: str


def _deca_state_dict() -> dict:
    from spectre.nets.deca import DecaEncoder

    return DecaEncoder().state_dict()


def _save(path: Path, obj) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _load_deca_with(edit: Callable[[dict], dict]):
    def load(ctx):
        from spectre.nets.checkpoints import load_deca

        path = _save(ctx.tmp / "deca_model.tar", {"E_flame": edit(_deca_state_dict())})
        return load_deca(path=path)
    return load


def _drop_head(sd):
    return dict(list(sd.items())[:-2])


def _rename(sd):
    return {("module." + k if k.startswith("layers.") else k): v for k, v in sd.items()}


def _reshape(sd):
    import torch

    k = next(k for k in sd if k.endswith("weight") and sd[k].ndim == 2)
    return {**sd, k: torch.zeros(sd[k].shape[0] + 1, sd[k].shape[1])}


def _spectre_from_deca(ctx):
    from spectre.nets.checkpoints import load_spectre

    return load_spectre(path=_save(ctx.tmp / "deca_model.tar", {"E_flame": _deca_state_dict()}))


def _evil_deca(ctx):
    import torch

    from spectre.nets.checkpoints import load_deca

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch '{ctx.sentinel}'",))

    path = ctx.tmp / "deca_model.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"E_flame": {"w": Payload()}}, path)
    return load_deca(path=path)


def _garbage_checkpoint(ctx):
    from spectre.nets.checkpoints import load_deca

    path = ctx.tmp / "deca_model.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(3).bytes(4096))
    return load_deca(path=path)


LOADER_CASES: list[LoaderCase] = [
    LoaderCase("checkpoint_missing_keys", "DECA checkpoint without its last layer", _load_deca_with(_drop_head), 3,
               ("deca_model.tar", "missing keys"), "CheckpointError listing the missing keys"),
    LoaderCase("checkpoint_renamed_keys", "DECA checkpoint with 'module.'-prefixed keys", _load_deca_with(_rename), 3,
               ("deca_model.tar", "unexpected keys [module."), "CheckpointError listing missing and unexpected keys"),
    LoaderCase("checkpoint_wrong_shape", "DECA checkpoint with one tensor of the wrong shape",
               _load_deca_with(_reshape), 3, ("deca_model.tar", "wrong-shape"),
               "CheckpointError naming the key, its shape and the expected one"),
    LoaderCase("deca_loaded_as_spectre", "DECA's file given where SPECTRE's is expected", _spectre_from_deca, 3,
               ("deca_model.tar", "expected spectre"), "CheckpointError: is a DECA checkpoint, expected SPECTRE's"),
    LoaderCase("malicious_checkpoint_loader", "checkpoint whose pickle calls os.system, loaded by the network "
               "loader", _evil_deca, 4, ("deca_model.tar", "refused"), "UnsafeFileError, the payload never runs"),
    LoaderCase("garbage_checkpoint", "4 KiB of random bytes as a checkpoint", _garbage_checkpoint, 3,
               ("deca_model.tar", "not a readable"), "AssetError: not a readable checkpoint"),
]


def markdown_table() -> str:
    """The table of docs/robustness.md, generated from the cases above."""
    rows = ["| # | case | input | exit | behaviour |", "|---|---|---|---|---|"]
    for i, c in enumerate(CASES, 1):
        rows.append(f"| {i} | `{c.name}` | {c.what} | {c.code} | {c.behaviour} |")
    for i, c in enumerate(LOADER_CASES, len(CASES) + 1):
        rows.append(f"| {i} | `{c.name}` | {c.what} | {c.code} | {c.behaviour} |")
    return "\n".join(rows)


if __name__ == "__main__":  # PYTHONPATH=src:tests python -m robustness.corpus  -> the table for docs/robustness.md
    print(markdown_table())
