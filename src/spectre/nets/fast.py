"""Inference fast path: BatchNorm folded into the convolutions, channels_last, reduced-precision
autocast where the hardware has it, optional ``torch.compile``.

The precision comes from ``spectre.device.Runtime`` ("auto": bf16 on CPUs with native bf16 and on
CUDA (fp16 where bf16 is missing), fp32 elsewhere). Folding BatchNorm is exact up to float rounding
and always pays off for inference (one op fewer per conv); channels_last pays off with oneDNN/cuDNN.
``bench/bench_nets.py`` measures each choice; ``docs/nets.md`` lists the drift against fp32.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..device import Runtime


def _fold_pair(owner: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = getattr(owner, conv_name, None), getattr(owner, bn_name, None)
    if not (isinstance(conv, _ConvNd) and isinstance(bn, _BatchNorm)) or bn.training or conv.training:
        return False
    if not bn.track_running_stats or bn.running_mean is None:
        return False
    setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
    setattr(owner, bn_name, nn.Identity())
    return True


def fold_batchnorms(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a convolution into it (in place).

    Finds the pairs as consecutive children of ``nn.Sequential`` containers and through the
    ``conv_bn_pairs`` attribute of blocks whose forward calls them by name. Returns the number folded.
    Only for inference: the folded module has different state-dict keys and no BatchNorm to train.
    """
    folded = 0
    for owner in list(module.modules()):
        if isinstance(owner, nn.Sequential):
            names = list(owner._modules)
            for first, second in zip(names, names[1:]):
                folded += _fold_pair(owner, first, second)
        for conv_name, bn_name in getattr(owner, "conv_bn_pairs", ()):
            folded += _fold_pair(owner, conv_name, bn_name)
    return folded


def _to_channels_last(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
        elif isinstance(m, nn.Conv3d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)


def _as_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_as_float32(o) for o in out)
    if isinstance(out, dict):
        return {k: _as_float32(v) for k, v in out.items()}
    return out


class FastPath:
    """A prepared inference copy of a network: call it like the network (or ``.call('method', ...)``);
    inputs move to the runtime's device, run under its autocast, and outputs come back as float32."""

    def __init__(self, module: nn.Module, runtime: Runtime, channels_last: bool,
                 compiled: Callable | None = None):
        self.module, self.runtime, self.channels_last, self._compiled = module, runtime, channels_last, compiled

    def _prepare_input(self, x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        x = x.to(self.runtime.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def call(self, method: str, *inputs: Any, **kwargs: Any) -> Any:
        fn = self._compiled if (method == "forward" and self._compiled is not None) else getattr(self.module, method)
        inputs = tuple(self._prepare_input(x) for x in inputs)
        with torch.inference_mode(), self.runtime.autocast():
            return _as_float32(fn(*inputs, **kwargs))

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        return self.call("forward", *inputs, **kwargs)


def prepare_for_inference(model: nn.Module, runtime: Runtime | None = None, *, fold_bn: bool = True,
                          channels_last: bool | None = None, compile: bool = False,
                          copy_model: bool = True) -> FastPath:
    """Inference copy of ``model`` for ``runtime``.

    Default runtime: the 'auto' device; reduced precision on CUDA, float32 on CPU, where folded BN +
    channels_last gave a steady ~2x with no drift while bf16 autocast was not reliably faster on the
    2-core EPYC we measured (see docs/nets.md); pass ``Runtime.create('cpu', 'bf16')`` to opt in.

    ``channels_last`` defaults to True for convolutional work on CPU and CUDA (it helps oneDNN in
    both fp32 and bf16 on x86, see ``bench/bench_nets.py``) and False on MPS. ``compile`` wraps the
    forward in ``torch.compile`` and falls back to eager (with a warning) when compilation fails.
    """
    if runtime is None:
        runtime = Runtime.create("auto", "fp32")
        if runtime.device.type == "cuda":
            runtime = Runtime.create(runtime.device, "auto")
    module = copy.deepcopy(model) if copy_model else model
    module.eval().requires_grad_(False)
    if fold_bn:
        fold_batchnorms(module)
    module.to(runtime.device)
    if channels_last is None:
        channels_last = runtime.device.type in ("cpu", "cuda")
    if channels_last:
        _to_channels_last(module)
    compiled = None
    if compile:
        try:
            compiled = torch.compile(module)
        except Exception as exc:  # backend missing (no compiler toolchain): stay eager
            warnings.warn(f"torch.compile unavailable ({type(exc).__name__}: {exc}); using eager mode", stacklevel=2)
    return FastPath(module, runtime, channels_last, compiled)
