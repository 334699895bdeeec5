"""`--ray` for real: an in-process Ray cluster, a head and worker nodes started with `ray start`, the CLI
against them, and a worker node killed mid-batch; every Ray process confined to 127.0.0.1 with token
authentication (see ``tests/ray_cluster.py``). Each Ray result must equal, file by file, what a local
``--workers 1`` run writes for the same clips. Plus the per-task resource choice (GPUs), without Ray.

CI installs the ``[ray]`` extra and sets ``SPECTRE_REQUIRE_RAY=1``: there a missing Ray or a machine that
cannot confine Ray to loopback fails these tests instead of skipping them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import ray_cluster
import yaml

from spectre.errors import ConfigError
from spectre.reconstruct import ReconstructConfig, make_config, run_batch
from spectre.reconstruct.distributed import worker_resources

FRAMES = 8  # short clips: the tests measure behaviour, not speed


def _unavailable(reason: str):
    if os.environ.get("SPECTRE_REQUIRE_RAY") == "1":
        pytest.fail(f"{reason} (SPECTRE_REQUIRE_RAY=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def confined():
    try:
        import ray  # noqa: F401
    except ImportError:
        _unavailable("Ray is an optional extra (pip install 'spectre-face[ray]')")
    if ray_cluster.confinement() is None:
        _unavailable("this machine does not allow unprivileged namespaces (unshare), needed to keep Ray on 127.0.0.1")


@pytest.fixture(scope="module")
def clips(sample_videos, tmp_path_factory) -> list[str]:
    """Three different speakers, cut to a few frames each."""
    from spectre.io import open_video
    from spectre.io.writer import VideoWriter

    lrs3 = [p for p in sample_videos.values() if p.parent.name == "LRS3"][:3]
    if len(lrs3) < 3:
        pytest.skip("three LRS3 sample clips are needed")
    folder = tmp_path_factory.mktemp("clips")
    out = []
    for i, src in enumerate(lrs3):
        video = open_video(src)
        dst = folder / f"clip{i}.mp4"
        with VideoWriter(dst, video.fps, (video.width, video.height)) as w:
            for frame in video.read().frames[:FRAMES]:
                w.write(frame)
        out.append(str(dst))
    return out


@pytest.fixture(scope="module")
def local_reference(clips, tmp_path_factory) -> Path:
    """What a local one-worker batch writes for the clips."""
    out = tmp_path_factory.mktemp("local")
    summary = run_batch(clips, out, make_config(layout="none"), workers=1)
    assert summary.exit_code == 0
    return out


def assert_same_outputs(ref: Path, got: Path) -> None:
    """Same files; npz arrays and CSVs identical; sidecars identical except the measured timings."""
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in got.iterdir()) == names, "same outputs, nothing partial or hidden left behind"
    assert any(n.endswith(".npz") for n in names)
    for name in names:
        a, b = ref / name, got / name
        if name.endswith(".npz"):
            with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
                assert za.files == zb.files
                for k in za.files:
                    assert np.array_equal(za[k], zb[k], equal_nan=za[k].dtype.kind == "f"), f"{name}:{k} differs"
        elif name.endswith(".yaml"):
            ya, yb = yaml.safe_load(a.read_text()), yaml.safe_load(b.read_text())
            ya.pop("timings"), yb.pop("timings")
            assert ya == yb, name
        else:
            assert a.read_bytes() == b.read_bytes(), name


def _only_loopback(report: dict) -> None:
    assert report["interfaces"] == ["lo"], "the scenario's only network interface is the loopback"
    loopback = ("127.0.0.1:", "::ffff:127.0.0.1:", "0.0.0.0:", ":::", "::1:")
    assert report["listening"] and all(a.startswith(loopback) for a in report["listening"]), report["listening"]
    assert report["strays"] == [], "no Ray process outlives the scenario's teardown"


# ------------------------------------------------------------------------------------------ resources
def test_worker_resources_request_a_gpu_only_for_cuda_jobs():
    def res(cluster, **cfg):
        from spectre.config import to_dict

        return worker_resources(to_dict(ReconstructConfig(**cfg)), cluster)

    gpu_cluster, cpu_cluster = {"CPU": 16.0, "GPU": 2.0}, {"CPU": 16.0}
    assert res(gpu_cluster, backend="learned") == {"num_cpus": 1, "num_gpus": 1}
    assert res(cpu_cluster, backend="learned") == {"num_cpus": 1, "num_gpus": 0}
    assert res(gpu_cluster, backend="fit") == {"num_cpus": 1, "num_gpus": 0}, "the fit runs on the CPU under auto"
    assert res(gpu_cluster, backend="learned", device="cpu") == {"num_cpus": 1, "num_gpus": 0}
    assert res(gpu_cluster, backend="fit", device="cuda:1") == {"num_cpus": 1, "num_gpus": 1}
    with pytest.raises(ConfigError, match="no GPU"):
        res(cpu_cluster, backend="learned", device="cuda")


# ------------------------------------------------------------------------------------------ clusters
@pytest.mark.slow
def test_in_process_cluster_matches_local_run(confined, clips, local_reference, tmp_path):
    out = tmp_path / "out"
    report = ray_cluster.run_scenario({"mode": "inproc", "clips": clips, "work": str(tmp_path / "w"),
                                       "out": str(out)}, timeout=300)
    assert "error" not in report and not report["timed_out"], report
    _only_loopback(report)
    assert report["node_ips"] == ["127.0.0.1"]
    assert report["statuses"] == ["ok"] * len(clips) and report["exit_code"] == 0, report["messages"]
    assert report["again"] == ["skipped"] * len(clips), "resume works on Ray as locally"
    assert_same_outputs(local_reference, out)


@pytest.fixture(scope="module")
def cluster_report(confined, clips, tmp_path_factory) -> dict:
    """One head (no CPU) and two worker nodes (one CPU each) by ``ray start``; the CLI runs the clips on
    them, a run without the token is refused, then worker node A is killed while it processes a video."""
    work = tmp_path_factory.mktemp("cluster")
    report = ray_cluster.run_scenario({"mode": "cluster", "clips": clips, "work": str(work / "w"),
                                       "out": str(work / "out"), "out_kill": str(work / "out_kill"),
                                       "step_timeout": 150}, timeout=480)
    report["work"] = str(work)
    return report


@pytest.mark.slow
def test_cli_on_head_and_worker_nodes(cluster_report, clips, local_reference):
    r = cluster_report
    assert "error" not in r and not r["timed_out"], r
    _only_loopback(r)
    assert r["cli"]["rc"] == 0, r["cli"]["stderr"]
    assert f"{len(clips)} done, 0 skipped (already finished), 0 failed" in r["cli"]["stderr"]
    assert_same_outputs(local_reference, Path(r["work"]) / "out")
    # the cluster requires its token: a process without it is refused with a one-line error (exit 2)
    assert r["no_token"]["rc"] == 2
    err = [line for line in r["no_token"]["stderr"].splitlines() if line.startswith("spectre:")]
    assert len(err) == 1 and "RAY_AUTH_TOKEN" in err[0], r["no_token"]["stderr"][-1000:]
    assert not (Path(r["work"]) / "no_token_out").exists() or not any((Path(r["work"]) / "no_token_out").iterdir())


@pytest.mark.slow
def test_worker_node_killed_mid_batch_loses_nothing(cluster_report, clips, local_reference):
    r = cluster_report
    assert "error" not in r and not r["timed_out"], r
    assert r["killed_mid_job"], "worker node A was killed while it processed a video"
    assert r["kill_cli"]["rc"] == 0, r["kill_cli"]["stderr"]
    # the killed attempt may have finished writing before it died: then the retry finds it done (skipped)
    summary = re.search(r"(\d+) done, (\d+) skipped \(already finished\), (\d+) failed", r["kill_cli"]["stderr"])
    assert summary and int(summary[1]) + int(summary[2]) == len(clips) and summary[3] == "0", r["kill_cli"]["stderr"]
    assert_same_outputs(local_reference, Path(r["work"]) / "out_kill")
