"""Quality of what users look at: the grey render of the default fit, judged by an independent detector.

Each clip is reconstructed with ``--layout render`` and scored by ``spectre evaluate --judge dlib``: dlib's
68 landmarks on the render against dlib's landmarks on the input. Thresholds sit below the values measured
when they were set (docs/evaluate.md, "Render quality on the samples"), with margin for platform noise.
Skips only where dlib / its model cannot be imported.
"""
from __future__ import annotations

import pytest

from spectre.evaluate import judge as J

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not J.dlib_available(), reason="dlib / face_recognition_models not installed "
                                 "(pip install 'spectre-face[judge]')")]

#: clip -> (min aperture r, max mouth NME, min closure recall or None, max render/input jitter ratio)
#: of the render against the input, dlib judge; measured values in docs/evaluate.md
LIMITS = {
    "PbgB2TaYhio_00007": (0.85, 0.040, 0.70, 1.6),
    "M003_level_1_disgusted_015": (0.90, 0.040, 0.65, 1.9),
}
#: mean number of ARKit weights above 0.1 per frame (the curves an animator reads)
MAX_ACTIVE_ARKIT = 9.0


@pytest.fixture(scope="module")
def judged(sample_videos, tmp_path_factory):
    from pathlib import Path

    from spectre.cli import main
    from spectre.evaluate.pipeline import EvaluationOptions, evaluate_inputs

    clips = [sample_videos[n] for n in LIMITS if n in sample_videos]
    if not clips:
        pytest.skip("sample clips not found")
    out = tmp_path_factory.mktemp("render_quality")
    assert main(["reconstruct", *map(str, clips), "-o", str(out / "rec"), "--layout", "render", "--quiet"]) == 0
    summary = evaluate_inputs([Path(out / "rec")], out / "eval", EvaluationOptions(plots=False, judges=["dlib"]))
    return {v["name"]: v for v in summary.report["videos"]}


@pytest.mark.parametrize("name", list(LIMITS))
def test_render_follows_the_input_mouth(judged, name):
    if name not in judged:
        pytest.skip(f"sample {name} not found")
    min_ap, max_nme, min_recall, max_jit = LIMITS[name]
    j = judged[name]["judges"]["dlib"]
    r = j["render"]
    assert j["detected_render"] >= 0.9 * j["frames"]
    assert r["aperture_r"] >= min_ap, r
    assert r["nme_mouth"] <= max_nme, r
    if min_recall is not None and r["closed_frames_ref"] >= 5:
        assert r["closure_recall"] >= min_recall, r
    assert r["jitter_pred"] <= max_jit * r["jitter_ref"], r


@pytest.mark.parametrize("name", list(LIMITS))
def test_arkit_curves_are_sparse(judged, name):
    if name not in judged:
        pytest.skip(f"sample {name} not found")
    assert judged[name]["arkit"]["active_per_frame"] <= MAX_ACTIVE_ARKIT, judged[name]["arkit"]
