"""Shading against the official DECA/SPECTRE vectors (golden case 7) and analytic renders."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectre.geometry import project_to_crop
from spectre.io.export import read_obj
from spectre.render import shading
from spectre.render.renderer import Renderer, warp_affine

SH_ATOL = 1e-4
NORMAL_ATOL = 1e-3


@pytest.fixture(scope="module")
def gold(golden_dir):
    g = np.load(golden_dir / "shading.npz")
    return {k: torch.from_numpy(g[k]) for k in g.files}


def test_constant_factor(gold):
    np.testing.assert_allclose(np.array(shading.SH_CONSTANT_FACTOR, np.float32), gold["constant_factor"].numpy(),
                               atol=1e-7)


def test_sh_shading_image(gold):
    out = shading.add_sh_light(gold["in_normal_image"], gold["in_sh_coeffs"])
    torch.testing.assert_close(out, gold["sh_shading_image"], atol=SH_ATOL, rtol=0)


def test_sh_shading_per_vertex(gold):
    normals = gold["vertex_normals"].permute(0, 2, 1).unsqueeze(2)  # laid out as a (B,3,1,V) image
    out = shading.add_sh_light(normals, gold["in_sh_coeffs"])
    torch.testing.assert_close(out, gold["sh_shading_per_vertex"], atol=SH_ATOL, rtol=0)


def test_vertex_and_face_normals(gold):
    faces = gold["faces"][0].long()
    torch.testing.assert_close(shading.vertex_normals(gold["verts"], faces), gold["vertex_normals"],
                               atol=NORMAL_ATOL, rtol=0)
    torch.testing.assert_close(shading.face_normals(gold["verts"], faces), gold["face_normals"],
                               atol=NORMAL_ATOL, rtol=0)


def test_directional_default_lights(gold):
    lights = shading.default_shape_lights(2)
    torch.testing.assert_close(lights, gold["render_shape_default_lights"])
    out = shading.add_directional_light(gold["vertex_normals"], lights)
    torch.testing.assert_close(out, gold["directional_shading"], atol=SH_ATOL, rtol=0)


def test_point_lights(gold):
    out = shading.add_point_light(gold["verts"], gold["vertex_normals"], gold["in_point_lights"])
    torch.testing.assert_close(out, gold["point_shading"], atol=SH_ATOL, rtol=0)


def test_trans_verts_plus10_and_screen_normals(gold):
    r = Renderer(224)
    screen = r.screen_vertices(project_to_crop(gold["verts"], gold["in_cam"]))
    torch.testing.assert_close(screen, gold["trans_verts_plus10"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shading.vertex_normals(screen, gold["faces"][0].long()),
                               gold["transformed_vertex_normals"], atol=NORMAL_ATOL, rtol=0)


def test_uv_buffers_from_head_template(gold, shared_assets):
    obj = read_obj(shared_assets / "spectre_data" / "head_template.obj")
    np.testing.assert_array_equal(obj["faces"], gold["faces"][0].numpy())
    np.testing.assert_array_equal(obj["uv_faces"], gold["uvfaces"][0].numpy())
    np.testing.assert_allclose(obj["uv_coords"], gold["raw_uvcoords"][0].numpy(), atol=1e-6)
    uv, face_uv = shading.uv_attributes(torch.from_numpy(obj["uv_coords"]).float(),
                                        torch.from_numpy(obj["uv_faces"]))
    torch.testing.assert_close(uv, gold["uvcoords"], atol=1e-6, rtol=0)
    torch.testing.assert_close(face_uv, gold["face_uvcoords"], atol=1e-6, rtol=0)


# ---- analytic renders ------------------------------------------------------------------------
QUAD = torch.tensor([[0, 1, 2], [0, 2, 3]])


def facing_quad(half=0.5):
    """A quad in model space facing the camera (+z); crop coordinates flip y and z as SPECTRE does."""
    v = torch.tensor([[[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0]]])
    return v, project_to_crop(v, torch.tensor([[1.0, 0.0, 0.0]]))


def test_render_shape_flat_quad_colour():
    v, crop = facing_quad()
    out = Renderer(32).render_shape(v, crop, QUAD)
    inside = out.alpha[0, 0] > 0
    assert inside.sum() == 16 * 16
    # n = (0,0,1): four lights at n.l = 1/sqrt(3), one at 1; mean times 1.7 times 180/255
    expected = 180 / 255 * 1.7 * (4 / math.sqrt(3) + 1) / 5
    torch.testing.assert_close(out.images[0][:, inside], torch.full((3, 256), expected), atol=1e-5, rtol=0)
    assert out.images[0][:, ~inside].abs().max() == 0


def test_render_shape_hides_back_faces_and_uses_background():
    v, crop = facing_quad()
    back = Renderer(32).render_shape(v, crop, QUAD.flip(1), images=torch.full((1, 3, 32, 32), 0.25))
    # reversed winding: screen normal points away -> masked out like the official pos_mask
    assert back.alpha.sum() == 0
    torch.testing.assert_close(back.images, torch.full((1, 3, 32, 32), 0.25))


def test_render_textured_flat_quad():
    v, crop = facing_quad(half=1.0)
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    texture = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sh = torch.zeros(1, 9, 3)
    sh[0, 0] = 2.0  # constant light: shading = 2 * c0
    out = Renderer(8).render_textured(v, crop, QUAD, texture, uv, QUAD, sh)
    # the quad fills the image and its UVs map pixel (i, j) onto texel (i, j)
    torch.testing.assert_close(out.images[0], texture[0] * 2 * shading.SH_CONSTANT_FACTOR[0], atol=1e-5, rtol=0)


def test_render_attributes_batch_and_gradients():
    v, crop = facing_quad()
    crop = crop.repeat(2, 1, 1).requires_grad_(True)
    colour = torch.rand(2, 4, 3)
    out = Renderer(16).render_attributes(crop, QUAD, colour)
    assert out.images.shape == (2, 3, 16, 16)
    out.images.sum().backward()
    assert crop.grad.abs().sum() > 0


def test_warp_affine_translation():
    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 2, 3] = 1.0
    m = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -2.0]])  # shift left 1, up 2
    out = warp_affine(img, m, 8)
    assert out[0, 0, 0, 2] == pytest.approx(1.0)
    assert out.sum() == pytest.approx(1.0)


def test_flame_and_ict_shape_renders(gold, shared_assets):
    faces = gold["faces"][0].long()
    r = Renderer(224)
    out = r.render_shape(gold["verts"], project_to_crop(gold["verts"], gold["in_cam"]), faces)
    assert out.images.shape == (2, 3, 224, 224)
    assert 0.3 < out.alpha.mean() < 0.95 and torch.isfinite(out.images).all()
    ict = np.load(shared_assets / "ict_facekit" / "ict_face_model.npz")
    vi = torch.from_numpy(ict["neutral_vertices"])[None]
    fi = torch.from_numpy(ict["triangles"]).long()
    out = r.render_shape(vi, project_to_crop(vi, torch.tensor([[0.06, 0.0, -3.0]])), fi)
    fg = out.alpha[0, 0] > 0
    assert 0.3 < fg.float().mean() < 0.95
    # lit face: mean grey level of the foreground well inside the light range
    assert 0.3 < out.images[0][:, fg].mean() < 1.0


@pytest.mark.parametrize("name", ["ict", "flame"])
def test_renders_any_face_model(name, flame_assets):
    """Works through the FaceModel interface: render_faces(), uv_coords/uv_faces, any vertex count."""
    from spectre.assets import AssetStore
    from spectre.models import load_face_model

    model = load_face_model(name, AssetStore(flame_assets))
    params = model.default_params(1)
    verts = model(params).vertices
    span = (verts.amax(1) - verts.amin(1))[0, 1]
    cam = torch.tensor([[1.6 / float(span), 0.0, 0.0]])
    crop = project_to_crop(verts, cam)
    faces = model.render_faces()
    r = Renderer(224)
    shape = r.render_shape(verts, crop, faces)
    fg = shape.alpha[0, 0] > 0
    assert 0.2 < fg.float().mean() < 0.95
    if model.uv_coords is not None:
        sh = torch.zeros(1, 9, 3)
        sh[0, 0] = 3.0
        tex = torch.full((1, 3, 64, 64), 0.5)
        out = r.render_textured(verts, crop, model.faces, tex, model.uv_coords, model.uv_faces, sh)
        lit = out.alpha[0, 0] > 0
        # constant texture x constant light; a few pixels may read texels outside the UV square
        ok = (out.images[0][:, lit] - 1.5 * 0.2820948).abs() < 1e-3
        assert ok.float().mean() > 0.97
