"""Precise BatchNorm: recompute running statistics with the current weights before they are used.

Training normalises each K-frame clip with its own batch statistics (official SPECTRE: batch one clip),
while inference uses the running averages. Those are an exponential average over statistics of
*earlier* weights, so on short runs or few clips they lag the network and the encoder predicts worse
in eval mode than in training (docs/train.md, "BatchNorm statistics"). Recomputing them as the plain
average over a number of training clips with the final weights (Wu & Johnson, "Rethinking 'Batch' in
BatchNorm", 2021, "PreciseBN") closes that gap; it changes no weight and no training loss, so a resumed
run stays bit-identical.
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
    average of the statistics of ``batches`` (``forward(batch)`` runs ``module`` on one batch).

    Returns the number of batches used (0: nothing changed). The module's mode, the layers' momentum
    and ``num_batches_tracked`` are restored afterwards; weights and gradients are untouched."""
    layers = batchnorm_layers(module)
    if not layers:
        return 0
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in layers]
    was_training = module.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: running = mean of the per-batch statistics
    module.train()
    n = 0
    try:
        for batch in batches:
            forward(batch)
            n += 1
    finally:
        module.train(was_training)
        for m, (momentum, mean, var, tracked) in zip(layers, saved):
            m.momentum = momentum
            if n == 0:  # nothing seen: keep the old statistics
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
            m.num_batches_tracked.copy_(tracked)
    return n
