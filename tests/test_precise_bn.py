"""Precise BatchNorm: running statistics recomputed with the current weights (spectre.train.precise_bn)."""
from __future__ import annotations

import torch
from torch import nn

from spectre.train.precise_bn import batchnorm_layers, recalibrate_batchnorm


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(1), nn.Linear(8 * 6 * 6, 5),
                         nn.BatchNorm1d(5))


def _batches(n: int, seed: int = 1, size: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 3, 8, 8, generator=g) * (1 + i) + i for i in range(n)]


def test_statistics_are_the_plain_average_of_the_batches():
    net = _net()
    net.eval()
    batches = _batches(3)
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "tracked" not in k}
    used = recalibrate_batchnorm(net, batches, net)
    assert used == 3
    conv, bn = net[0], net[1]
    with torch.no_grad():
        feats = [conv(b) for b in batches]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-5)
    # only the statistics change: weights, mode, momentum and the batch counter are as before
    assert not net.training and all(m.momentum == 0.1 for m in batchnorm_layers(net))
    assert all(int(m.num_batches_tracked) == 0 for m in batchnorm_layers(net))
    for k, v in net.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_it_closes_the_train_eval_gap_of_a_stale_network():
    """Running statistics of other (earlier) inputs make eval outputs differ from the batch-statistics
    outputs; recalibrated on the clip itself, eval reproduces them (up to the unbiased-variance factor)."""
    net = _net()
    net.train()
    for b in _batches(20, seed=7):  # stale running averages of a different input distribution
        net(b * 0.2 - 3)
    clip = _batches(1, seed=3, size=48)[0]  # 48 samples: the unbiased-variance factor is small
    with torch.no_grad():
        target = net.train()(clip)
        before = (net.eval()(clip) - target).abs().mean().item()
        recalibrate_batchnorm(net, [clip], net)
        after = (net.eval()(clip) - target).abs().mean().item()
    assert after < 0.1 * before and after < 0.15, (before, after)


def test_no_batches_keeps_the_old_statistics():
    net = _net()
    net.train()
    net(_batches(1)[0])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate_batchnorm(net, [], net) == 0
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net.training
