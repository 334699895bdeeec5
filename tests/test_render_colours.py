"""The video render's lip colours (``FaceModel.render_colours``, ``spectre.models.render_colours``): the lip
region of ICT and of the synthetic FLAME lies on the lips and nowhere else, ICT's mouth inside and teeth are
dark, and ``--render-colours`` reaches the saved config and the video."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spectre.models.render_colours import EDGE_M, INSET_M, LIPS, TEETH, lip_weights


@pytest.fixture(scope="module")
def flame(flame_assets):
    from spectre.assets import AssetStore
    from spectre.models import load_face_model
    return load_face_model("flame", AssetStore(flame_assets)).eval()


@pytest.fixture(params=["ict", "flame"])
def model(request):
    return request.getfixturevalue(request.param)


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


def test_the_tint_covers_the_lips_only(model):
    colours = model.render_colours()
    assert colours.shape == (model.num_vertices, 3) and colours.dtype == torch.float32
    assert model.render_colours() is colours  # derived once
    lips = model.mediapipe_lip_points()[0][:, 0]
    inner = torch.cat([lips[21:30], lips[31:40]])  # the inner lip line without its corners
    # the inner lip line lies well inside the outer one: full lip colour there
    assert torch.allclose(colours[inner], torch.tensor(LIPS), atol=1e-6)
    # the lips are a small part of the mesh, around the mouth
    template = model.v_template
    centre = template[lips].mean(0)
    width = float(template[lips, 0].amax() - template[lips, 0].amin())
    red = (colours[:, 0] > 0.85) & (colours[:, 0] > colours[:, 1] + 0.05)  # lip red (not ICT's darker tongue)
    far = (template - centre).norm(dim=1) > 0.75 * width
    assert int(red.sum()) > 20 and not bool((red & far).any())
    assert int(red.sum()) < 0.1 * model.num_vertices


def test_ict_mouth_inside_and_teeth_are_dark(ict):
    colours = ict.render_colours()
    for part in ("Teeth", "Mouth socket", "Gums and tongue"):
        idx = ict.part_vertex_idx(part)
        assert bool((colours[idx] < 0.6).all()), part  # darker than the grey face and the lips' red
    assert torch.allclose(colours[ict.part_vertex_idx("Teeth")], torch.tensor(TEETH))
    nose_tip = int(torch.argmax(ict.v_template[:, 2]))
    assert torch.equal(colours[nose_tip], torch.ones(3))


def test_render_colours_option_reaches_the_config(tmp_path):
    from spectre.errors import ConfigError
    from spectre.reconstruct.config import make_config

    assert make_config().render_colours == "lips"
    assert make_config(render_colours="grey").render_colours == "grey"
    (tmp_path / "c.yaml").write_text("render_colours: grey\n")
    assert make_config(tmp_path / "c.yaml").render_colours == "grey"
    with pytest.raises(ConfigError, match="render_colours"):
        make_config(render_colours="pink")


def test_video_tint_follows_the_option(ict):
    from spectre.reconstruct.videostage import video_tint

    assert video_tint(ict, "grey") is None
    assert np.array_equal(video_tint(ict, "lips"), ict.render_colours().numpy())
