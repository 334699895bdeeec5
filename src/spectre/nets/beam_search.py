"""Joint CTC/attention beam search for the VSR lipreader, as ESPnet's BatchBeamSearch runs it for VSR.

Separate from the network (lipreader.py) so the network file holds the layers only; the search drives
any model with ``decoder.next_token_logp``, ``ctc``, ``cfg.odim``, ``sos``/``eos``/``blank``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOGZERO = -1e10


@dataclass(frozen=True)
class DecodeOptions:
    """Joint CTC/attention beam search; the defaults are SPECTRE's evaluation settings (SPEC §2.3)."""

    beam_size: int = 1
    ctc_weight: float = 0.1
    penalty: float = 0.5  # length bonus per emitted token
    maxlenratio: float = 0.0  # 0: max length = encoder length, with ESPnet's end detection
    pre_beam_ratio: float = 1.5


@dataclass
class Hypothesis:
    tokens: list[int]  # starts with <sos>; ends with <eos> once finished
    score: float
    ctc_state: torch.Tensor | None = None  # (T, 2) CTC forward variables (non-blank, blank end)
    ctc_score: float = 0.0  # CTC prefix log-probability of tokens[1:]


def ctc_prefix_scores(logp: torch.Tensor, prefix: list[int], candidates: torch.Tensor, state: torch.Tensor,
                      blank: int, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CTC prefix log-probabilities of ``prefix + [c]`` for each candidate c (Watanabe et al. 2017).

    ``logp`` (T,V) CTC log-posteriors, ``prefix`` without <sos>, ``state`` (T,2) the prefix's forward
    variables. Returns (K,) log psi and the candidates' new states (K,T,2). For <eos> the score is
    the probability of the whole prefix; <blank> gets LOGZERO.
    """
    t_len = logp.size(0)
    k = candidates.numel()
    xs = logp[:, candidates]  # (T,K)
    r = torch.full((t_len, 2, k), LOGZERO, dtype=logp.dtype, device=logp.device)
    n = len(prefix)
    if n == 0:
        r[0, 0] = xs[0]
    r_sum = torch.logaddexp(state[:, 0], state[:, 1])  # (T,)
    log_phi = r_sum.unsqueeze(1).repeat(1, k)
    if n > 0:
        same = candidates == prefix[-1]
        log_phi[:, same] = state[:, 1:2]
    start = max(n, 1)
    log_psi = r[start - 1, 0].clone()
    for t in range(start, t_len):
        r[t, 0] = torch.logaddexp(r[t - 1, 0], log_phi[t - 1]) + xs[t]
        r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + logp[t, blank]
        log_psi = torch.logaddexp(log_psi, log_phi[t - 1] + xs[t])
    log_psi[candidates == eos] = r_sum[-1]
    log_psi[candidates == blank] = LOGZERO
    return log_psi, r.permute(2, 0, 1)


def ctc_initial_state(logp: torch.Tensor, blank: int) -> torch.Tensor:
    state = torch.full((logp.size(0), 2), LOGZERO, dtype=logp.dtype, device=logp.device)
    state[:, 1] = torch.cumsum(logp[:, blank], 0)
    return state


def _end_detected(ended: list[Hypothesis], i: int, m_window: int = 3, d_end: float = math.log(math.exp(-10))) -> bool:
    """ESPnet's end_detect: stop when the best finished hypotheses of the last M lengths are far behind."""
    if not ended:
        return False
    best = max(h.score for h in ended)
    count = 0
    for m in range(m_window):
        same = [h.score for h in ended if len(h.tokens) == i - m]
        if same and max(same) - best < d_end:
            count += 1
    return count == m_window


@torch.no_grad()
def beam_search(model, enc: torch.Tensor, options: DecodeOptions = DecodeOptions()) -> list[Hypothesis]:
    """Joint CTC/attention beam search on one utterance's encoder output (T, adim).

    Mirrors ESPnet's BatchBeamSearch as VSR configures it: weights decoder 1-w, CTC w, length
    bonus ``penalty``; pre-beam of int(1.5*beam) tokens by decoder score (plus <eos>, which the
    batched CTC scorer always scores); <eos> appended at the last step; ESPnet end detection.
    Returns finished hypotheses, best first.
    """
    if options.beam_size < 1:
        raise ValueError("beam_size must be >= 1")
    w = float(options.ctc_weight)
    t_len, vocab = enc.size(0), model.cfg.odim
    if options.maxlenratio == 0:
        maxlen = t_len
    elif options.maxlenratio < 0:
        maxlen = int(-options.maxlenratio)
    else:
        maxlen = max(1, int(options.maxlenratio * t_len))
    use_dec, use_ctc = w < 1.0, w > 0.0
    logp_ctc = model.ctc(enc.unsqueeze(0))[0].float() if use_ctc else None
    pre_beam = int(options.pre_beam_ratio * options.beam_size)
    do_pre_beam = use_ctc and use_dec and pre_beam < vocab
    running = [Hypothesis([model.sos], 0.0, ctc_initial_state(logp_ctc, model.blank) if use_ctc else None)]
    ended: list[Hypothesis] = []
    memory = enc.unsqueeze(0)
    for i in range(maxlen):
        cands: list[tuple[float, Hypothesis, int, float, torch.Tensor | None]] = []
        prefixes = torch.tensor([h.tokens for h in running], device=enc.device)
        dec = model.decoder.next_token_logp(prefixes, memory.expand(len(running), -1, -1)).float() \
            if use_dec else None
        for j, hyp in enumerate(running):
            base = torch.full((vocab,), options.penalty, dtype=torch.float32, device=enc.device)
            if use_dec:
                base += (1.0 - w) * dec[j]
            if do_pre_beam:
                ids = torch.topk(dec[j], pre_beam).indices
                if not bool((ids == model.eos).any()):
                    ids = torch.cat([ids, ids.new_tensor([model.eos])])
            else:
                ids = torch.arange(vocab, device=enc.device)
            states = None
            scores = base[ids]
            if use_ctc:
                psi, states = ctc_prefix_scores(logp_ctc, hyp.tokens[1:], ids, hyp.ctc_state, model.blank, model.eos)
                scores = scores + w * (psi - hyp.ctc_score)
            for n, tok in enumerate(ids.tolist()):
                cands.append((hyp.score + float(scores[n]), hyp, tok,
                              float(psi[n]) if use_ctc else 0.0, states[n] if use_ctc else None))
        cands.sort(key=lambda c: c[0], reverse=True)
        running = [Hypothesis(h.tokens + [tok], s, st, cs) for s, h, tok, cs, st in cands[:options.beam_size]]
        if i == maxlen - 1:
            running = [Hypothesis(h.tokens + [model.eos], h.score, h.ctc_state, h.ctc_score)
                       if h.tokens[-1] != model.eos else h for h in running]
        ended += [h for h in running if h.tokens[-1] == model.eos]
        running = [h for h in running if h.tokens[-1] != model.eos]
        if options.maxlenratio == 0.0 and _end_detected(ended, i):
            break
        if not running:
            break
    return sorted(ended, key=lambda h: h.score, reverse=True)
