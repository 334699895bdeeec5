"""The VSR visual lipreader (Ma et al., LRS3_V_WER32.3) with the ESPnet state-dict key names.

Conv3d + ResNet-18 front-end (the 512-d per-frame feature SPECTRE's lipread loss compares), a
conformer encoder (relative-position attention, macaron feed-forwards, convolution module), a
transformer decoder and a CTC head, built from the checkpoint's ``model.json`` ([idim, odim, args]).
``decode`` runs the joint CTC/attention beam search used for evaluation (SPEC §2.3/§7).

Numerics follow the pinned VSR code (mpc001/VSR@53e940e): ESPnet LayerNorm eps 1e-12, ReLU
feed-forwards, Swish in the convolution module, and both relative positional encodings
("latest" and the legacy one selected when ``rel_pos_type`` is absent from model.json).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import ResNet18Trunk, make_activation
from .beam_search import DecodeOptions, Hypothesis, beam_search

_PE_MAX_LEN = 5000  # ESPnet builds positional tables for 5000 steps up front (matters for the legacy variant)


# ---------------------------------------------------------------------------------------------
# configuration (model.json)


@dataclass(frozen=True)
class LipreaderConfig:
    """The architecture arguments of a VSR ``model.json`` that change the network."""

    odim: int
    adim: int = 256
    aheads: int = 4
    eunits: int = 2048
    elayers: int = 12
    dunits: int = 2048
    dlayers: int = 6
    input_layer: str = "conv3d"
    attn_type: str = "rel_mha"  # rel_mha (latest), legacy_rel_mha or mha
    macaron_style: bool = True
    use_cnn_module: bool = True
    cnn_module_kernel: int = 31
    zero_triu: bool = False
    relu_type: str = "swish"
    char_list: tuple[str, ...] = field(default_factory=tuple)
    sym_space: str = "<space>"
    sym_blank: str = "<blank>"

    @classmethod
    def from_json_obj(cls, conf: Any, source: str = "model.json") -> LipreaderConfig:
        if isinstance(conf, dict):
            idim, odim, args = None, None, conf
        elif isinstance(conf, list) and len(conf) == 3 and isinstance(conf[2], dict):
            idim, odim, args = conf
        else:
            raise ValueError(f"{source}: expected [idim, odim, {{args}}] or {{args}}")
        char_list = tuple(args.get("char_list") or ())
        odim = int(odim if odim is not None else len(char_list))
        if char_list and len(char_list) != odim:
            raise ValueError(f"{source}: char_list has {len(char_list)} symbols but odim is {odim}")
        attn = args.get("transformer_encoder_attn_layer_type", "mha")
        if attn == "rel_mha" and args.get("rel_pos_type") is None:
            attn = "legacy_rel_mha"  # what VSR's E2E does when model.json predates rel_pos_type
        input_layer = args.get("transformer_input_layer", "conv3d")
        if input_layer != "conv3d":
            raise ValueError(f"{source}: transformer_input_layer {input_layer!r} is not a visual (conv3d) model")
        if attn not in ("rel_mha", "legacy_rel_mha", "mha"):
            raise ValueError(f"{source}: unsupported encoder attention {attn!r}")
        return cls(odim=odim, adim=int(args.get("adim", 256)), aheads=int(args.get("aheads", 4)),
                   eunits=int(args.get("eunits", 2048)), elayers=int(args.get("elayers", 12)),
                   dunits=int(args.get("dunits", 2048)), dlayers=int(args.get("dlayers", 6)),
                   input_layer=input_layer, attn_type=attn, macaron_style=bool(args.get("macaron_style", False)),
                   use_cnn_module=bool(args.get("use_cnn_module", False)),
                   cnn_module_kernel=int(args.get("cnn_module_kernel", 31)),
                   zero_triu=bool(args.get("zero_triu", False)), relu_type=str(args.get("relu_type", "swish")),
                   char_list=char_list, sym_space=args.get("sym_space", "<space>"),
                   sym_blank=args.get("sym_blank", "<blank>"))

    @classmethod
    def from_file(cls, path: str | Path) -> LipreaderConfig:
        path = Path(path)
        return cls.from_json_obj(json.loads(path.read_text(encoding="utf-8")), str(path))


# ---------------------------------------------------------------------------------------------
# building blocks


class LayerNorm(nn.LayerNorm):
    """ESPnet's LayerNorm: eps 1e-12."""

    def __init__(self, size: int):
        super().__init__(size, eps=1e-12)


def _div_term(d_model: int) -> torch.Tensor:
    return torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))


def _sinusoids(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """(P,) float32 positions -> (P, d_model) interleaved sin/cos table."""
    angles = positions.unsqueeze(1) * _div_term(d_model)
    pe = torch.zeros(positions.numel(), d_model)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe


class PositionalEncoding(nn.Module):
    """Absolute sinusoidal encoding: x * sqrt(d) + pe[:T] (decoder, and 'mha' encoders)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model, self.xscale = d_model, math.sqrt(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pe = _sinusoids(torch.arange(0, x.size(1), dtype=torch.float32), self.d_model)
        return x * self.xscale + pe.to(x.device, x.dtype)


class RelPositionalEncoding(nn.Module):
    """Returns (x * sqrt(d), positional table) for relative attention.

    latest: 2T-1 relative positions T-1 ... -(T-1). legacy: T positions counting down from
    max(5000, T) - 1 (ESPnet's reversed table built for 5000 steps, sliced from the start).
    """

    def __init__(self, d_model: int, legacy: bool):
        super().__init__()
        self.d_model, self.xscale, self.legacy = d_model, math.sqrt(d_model), legacy

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = x.size(1)
        if self.legacy:
            top = max(_PE_MAX_LEN, t) - 1
            positions = torch.arange(top, top - t, -1, dtype=torch.float32)
        else:
            positions = torch.arange(t - 1, -t, -1, dtype=torch.float32)
        pe = _sinusoids(positions, self.d_model).unsqueeze(0)
        return x * self.xscale, pe.to(x.device, x.dtype)


class MultiHeadedAttention(nn.Module):
    def __init__(self, heads: int, size: int):
        super().__init__()
        self.h, self.d_k = heads, size // heads
        self.linear_q = nn.Linear(size, size)
        self.linear_k = nn.Linear(size, size)
        self.linear_v = nn.Linear(size, size)
        self.linear_out = nn.Linear(size, size)

    def _heads(self, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return linear(x).view(x.size(0), -1, self.h, self.d_k).transpose(1, 2)  # (B,H,T,d_k)

    def _attend(self, v: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is not None:  # mask (B, T1|1, T2), True = keep
            drop = ~mask.unsqueeze(1)
            attn = torch.softmax(scores.masked_fill(drop, torch.finfo(scores.dtype).min), -1).masked_fill(drop, 0.0)
        else:
            attn = torch.softmax(scores, -1)
        x = torch.matmul(attn, v).transpose(1, 2).reshape(v.size(0), -1, self.h * self.d_k)
        return self.linear_out(x)

    def forward(self, query, key, value, mask=None):
        q, k, v = self._heads(self.linear_q, query), self._heads(self.linear_k, key), self._heads(self.linear_v, value)
        return self._attend(v, torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k), mask)


def _rel_shift(x: torch.Tensor) -> torch.Tensor:
    """Transformer-XL shift: row i of (B,H,T1,P) moves left by (T1-1-i) (pad + reshape trick)."""
    b, h, t1, p = x.shape
    padded = torch.cat([x.new_zeros(b, h, t1, 1), x], dim=-1).view(b, h, p + 1, t1)
    return padded[:, :, 1:].reshape(b, h, t1, p)


class RelPositionMultiHeadedAttention(MultiHeadedAttention):
    """Self-attention with relative positions and the learned biases u, v (Transformer-XL)."""

    def __init__(self, heads: int, size: int, legacy: bool, zero_triu: bool = False):
        super().__init__(heads, size)
        self.legacy, self.zero_triu = legacy, zero_triu
        self.linear_pos = nn.Linear(size, size, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(self.h, self.d_k))

    def forward(self, query, key, value, pos_emb, mask=None):
        q, k, v = self._heads(self.linear_q, query), self._heads(self.linear_k, key), self._heads(self.linear_v, value)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)
        ac = torch.matmul(q + self.pos_bias_u.unsqueeze(1), k.transpose(-2, -1))
        bd = _rel_shift(torch.matmul(q + self.pos_bias_v.unsqueeze(1), p.transpose(-2, -1)))
        if not self.legacy:
            bd = bd[..., : bd.size(-1) // 2 + 1]
        if self.zero_triu:
            t1, t2 = bd.shape[-2:]
            bd = bd * torch.tril(torch.ones(t1, t2, device=bd.device, dtype=bd.dtype), t2 - t1)
        return self._attend(v, (ac + bd) / math.sqrt(self.d_k), mask)


class FeedForward(nn.Module):
    """Position-wise feed-forward w_2(relu(w_1 x))."""

    def __init__(self, size: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(torch.relu(self.w_1(x)))


class ConvolutionModule(nn.Module):
    """Conformer convolution: pointwise -> GLU -> depthwise (k) -> BN -> Swish -> pointwise."""

    conv_bn_pairs = (("depthwise_conv", "norm"),)

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.pointwise_cov1 = nn.Conv1d(channels, 2 * channels, 1)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2, groups=channels)
        self.norm = nn.BatchNorm1d(channels)
        self.pointwise_cov2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.glu(self.pointwise_cov1(x.transpose(1, 2)), dim=1)
        x = self.norm(self.depthwise_conv(x))
        return self.pointwise_cov2(x * torch.sigmoid(x)).transpose(1, 2)


class ConformerLayer(nn.Module):
    """Pre-norm conformer block: (½ FF) -> MHSA -> conv -> ½ FF -> LayerNorm."""

    def __init__(self, cfg: LipreaderConfig):
        super().__init__()
        d = cfg.adim
        if cfg.attn_type == "mha":
            self.self_attn: nn.Module = MultiHeadedAttention(cfg.aheads, d)
        else:
            self.self_attn = RelPositionMultiHeadedAttention(cfg.aheads, d, cfg.attn_type == "legacy_rel_mha",
                                                             cfg.zero_triu)
        self.feed_forward = FeedForward(d, cfg.eunits)
        self.norm_ff, self.norm_mha = LayerNorm(d), LayerNorm(d)
        self.macaron = cfg.macaron_style
        if self.macaron:
            self.feed_forward_macaron = FeedForward(d, cfg.eunits)
            self.norm_ff_macaron = LayerNorm(d)
        self.conv_module = ConvolutionModule(d, cfg.cnn_module_kernel) if cfg.use_cnn_module else None
        if self.conv_module is not None:
            self.norm_conv, self.norm_final = LayerNorm(d), LayerNorm(d)
        self.ff_scale = 0.5 if self.macaron else 1.0

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        if self.macaron:
            x = x + self.ff_scale * self.feed_forward_macaron(self.norm_ff_macaron(x))
        h = self.norm_mha(x)
        x = x + (self.self_attn(h, h, h, pos_emb, mask) if pos_emb is not None else self.self_attn(h, h, h, mask))
        if self.conv_module is not None:
            x = x + self.conv_module(self.norm_conv(x))
        x = x + self.ff_scale * self.feed_forward(self.norm_ff(x))
        return self.norm_final(x) if self.conv_module is not None else x


class VisualFrontend(nn.Module):
    """Conv3d(1->64, k(5,7,7), s(1,2,2)) + BN3d + act + MaxPool3d(1,3,3) + per-frame ResNet-18."""

    conv_bn_pairs: tuple = ()

    def __init__(self, activation: str = "swish"):
        super().__init__()
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, 64, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False), nn.BatchNorm3d(64),
            make_activation(activation, 64), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        self.trunk = ResNet18Trunk(activation)

    def forward(self, mouths: torch.Tensor) -> torch.Tensor:
        """(B,T,H,W) normalised grey mouths -> (B,T,512)."""
        x = self.frontend3D(mouths.unsqueeze(1))  # (B,64,T,h,w)
        b, c, t, h, w = x.shape
        x = self.trunk(x.transpose(1, 2).reshape(b * t, c, h, w))
        return x.view(b, t, -1)


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: LipreaderConfig):
        super().__init__()
        self.frontend = VisualFrontend(cfg.relu_type)
        pos = PositionalEncoding(cfg.adim) if cfg.attn_type == "mha" else \
            RelPositionalEncoding(cfg.adim, legacy=cfg.attn_type == "legacy_rel_mha")
        self.embed = nn.Sequential(nn.Linear(512, cfg.adim), pos)
        self.encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.elayers))
        self.after_norm = LayerNorm(cfg.adim)

    def forward(self, mouths: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode_features(self.frontend(mouths), mask)

    def encode_features(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,T,512) front-end features -> (B,T,adim)."""
        x = self.embed(feats)
        x, pos_emb = x if isinstance(x, tuple) else (x, None)
        for layer in self.encoders:
            x = layer(x, pos_emb, mask)
        return self.after_norm(x)


class DecoderLayer(nn.Module):
    def __init__(self, size: int, heads: int, hidden: int):
        super().__init__()
        self.self_attn = MultiHeadedAttention(heads, size)
        self.src_attn = MultiHeadedAttention(heads, size)
        self.feed_forward = FeedForward(size, hidden)
        self.norm1, self.norm2, self.norm3 = LayerNorm(size), LayerNorm(size), LayerNorm(size)

    def forward(self, x, causal_mask, memory):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, causal_mask)
        h = self.norm2(x)
        x = x + self.src_attn(h, memory, memory, None)
        return x + self.feed_forward(self.norm3(x))


class TransformerDecoder(nn.Module):
    def __init__(self, cfg: LipreaderConfig):
        super().__init__()
        self.embed = nn.Sequential(nn.Embedding(cfg.odim, cfg.adim), PositionalEncoding(cfg.adim))
        self.decoders = nn.ModuleList(DecoderLayer(cfg.adim, cfg.aheads, cfg.dunits) for _ in range(cfg.dlayers))
        self.after_norm = LayerNorm(cfg.adim)
        self.output_layer = nn.Linear(cfg.adim, cfg.odim)

    def next_token_logp(self, prefixes: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """prefixes (N,L) token ids (starting with <sos>), memory (N,T,adim) -> (N,odim) log-probs."""
        length = prefixes.size(1)
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=prefixes.device)).unsqueeze(0)
        x = self.embed(prefixes)
        for layer in self.decoders:
            x = layer(x, causal, memory)
        return torch.log_softmax(self.output_layer(self.after_norm(x[:, -1])), dim=-1)


class CTC(nn.Module):
    def __init__(self, cfg: LipreaderConfig):
        super().__init__()
        self.ctc_lo = nn.Linear(cfg.adim, cfg.odim)

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.ctc_lo(enc), dim=-1)


# ---------------------------------------------------------------------------------------------
# the model


class Lipreader(nn.Module):
    """ESPnet ``E2E`` (encoder, decoder, ctc) for the VSR visual model; state-dict keys of ``model.pth``."""

    def __init__(self, cfg: LipreaderConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ConformerEncoder(cfg)
        self.decoder = TransformerDecoder(cfg)
        self.ctc = CTC(cfg)
        self.sos = self.eos = cfg.odim - 1
        self.blank = 0

    # -- features -------------------------------------------------------------------------------
    def resnet_features(self, mouths: torch.Tensor) -> torch.Tensor:
        """(B,T,88,88) normalised mouths -> (B,T,512): the feature of SPECTRE's lipread loss."""
        return self.encoder.frontend(mouths)

    def encode(self, mouths: torch.Tensor) -> torch.Tensor:
        """(B,T,88,88) -> (B,T,adim) conformer output (ESPnet ``E2E.encode``)."""
        return self.encoder(mouths)

    # -- decoding -------------------------------------------------------------------------------
    def tokens_to_text(self, tokens: list[int]) -> str:
        chars = self.cfg.char_list
        if not chars:
            raise ValueError("model.json has no char_list; cannot turn tokens into text")
        out = []
        for t in tokens:
            sym = chars[t]
            if sym in (self.cfg.sym_blank, "<eos>", "<sos>", "<sos/eos>"):
                continue
            out.append(" " if sym == self.cfg.sym_space else sym)
        return "".join(out).strip()

    def beam_search(self, enc: torch.Tensor, options: DecodeOptions = DecodeOptions()) -> list[Hypothesis]:
        """Joint CTC/attention beam search on one utterance's encoder output (T, adim), best first
        (see ``spectre.nets.beam_search``)."""
        return beam_search(self, enc, options)

    @torch.no_grad()
    def decode(self, mouths: torch.Tensor, options: DecodeOptions = DecodeOptions()) -> str:
        """(T,88,88) or (1,T,88,88) normalised mouths -> transcript (upper case, no <eos>)."""
        if mouths.ndim == 3:
            mouths = mouths.unsqueeze(0)
        if mouths.ndim != 4 or mouths.size(0) != 1:
            raise ValueError(f"decode takes one utterance (T,88,88), got shape {tuple(mouths.shape)}")
        hyps = self.beam_search(self.encode(mouths)[0], options)
        return self.tokens_to_text(hyps[0].tokens[1:]) if hyps else ""
