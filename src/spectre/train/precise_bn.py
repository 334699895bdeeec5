"""Precise BatchNorm: recompute running statistics with the current weights before they are used.

Training normalises each K-frame clip with its own batch statistics (official SPECTRE: batch one clip),
while inference uses the running averages. Those are an exponential average over statistics of
*earlier* weights, so on short runs or few clips they lag the network and the encoder predicts worse
in eval mode than in training (docs/train.md, "BatchNorm statistics"). Recomputing them as the plain
average over a number of training clips with the final weights (Wu & Johnson, "Rethinking 'Batch' in
BatchNorm", 2021, "PreciseBN"; here with the biased variance that training normalises with) closes that
gap; it changes no weight and no training loss, so a resumed run stays bit-identical.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["batchnorm_layers", "recalibrate_batchnorm"]


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """BatchNorm layers that keep running statistics."""
    return [m for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any]) -> int:
    """Replace the running mean/variance of every BatchNorm in ``module`` by the equally weighted
    average over ``batches`` (``forward(batch)`` runs ``module`` on one batch, in train mode) of the
    statistics each layer normalises with in training: the batch mean and the *biased* batch variance.
    (PyTorch's running variance averages the unbiased one; with the few samples per channel of a K-frame
    clip — K values in a BatchNorm1d, K·h·w at the last 4x4 MobileNetV2 stages — that n/(n-1) factor alone
    kept a one-clip overfit 10x off in eval mode.) On the calibration batches eval mode then reproduces
    train mode.

    Returns the number of batches used (0: nothing changed). The module's mode and the layers'
    ``num_batches_tracked`` are restored; weights and gradients are untouched."""
    layers = batchnorm_layers(module)
    if not layers:
        return 0
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    sums: dict[nn.Module, list[torch.Tensor]] = {}

    def accumulate(m: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach().float()
        var, mean = torch.var_mean(x, dim=[0, *range(2, x.ndim)], unbiased=False)
        if m in sums:
            sums[m][0] += mean
            sums[m][1] += var
        else:
            sums[m] = [mean, var]

    hooks = [m.register_forward_pre_hook(accumulate) for m in layers]
    was_training = module.training
    module.train()
    n = 0
    try:
        for batch in batches:
            forward(batch)
            n += 1
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
        for m, (mean, var, tracked) in zip(layers, saved):
            if n and m in sums:
                m.running_mean.copy_(sums[m][0] / n)
                m.running_var.copy_(sums[m][1] / n)
            else:  # nothing seen: keep the old statistics
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
            m.num_batches_tracked.copy_(tracked)
    return n
