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
from .config import ReconstructConfig
from .reconstructor import Reconstructor
from .resume import check_name_length, is_finished, owned_outputs, same_config, same_file, stale_outputs, writing_marker

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
    return message[len(video) + 2:] if message.startswith(f"{video}: ") else message


def run_job(video: str, stem: str, output_dir: str, cfg_dict: dict, overwrite: bool,
            reconstructor: Reconstructor | None = None, progress=None) -> JobOutcome:
    """Process one video with resume semantics; never raises for a per-video failure. ``reconstructor``:
    the caller's (reused over many videos); without one a fresh one is built from ``cfg_dict``."""
    out = Path(output_dir)
    t0 = time.perf_counter()
    try:
        check_name_length(out, stem)
        if not overwrite and is_finished(out, stem):
            writing_marker(out, stem).unlink(missing_ok=True)  # stopped between the sidecar and the marker's removal
            if not same_config(out, stem, cfg_dict):
                log.warning("%s: skipped: already finished in %s with a different config (pass --overwrite to "
                            "redo it)", video, out)
                return JobOutcome(video, "skipped", "already finished with a different config")
            return JobOutcome(video, "skipped", "already finished")
        rec = reconstructor or Reconstructor(from_dict(ReconstructConfig, cfg_dict))
        existing = [p for p in stale_outputs(out, stem) if not same_file(Path(video), p)]
        if not overwrite:
            # an earlier unfinished run's outputs are ours to redo; anybody else's file is left alone
            ours = owned_outputs(out, stem)
            foreign = [p for p in existing if p not in ours]
            if foreign:
                raise OutputError(f"{foreign[0]} already exists and was not written by spectre for this video "
                                  "(pass --overwrite to replace it)")
            for p in existing:
                p.unlink()
        result = rec.process(video)
        marker = writing_marker(out, stem)
        try:
            marker.touch()
        except OSError as exc:
            raise OutputError(f"cannot write to {out}: {exc.strerror or exc} ({marker.name})") from None
        written = rec.write(result, out, stem=stem, overwrite=True,
                            progress=progress)
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
