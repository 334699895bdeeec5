"""Loader failures: strict-load reports (truncated, renamed, wrong shape), wrong asset kinds,
unreadable and malicious files. Weights are zeros of the right shapes: only the loading is tested."""
from __future__ import annotations

import json

import pytest
import torch

from spectre.assets import AssetStore
from spectre.errors import AssetError, CheckpointError, UnsafeFileError
from spectre.nets.checkpoints import load_deca, load_emotion, load_lipreader, load_spectre
from spectre.nets.deca import DecaEncoder
from spectre.nets.emotion import EmotionNet
from spectre.nets.lipreader import Lipreader, LipreaderConfig
from spectre.nets.perceptual import PerceptualEncoder

TINY_JSON = [80, 5, {"adim": 16, "aheads": 2, "eunits": 8, "elayers": 1, "dunits": 8, "dlayers": 1,
                     "transformer_input_layer": "conv3d", "transformer_encoder_attn_layer_type": "rel_mha",
                     "rel_pos_type": "latest", "macaron_style": True, "use_cnn_module": True,
                     "cnn_module_kernel": 3, "relu_type": "swish",
                     "char_list": ["<blank>", "A", "B", "<space>", "<eos>"]}]


def zeros_like_model(model: torch.nn.Module) -> dict:
    return {k: torch.zeros_like(v) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def deca_sd():
    return zeros_like_model(DecaEncoder())


@pytest.fixture(scope="module")
def expr_sd():
    return zeros_like_model(PerceptualEncoder())


def save(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def test_truncated_state_dict_is_reported(tmp_path, deca_sd):
    truncated = dict(list(deca_sd.items())[:-4])  # lose the MLP head
    path = save(tmp_path / "deca" / "deca_model.tar", {"E_flame": truncated})
    with pytest.raises(CheckpointError) as info:
        load_deca(AssetStore(tmp_path))
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert "4 missing keys" in msg and "layers.0.weight" in msg and "layers.2.bias" in msg
    assert "deca_model.tar" in msg and "unexpected" not in msg
    model = load_deca(AssetStore(tmp_path), strict=False)  # non-strict: loads the rest
    assert isinstance(model, DecaEncoder)


def test_renamed_and_reshaped_keys_are_reported(tmp_path, deca_sd, expr_sd):
    renamed = {("module." + k if k.startswith("temporal.") else k): v for k, v in expr_sd.items()}
    renamed["layers.0.weight"] = torch.zeros(52, 256)
    path = save(tmp_path / "spectre.tar", {"E_flame": deca_sd, "E_expression": renamed})
    with pytest.raises(CheckpointError) as info:
        load_spectre(path=path)
    msg = str(info.value)
    assert "E_expression" in msg and "missing keys [temporal.0.weight" in msg
    assert "unexpected keys [module.temporal.0.weight" in msg
    assert "1 wrong-shape keys [layers.0.weight (52, 256) vs expected (53, 256)]" in msg
    assert "spectre_model.tar" in msg
    with pytest.raises(CheckpointError, match="wrong-shape"):  # a wrong shape is never acceptable
        load_spectre(path=save(tmp_path / "s2.tar", {"E_flame": deca_sd, "E_expression": {
            **expr_sd, "layers.0.weight": torch.zeros(52, 256)}}), strict=False)


def test_wrong_asset_kinds_are_named(tmp_path, deca_sd):
    deca_file = save(tmp_path / "deca_model.tar", {"E_flame": deca_sd})
    with pytest.raises(CheckpointError, match="is a DECA checkpoint .*expected SPECTRE's spectre_model.tar"):
        load_spectre(path=deca_file)
    lip = Lipreader(LipreaderConfig.from_json_obj(TINY_JSON))
    lip_file = save(tmp_path / "lip" / "model.pth", zeros_like_model(lip))
    with pytest.raises(CheckpointError, match="is a VSR lipreader model.pth.*expected EMOCA"):
        load_emotion(path=lip_file)
    emo_file = save(tmp_path / "emo.ckpt", {"state_dict": {"backbone." + k: v for k, v in
                                                           zeros_like_model(EmotionNet().backbone).items()}})
    with pytest.raises(CheckpointError, match="is an EMOCA emotion checkpoint.*expected DECA"):
        load_deca(path=emo_file)
    (tmp_path / "lip" / "model.json").write_text(json.dumps(TINY_JSON))
    with pytest.raises(CheckpointError, match="is a DECA checkpoint.*expected the VSR"):
        load_lipreader(path=deca_file, config_path=tmp_path / "lip" / "model.json")


def test_lipreader_json_mismatch_and_bad_json(tmp_path):
    lip = Lipreader(LipreaderConfig.from_json_obj(TINY_JSON))
    root = tmp_path / "assets"
    save(root / "lipreader" / "model.pth", zeros_like_model(lip))
    (root / "lipreader" / "model.json").write_text(json.dumps(TINY_JSON))
    assert isinstance(load_lipreader(AssetStore(root)), Lipreader)
    other = json.loads(json.dumps(TINY_JSON))
    other[2]["elayers"] = 2
    (root / "lipreader" / "model.json").write_text(json.dumps(other))
    with pytest.raises(CheckpointError, match="missing keys \\[encoder.encoders.1.*does that model.json belong"):
        load_lipreader(AssetStore(root))
    (root / "lipreader" / "model.json").write_text("{not json")
    with pytest.raises(AssetError, match="model.json"):
        load_lipreader(AssetStore(root))
    other[2]["transformer_input_layer"] = "conv1d"
    (root / "lipreader" / "model.json").write_text(json.dumps(other))
    with pytest.raises(AssetError, match="not a visual"):
        load_lipreader(AssetStore(root))


def test_missing_and_corrupt_files(tmp_path, deca_sd):
    with pytest.raises(AssetError, match="missing asset 'spectre'"):
        load_spectre(AssetStore(tmp_path))
    path = save(tmp_path / "deca_model.tar", {"E_flame": deca_sd})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(AssetError, match="deca_model.tar"):
        load_deca(path=path)


class _Payload:
    """Unpickling this would create the sentinel file (stands in for arbitrary code)."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


@pytest.mark.parametrize("loader", [load_deca, load_spectre, load_emotion, load_lipreader])
def test_malicious_checkpoint_is_refused(tmp_path, loader):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.tar"
    torch.save({"E_flame": {"x": _Payload(sentinel)}, "state_dict": {}}, path)
    (tmp_path / "model.json").write_text(json.dumps(TINY_JSON))
    kwargs = {"config_path": tmp_path / "model.json"} if loader is load_lipreader else {}
    with pytest.raises(UnsafeFileError, match="evil.tar"):
        loader(path=path, **kwargs)
    assert not sentinel.exists()
