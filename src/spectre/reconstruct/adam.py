"""Adam for the fit's few parameter tensors, without ``torch.optim``.

The first ``torch.optim.Adam`` of a process imports ``torch._dynamo`` (about 1 s of CPU at start-up, 2 s
on a busy machine), which the fit never uses. This is the same update as torch's single-tensor Adam on
the CPU (no weight decay, no amsgrad), op for op, so the results are bit-identical
(tests/test_adam.py checks it against ``torch.optim.Adam``).
"""
from __future__ import annotations

import torch

__all__ = ["Adam"]


class Adam:
    """``Adam(params, lr).step()`` after ``backward()``; ``zero_grad()`` drops the gradients."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, (self.beta1, self.beta2), self.eps = float(lr), betas, float(eps)
        self.steps = 0.0
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: ARG002 - torch.optim's signature
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        # torch counts steps in a float32 tensor and reads them back as a Python number
        self.steps = float(torch.tensor(self.steps, dtype=torch.float32) + 1)
        bias1 = 1 - self.beta1 ** self.steps
        bias2_sqrt = (1 - self.beta2 ** self.steps) ** 0.5
        step_size = self.lr / bias1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if i not in self.state:
                self.state[i] = (torch.zeros_like(p, memory_format=torch.preserve_format),
                                 torch.zeros_like(p, memory_format=torch.preserve_format))
            exp_avg, exp_avg_sq = self.state[i]
            grad = p.grad
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)
