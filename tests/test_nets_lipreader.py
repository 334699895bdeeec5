"""VSR lipreader: golden case 4 (front-end features, conformer 'latest' and 'legacy') through the public
loaders on model.pth + model.json files; CTC prefix scoring and beam-search scores checked independently."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nets_helpers import assert_close, golden_state_dict, load_keys

from spectre.assets import AssetStore
from spectre.nets.beam_search import DecodeOptions, ctc_initial_state, ctc_prefix_scores
from spectre.nets.checkpoints import build_lipreader, load_lipreader
from spectre.nets.lipreader import Lipreader, LipreaderConfig


@pytest.fixture(scope="module")
def lip_files(tmp_path_factory, golden_dir, golden_weights):
    keys = load_keys(golden_dir, "lipreader_keys.json")
    root = tmp_path_factory.mktemp("lip_assets")
    (root / "lipreader").mkdir()
    torch.save(golden_state_dict(golden_weights, keys["keys"], "lipreader."), root / "lipreader" / "model.pth")
    conf = keys["ASSUMED_model_json"]
    (root / "lipreader" / "model.json").write_text(json.dumps(conf))
    legacy = json.loads(json.dumps(conf))
    del legacy[2]["rel_pos_type"]
    (root / "legacy.json").write_text(json.dumps(legacy))
    return root


@pytest.fixture(scope="module")
def golden(golden_dir):
    return np.load(golden_dir / "lipreader.npz")


def test_latest_matches_golden(lip_files, golden):
    model = load_lipreader(AssetStore(lip_files))
    assert model.cfg.attn_type == "rel_mha" and not model.training
    mouths = torch.from_numpy(golden["in_mouths"])
    with torch.no_grad():
        assert_close(model.resnet_features(mouths), golden["resnet_feats"])
        front = model.encoder.frontend.frontend3D(mouths.unsqueeze(1))
        assert_close(front.mean(dim=(3, 4)), golden["frontend3d_out_mean_hw"])
        assert_close(model.encode(mouths), golden["conformer_out_latest"])
        text = model.decode(mouths[0])
    assert isinstance(text, str) and "<" not in text


def test_legacy_rel_pos_matches_golden(lip_files, golden):
    model = build_lipreader(lip_files / "lipreader" / "model.pth", lip_files / "legacy.json")
    assert model.cfg.attn_type == "legacy_rel_mha"
    with torch.no_grad():
        assert_close(model.encode(torch.from_numpy(golden["in_mouths"])), golden["conformer_out_legacy"])


# --- decoding -------------------------------------------------------------------------------------

CHARS = ["<blank>", "<unk>", "A", "B", "<space>", "<eos>"]


def _brute_prefix_logprob(logp: torch.Tensor, labels: list[int], complete: bool) -> float:
    """log P(collapsed path == labels) (complete) or log P(collapsed path starts with labels)."""
    t_len, vocab = logp.shape
    total = -math.inf
    for path in itertools.product(range(vocab), repeat=t_len):
        out, prev = [], None
        for s in path:
            if s != 0 and s != prev:
                out.append(s)
            prev = s
        ok = out == labels if complete else out[:len(labels)] == labels
        if ok:
            total = np.logaddexp(total, float(sum(logp[t, s] for t, s in enumerate(path))))
    return total


def test_ctc_prefix_scores_match_brute_force():
    torch.manual_seed(0)
    vocab, eos = 4, 3  # blank, a, b, eos (eos never emitted by CTC here: tiny probabilities)
    logits = torch.randn(5, vocab, dtype=torch.float64)
    logits[:, eos] = -30.0
    logp = torch.log_softmax(logits, -1)  # float64: each frame sums to 1, as the brute force assumes
    cands = torch.tensor([0, 1, 2, eos])
    state, prefix = ctc_initial_state(logp, 0), []
    for step_token in (1, 2):
        psi, states = ctc_prefix_scores(logp, prefix, cands, state, blank=0, eos=eos)
        for n, c in enumerate(cands.tolist()):
            if c == 0:
                assert psi[n] < -1e9
            elif c == eos:
                expected = _brute_prefix_logprob(logp, prefix, complete=True) if prefix else logp[:, 0].sum().item()
                assert psi[n].item() == pytest.approx(expected, abs=1e-9)
            else:
                assert psi[n].item() == pytest.approx(_brute_prefix_logprob(logp, prefix + [c], False), abs=1e-9)
        state, prefix = states[step_token], prefix + [step_token]


@pytest.fixture(scope="module")
def tiny_lipreader():
    conf = [80, len(CHARS), {"adim": 32, "aheads": 4, "eunits": 64, "elayers": 2, "dunits": 64, "dlayers": 2,
                             "transformer_input_layer": "conv3d", "transformer_encoder_attn_layer_type": "rel_mha",
                             "rel_pos_type": "latest", "macaron_style": True, "use_cnn_module": True,
                             "cnn_module_kernel": 5, "relu_type": "swish", "char_list": CHARS}]
    torch.manual_seed(3)
    model = Lipreader(LipreaderConfig.from_json_obj(conf)).eval()
    with torch.no_grad():
        model.decoder.output_layer.bias[model.eos] += 1.5  # finish within a few tokens
        model.ctc.ctc_lo.bias[0] += 1.0
    return model


def _joint_score(model: Lipreader, enc: torch.Tensor, tokens: list[int], opts: DecodeOptions) -> float:
    """Score of a finished hypothesis from scratch: decoder teacher forcing + CTC of the whole
    sequence (torch's ctc_loss) + length bonus; what the incremental beam search must add up to."""
    dec = 0.0
    for i in range(1, len(tokens)):
        logp = model.decoder.next_token_logp(torch.tensor([tokens[:i]]), enc.unsqueeze(0))[0]
        dec += logp[tokens[i]].item()
    labels = tokens[1:-1]
    logp_ctc = model.ctc(enc.unsqueeze(0)).transpose(0, 1).double()
    ctc = -F.ctc_loss(logp_ctc, torch.tensor([labels]), torch.tensor([enc.size(0)]), torch.tensor([len(labels)]),
                      blank=0, reduction="none", zero_infinity=False).item() if labels else \
        logp_ctc[:, 0, 0].sum().item()
    w = opts.ctc_weight
    return (1 - w) * dec + w * ctc + opts.penalty * (len(tokens) - 1)


@pytest.mark.parametrize("beam", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_beam_search_scores_are_joint_ctc_attention(tiny_lipreader, beam):
    torch.manual_seed(1)
    with torch.no_grad():
        enc = tiny_lipreader.encode(torch.randn(1, 12, 88, 88))[0]
        opts = DecodeOptions(beam_size=beam)
        hyps = tiny_lipreader.beam_search(enc, opts)
        assert hyps and all(h.tokens[0] == tiny_lipreader.sos and h.tokens[-1] == tiny_lipreader.eos for h in hyps)
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        # finished by <eos> (not forced at max length) and CTC-feasible (ESPnet keeps -1e10-scored hyps too)
        natural = [h for h in hyps if len(h.tokens) - 2 < enc.size(0) and h.score > -1e8]
        assert natural
        for h in natural:
            assert h.score == pytest.approx(_joint_score(tiny_lipreader, enc, h.tokens, opts), abs=1e-3)


def test_attention_only_beam1_is_greedy(tiny_lipreader):
    torch.manual_seed(2)
    with torch.no_grad():
        enc = tiny_lipreader.encode(torch.randn(1, 10, 88, 88))[0]
        hyp = tiny_lipreader.beam_search(enc, DecodeOptions(beam_size=1, ctc_weight=0.0))[0]
        tokens = [tiny_lipreader.sos]
        while len(tokens) - 1 < enc.size(0):
            nxt = int(tiny_lipreader.decoder.next_token_logp(torch.tensor([tokens]), enc.unsqueeze(0))[0].argmax())
            tokens.append(nxt)
            if nxt == tiny_lipreader.eos:
                break
    assert hyp.tokens == tokens


def test_tokens_to_text(tiny_lipreader):
    assert tiny_lipreader.tokens_to_text([2, 3, 4, 0, 2, 5]) == "AB A"
    with pytest.raises(ValueError, match="one utterance"):
        tiny_lipreader.decode(torch.zeros(2, 4, 88, 88))
