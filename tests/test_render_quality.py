"""Quality of what users look at: the render of the default fit, judged by an independent detector.

Each clip is reconstructed with ``--layout render``, in the default colours (tinted) and in the official grey
(``--render-colours grey``), and scored by ``spectre evaluate --judge dlib``: dlib's 68 landmarks on the
render against dlib's landmarks on the input. Thresholds sit below the values measured when they were set
(docs/evaluate.md, "Render quality on the samples" and "Colours on the render"), with margin for platform
noise.
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
#: On another machine (2026-12-01, the same tree, another Xeon CPU; the judge is exact per machine) PbgB2's grey
#: closure recall was 0.73: 8 of its 11 closed frames against 9, one frame; its limit allows that one frame.
LIMITS = {
    "PbgB2TaYhio_00007": (0.85, 0.040, 0.70, 1.6, 6.5),
    "M003_level_1_disgusted_015": (0.90, 0.040, 0.80, 1.45, 8.5),
}
#: the same for the default, tinted render (the same fit). Measured when set: PbgB2TaYhio 0.929 / 0.0240 /
#: 0.91 / 0.93, M003 0.966 / 0.0230 / 0.91 / 0.93: the NME and jitter limits are tighter than the grey's.
TINTED_LIMITS = {
    "PbgB2TaYhio_00007": (0.85, 0.030, 0.75, 1.2),
    "M003_level_1_disgusted_015": (0.90, 0.030, 0.80, 1.2),
}


@pytest.fixture(scope="module")
def judged(sample_videos, tmp_path_factory):
    from spectre.cli import main
    from spectre.evaluate.pipeline import EvaluationOptions, evaluate_inputs

    clips = [sample_videos[n] for n in LIMITS if n in sample_videos]
    if not clips:
        pytest.skip("sample clips not found")
    out = tmp_path_factory.mktemp("render_quality")
    runs = {}
    for colours in ("tinted", "grey"):
        rec = out / f"rec_{colours}"
        assert main(["reconstruct", *map(str, clips), "-o", str(rec), "--layout", "render", "--render-colours",
                     colours, "--quiet"]) == 0
        summary = evaluate_inputs([rec], out / f"eval_{colours}", EvaluationOptions(plots=False, judges=["dlib"]))
        runs[colours] = {v["name"]: v for v in summary.report["videos"]}
    return runs


@pytest.mark.parametrize("colours", ["grey", "tinted"])
@pytest.mark.parametrize("name", list(LIMITS))
def test_render_follows_the_input_mouth(judged, name, colours):
    if name not in judged[colours]:
        pytest.skip(f"sample {name} not found")
    min_ap, max_nme, min_recall, max_jit = (LIMITS[name][:4] if colours == "grey" else TINTED_LIMITS[name])
    j = judged[colours][name]["judges"]["dlib"]
    r = j["render"]
    assert j["detected_render"] >= 0.9 * j["frames"]
    assert r["aperture_r"] >= min_ap, r
    assert r["nme_mouth"] <= max_nme, r
    if min_recall is not None and r["closed_frames_ref"] >= 5:
        assert r["closure_recall"] >= min_recall, r
    assert r["jitter_pred"] <= max_jit * r["jitter_ref"], r


@pytest.mark.parametrize("name", list(LIMITS))
def test_colours_show_the_face_better_than_grey(judged, name):
    """The same fit, rendered twice: on the tinted render dlib finds the mouth's outline closer to the input's
    (mouth NME; measured 0.0230 vs 0.0325 and 0.0240 vs 0.0338), its width at least as well, and its landmarks
    steadier (render jitter; measured 0.0180 vs 0.0249 and 0.0255 vs 0.0345)."""
    if name not in judged["grey"]:
        pytest.skip(f"sample {name} not found")
    tinted, grey = (judged[c][name]["judges"]["dlib"]["render"] for c in ("tinted", "grey"))
    assert tinted["nme_mouth"] <= 0.9 * grey["nme_mouth"], (tinted, grey)
    assert tinted["width_r"] >= grey["width_r"] - 0.02, (tinted, grey)
    assert tinted["jitter_pred"] <= 0.9 * grey["jitter_pred"], (tinted, grey)


@pytest.mark.parametrize("name", list(LIMITS))
def test_arkit_curves_are_sparse(judged, name):
    if name not in judged["tinted"]:
        pytest.skip(f"sample {name} not found")
    arkit = judged["tinted"][name]["arkit"]
    assert arkit["active_per_frame"] <= LIMITS[name][4], arkit
