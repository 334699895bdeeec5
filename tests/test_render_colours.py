"""The video render's colours (``FaceModel.render_colours``, ``spectre.models.render_colours``): the lip and
brow regions of ICT and of the synthetic FLAME lie on the lips and brows and nowhere else, ICT's mouth
inside and teeth are dark and its eyes have irises and pupils, and ``--render-colours`` reaches the saved
config and the video."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spectre.models.render_colours import (
    BROW_HALF_M,
    BROWS,
    EDGE_M,
    INSET_M,
    IRIS,
    LIPS,
    PUPIL,
    TEETH,
    brow_weights,
    lip_weights,
)


def test_lip_weights_are_one_inside_zero_outside_and_behind():
    """A square outer line 4 cm wide (ICT units, cm): full weight well inside, none outside or deep behind."""
    line = np.array([[-2.0, -2.0, 0.0], [2.0, -2.0, 0.0], [2.0, 2.0, 0.0], [-2.0, 2.0, 0.0]])
    pts = np.array([[0.0, 0.0, 0.5], [1.5, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, -2.0], [0.0, 1.9, 0.0]])
    w = lip_weights(pts, line, units_per_metre=100.0)
    assert w[0] == 1.0 and w[1] == 1.0  # inside (in front of the line too)
    assert w[2] == 0.0  # outside
    assert w[3] == 0.0  # inside seen from the front, but 2 cm behind the lip line: the back of the head
    # 1 mm inside the line: the soft edge's middle sits INSET_M in, EDGE_M wide
    assert w[4] == pytest.approx(0.5 + (0.1 - INSET_M * 100) / (EDGE_M * 100))


def test_brow_weights_follow_the_brow_line():
    """A straight brow line 4 cm long at y = 3 (cm): full weight on it, none a centimetre above or below."""
    brow = np.array([[-2.0, 3.0, 1.0], [0.0, 3.0, 1.0], [2.0, 3.0, 1.0]])
    pts = np.array([[0.0, 3.0, 1.0], [1.0, 3.0 + 0.5 * BROW_HALF_M * 100, 1.0], [0.0, 4.0, 1.0], [0.0, 2.0, 1.0],
                    [0.0, 3.0, -2.0], [3.0, 3.0, 1.0]])
    w = brow_weights(pts, [brow], units_per_metre=100.0)
    assert w[0] == 1.0 and w[1] == 1.0
    assert w[2] == 0.0 and w[3] == 0.0 and w[4] == 0.0  # above, below, far behind
    assert w[5] == 0.0  # 1 cm past the brow's end


def test_the_tint_covers_the_lips_only(face_model):
    colours = face_model.render_colours()
    assert colours.shape == (face_model.num_vertices, 3) and colours.dtype == torch.float32
    assert face_model.render_colours() is colours  # derived once
    lips = face_model.mediapipe_lip_points()[0][:, 0]
    inner = torch.cat([lips[21:30], lips[31:40]])  # the inner lip line without its corners
    # the inner lip line lies well inside the outer one: full lip colour there
    assert torch.allclose(colours[inner], torch.tensor(LIPS), atol=1e-6)
    # the lips are a small part of the mesh, around the mouth
    template = face_model.v_template
    centre = template[lips].mean(0)
    width = float(template[lips, 0].amax() - template[lips, 0].amin())
    red = (colours[:, 0] > 0.85) & (colours[:, 0] - colours[:, 1] > 0.2)  # lip red (not the tongue or brows)
    far = (template - centre).norm(dim=1) > 0.75 * width
    assert int(red.sum()) > 20 and not bool((red & far).any())
    assert int(red.sum()) < 0.1 * face_model.num_vertices


def test_the_brows_are_darkened_above_the_eyes(face_model):
    colours = face_model.render_colours()
    lm = face_model.landmarks_only(face_model.default_params(1))[0]
    brow = torch.isclose(colours, torch.tensor(BROWS)).all(1)
    assert int(brow.sum()) > 10
    template = face_model.v_template
    eyes_top = float(lm[36:48, 1].max())
    assert bool((template[brow, 1] > eyes_top).all())  # all above the eyes
    span = float(lm[17:27, 0].amax() - lm[17:27, 0].amin())
    assert bool((template[brow, 0].abs() < 0.5 * span + 2 * BROW_HALF_M * face_model.units_per_metre).all())


def test_ict_mouth_inside_and_teeth_are_dark(ict):
    colours = ict.render_colours()
    for part in ("Teeth", "Mouth socket", "Gums and tongue"):
        idx = ict.part_vertex_idx(part)
        assert bool((colours[idx] < 0.6).all()), part  # darker than the grey face and the lips' red
    assert torch.allclose(colours[ict.part_vertex_idx("Teeth")], torch.tensor(TEETH))
    nose_tip = int(torch.argmax(ict.v_template[:, 2]))
    assert torch.equal(colours[nose_tip], torch.ones(3))
    for part in ("Eyeball left", "Eyeball right"):  # a pupil at the front of each eyeball, ringed by the iris
        idx = ict.part_vertex_idx(part)
        front = idx[torch.argmax(ict.v_template[idx, 2])]
        assert torch.allclose(colours[front], torch.tensor(PUPIL))
        iris = torch.isclose(colours[idx], torch.tensor(IRIS)).all(1)
        sclera = (colours[idx] == 1.0).all(1)
        assert int(iris.sum()) > 20 and int(sclera.sum()) > int(iris.sum())


def test_render_colours_option_reaches_the_config(tmp_path):
    from spectre.errors import ConfigError
    from spectre.reconstruct.config import make_config

    assert make_config().render_colours == "tinted"
    assert make_config(render_colours="grey").render_colours == "grey"
    (tmp_path / "c.yaml").write_text("render_colours: grey\n")
    assert make_config(tmp_path / "c.yaml").render_colours == "grey"
    with pytest.raises(ConfigError, match="render_colours"):
        make_config(render_colours="pink")


def test_video_tint_follows_the_option(ict):
    from spectre.reconstruct.videostage import video_tint

    assert video_tint(ict, "grey") is None
    assert np.array_equal(video_tint(ict, "tinted"), ict.render_colours().numpy())


def test_flame_eyeballs_have_irises(flame):
    from spectre.models.flame import EYEBALL_VERTEX_RANGES

    colours = flame.render_colours()
    for a, b in EYEBALL_VERTEX_RANGES:
        eye = colours[a:b]
        front = int(torch.argmax(flame.v_template[a:b, 2]))
        assert bool((eye[front] < 0.5).all())  # the pupil or the iris at the front
        assert int(torch.isclose(eye, torch.tensor(IRIS)).all(1).sum()) > 5
        assert int((eye == 1.0).all(1).sum()) > (b - a) // 2  # the rest is white
