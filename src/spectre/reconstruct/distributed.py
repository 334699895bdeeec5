"""Scale-out: the same per-video job as a local batch (:func:`run_job`), one Ray task per video.

Optional extra ``spectre-face[ray]``; without it ``--ray`` fails with a one-line hint. Why plain Ray
tasks (not an actor pool): a task whose worker process or node dies is re-run elsewhere by Ray itself
(``max_retries``), so a lost node costs only the videos it was processing, and each finished video is
reported as it completes. Each Ray worker process keeps one :class:`Reconstructor` per config, so the
tracker and model are built once per process, not once per video. Outputs go to ``output_dir``, which
every node must see (a shared file system); resume and ``--overwrite`` behave exactly as locally
because the job itself checks the output folder.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable

from ..config import from_dict
from ..errors import ConfigError
from .config import ReconstructConfig
from .jobs import JobOutcome, run_job
from .reconstructor import Reconstructor

__all__ = ["TASK_RETRIES", "run_on_ray", "worker_resources"]

TASK_RETRIES = 3  # re-runs of a video whose worker process or node died (Ray's max_retries)

_CACHED: tuple[str, Reconstructor] | None = None


def worker_resources(cfg_dict: dict, cluster: dict) -> dict:
    """Ray resources of one video task: one CPU, plus one GPU when the job will run on CUDA (an
    explicit ``cuda`` device, or the learned backend with ``auto`` on a cluster that has GPUs)."""
    device = str(cfg_dict.get("device") or "auto").lower()
    gpus = float(cluster.get("GPU", 0) or 0)
    wants_gpu = device.startswith("cuda") or (device == "auto" and cfg_dict.get("backend") == "learned" and gpus > 0)
    if wants_gpu and gpus < 1:
        raise ConfigError(f"device {device!r} asks for CUDA but the Ray cluster has no GPU")
    return {"num_cpus": 1, "num_gpus": 1 if wants_gpu else 0}


def _ray_job(video: str, stem: str, output_dir: str, cfg_dict: dict, overwrite: bool) -> JobOutcome:
    """Runs inside a Ray worker process: reuse this process's Reconstructor while the config is the same."""
    global _CACHED
    key = json.dumps(cfg_dict, sort_keys=True, default=str)
    if _CACHED is None or _CACHED[0] != key:
        if _CACHED is not None:
            _CACHED[1].close()
        _CACHED = (key, Reconstructor(from_dict(ReconstructConfig, cfg_dict)))
    return run_job(video, stem, output_dir, cfg_dict, overwrite, reconstructor=_CACHED[1])


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'spectre-face[ray]'") from None
    return ray


def _connect(ray, address: str) -> bool:
    """Connect to ``address`` (``local``: start an in-process cluster). True when this call connected."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    try:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, AuthenticationError, ...
        # Ray reports a refused token only in its log, as a failure to connect: name both causes
        reason = " ".join(str(exc).split())[:300]
        raise ConfigError(f"cannot connect to the Ray cluster at {address}: {reason} (is it running, and does this "
                          "process have its token? RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, "
                          "see docs/ray.md)") from None
    return True


def run_on_ray(jobs: list[tuple[str, str]], output_dir: str, cfg_dict: dict, overwrite: bool, address: str,
               on_done: Callable[[JobOutcome], None] | None = None) -> list[JobOutcome]:
    """Run ``jobs`` ((video, output stem) pairs) on the Ray cluster at ``address``; one outcome per job,
    in completion order. A video whose task still fails after :data:`TASK_RETRIES` re-runs (its worker
    or node kept dying) is a failed outcome, never a lost one."""
    ray = _import_ray()
    started = _connect(ray, address)
    try:
        resources = worker_resources(cfg_dict, ray.cluster_resources())
        task = ray.remote(_ray_job).options(max_retries=TASK_RETRIES, retry_exceptions=False, **resources)
        pending = {task.remote(video, stem, output_dir, cfg_dict, overwrite): video for video, stem in jobs}
        outcomes = []
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    video = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # worker/node lost more often than the retries allow
                        reason = " ".join(str(exc).split())[:200]
                        outcome = JobOutcome(video, "failed", f"Ray task failed ({type(exc).__name__}: {reason})",
                                             exit_code=1)
                    outcomes.append(outcome)
                    if on_done:
                        on_done(outcome)
        except KeyboardInterrupt:  # stop the videos still queued or running, then report the interruption
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return outcomes
    finally:
        if started:
            ray.shutdown()
