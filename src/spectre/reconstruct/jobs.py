"""One job: a video reconstructed into an output folder with resume semantics, never raising for a
per-video failure (the outcome says what happened). The local process pool (:mod:`.batch`) and the Ray
cluster (:mod:`.distributed`) both run this."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import from_dict
from ..errors import OutputError, SpectreError
from ..io.inputs import display_path
from .config import ReconstructConfig
from .reconstructor import Reconstructor
from .resume import (
    check_name_length,
    guard_input,
    is_finished,
    other_source,
    output_names,
    owned_outputs,
    same_config,
    same_file,
    stale_outputs,
    writing_marker,
)

log = logging.getLogger(__name__)

__all__ = ["JobOutcome", "run_job"]


@dataclass
class JobOutcome:
    """What happened to one video (``exit_code``: the documented code of its error, 0 when none)."""

    video: str
    status: str  # ok | skipped | failed
    message: str = ""
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    exit_code: int = 0


def _without_prefix(message: str, video: str) -> str:
    """The reason only when the message starts with the video's own path (the summary names it)."""
    for shown in (video, " ".join(video.split())):  # errors keep messages on one line: whitespace collapsed
        if message.startswith(f"{shown}: "):
            return message[len(shown) + 2:]
    return message


def run_job(video: str, stem: str, output_dir: str, cfg_dict: dict, overwrite: bool,
            reconstructor: Reconstructor | None = None, progress=None) -> JobOutcome:
    """Process one video with resume semantics; never raises for a per-video failure. ``stem``: the
    outputs' base name relative to ``output_dir`` ('/'-separated: ``spk1/00001`` writes into
    ``output_dir/spk1/``). ``reconstructor``: the caller's (reused over many videos); without one a
    fresh one is built from ``cfg_dict``."""
    out = Path(output_dir) / Path(stem).parent
    stem = Path(stem).name
    t0 = time.perf_counter()
    try:
        check_name_length(out, stem)
        if not overwrite and is_finished(out, stem):
            other = other_source(out, stem, video)
            if other is not None:
                raise OutputError(f"{display_path(out / stem)}.yaml is the finished result of another video, "
                                  f"{display_path(other)}: choose another output folder, or pass --overwrite to "
                                  "replace it")
            writing_marker(out, stem).unlink(missing_ok=True)  # stopped between the sidecar and the marker's removal
            if not same_config(out, stem, cfg_dict):
                log.warning("%s: skipped: already finished in %s with a different config (pass --overwrite to "
                            "redo it)", display_path(video), display_path(out))
                return JobOutcome(video, "skipped", "already finished with a different config")
            return JobOutcome(video, "skipped", "already finished")
        rec = reconstructor or Reconstructor(from_dict(ReconstructConfig, cfg_dict))
        # an output that would replace the input is refused before the work (track ids do not matter:
        # only the render shares the input's suffix)
        planned = output_names(Path(video), stem, [0], rec.cfg)
        guard_input(Path(video), [out / n for group in planned.values() for n in group] + [out / f"{stem}.yaml"])
        existing = [p for p in stale_outputs(out, stem) if not same_file(Path(video), p)]
        if not overwrite:
            # an earlier unfinished run's outputs are ours to redo; anybody else's file is left alone
            ours = owned_outputs(out, stem)
            foreign = [p for p in existing if p not in ours]
            if foreign:
                raise OutputError(f"{display_path(foreign[0])} already exists and was not written by spectre for "
                                  "this video (pass --overwrite to replace it)")
            for p in existing:
                p.unlink()
        marker = writing_marker(out, stem)
        try:
            out.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError as exc:
            raise OutputError(f"cannot write to {display_path(out)}: {exc.strerror or exc} ({marker.name})") from None
        # the video is written while the video is still being processed (overlapped stages)
        try:
            written = rec.run(video, out, stem=stem, overwrite=True, progress=progress).outputs
        except BaseException:
            if not stale_outputs(out, stem):  # failed before writing anything: no marker left behind
                marker.unlink(missing_ok=True)
            raise
        marker.unlink(missing_ok=True)
        return JobOutcome(video, "ok", "", [str(p) for p in written], time.perf_counter() - t0)
    except SpectreError as exc:
        return JobOutcome(video, "failed", _without_prefix(str(exc), video), seconds=time.perf_counter() - t0,
                          exit_code=exc.exit_code)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug on one video must not stop a batch; reported in the summary
        log.debug("unexpected failure on %s", video, exc_info=True)
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())
        return JobOutcome(video, "failed", f"internal error ({msg})", seconds=time.perf_counter() - t0, exit_code=1)
