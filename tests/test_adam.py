"""The fit's Adam (no torch.optim, so no torch._dynamo import at start-up) is torch's Adam, bit for bit."""
from __future__ import annotations

import torch

from spectre.reconstruct.adam import Adam


def _run(opt_cls, steps: int = 60):
    g = torch.Generator().manual_seed(0)
    target = torch.randn(7, 5, generator=g)
    a = torch.randn(7, 5, generator=g).requires_grad_(True)
    b = torch.randn(3, dtype=torch.float64, generator=g).requires_grad_(True)
    unused = torch.zeros(2, requires_grad=True)  # never gets a gradient: left alone
    opt = opt_cls([a, b, unused], lr=0.05)
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = ((a - target) ** 2).sum() * (1 + i % 3) + (b.sin() ** 2).sum().float()
        loss.backward()
        opt.step()
    return a.detach(), b.detach(), unused.detach()


def test_adam_equals_torch_optim_adam_exactly():
    ours, ref = _run(Adam), _run(torch.optim.Adam)
    for x, y in zip(ours, ref):
        assert torch.equal(x, y)
    assert not torch.equal(ours[0], _run(Adam, steps=59)[0]), "the steps change the result"
