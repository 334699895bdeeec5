"""Scale-out: the same per-video job (:func:`~spectre.reconstruct.jobs.run_job`) on a Ray cluster
through Ray Data. Optional extra ``spectre-face[ray]``; without it ``--ray`` fails with a one-line hint.

Each Ray worker builds one :class:`Reconstructor` (tracker, model, networks) and processes many videos;
outputs go to ``output_dir``, which must be visible to every node (a shared filesystem). Resume and
``--overwrite`` behave exactly as locally, since the job checks the output folder itself.
"""
from __future__ import annotations

import dataclasses

from ..config import from_dict
from ..errors import ConfigError
from .config import ReconstructConfig
from .jobs import JobOutcome, run_job
from .reconstructor import Reconstructor

__all__ = ["run_on_ray"]


class _VideoJob:
    """Ray Data callable class: heavy state is built once per worker process."""

    def __init__(self, cfg_dict: dict, output_dir: str, overwrite: bool):
        self.cfg_dict, self.output_dir, self.overwrite = cfg_dict, output_dir, overwrite
        self.rec = Reconstructor(from_dict(ReconstructConfig, cfg_dict))

    def __call__(self, row: dict) -> dict:
        o = run_job(row["video"], row["stem"], self.output_dir, self.cfg_dict, self.overwrite, reconstructor=self.rec)
        d = dataclasses.asdict(o)
        d["outputs"] = "\n".join(d["outputs"])  # flat column types for Arrow
        return d


def run_on_ray(jobs: list[tuple[str, str]], output_dir: str, cfg_dict: dict, overwrite: bool, address: str,
               workers: int | None = None) -> list:
    """Run ``jobs`` ((video, output stem) pairs) on Ray at ``address`` (``local``: an in-process cluster)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("--ray needs Ray Data: pip install 'spectre-face[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                     log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot connect to the Ray cluster at {address}: {' '.join(str(exc).split())}") from None
    n = workers or max(1, min(len(jobs), int(ray.available_resources().get("CPU", 1))))
    ds = ray.data.from_items([{"video": v, "stem": s} for v, s in jobs])
    rows = ds.map(_VideoJob, fn_constructor_kwargs={"cfg_dict": cfg_dict, "output_dir": output_dir,
                                                    "overwrite": overwrite},
                  concurrency=n, num_cpus=1).take_all()
    outcomes = []
    for r in rows:
        outs = [x for x in str(r.get("outputs") or "").split("\n") if x]
        outcomes.append(JobOutcome(str(r["video"]), str(r["status"]), str(r["message"] or ""), outs,
                                   float(r["seconds"]), int(r["exit_code"])))
    return outcomes
