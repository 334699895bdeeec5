"""The one place that decides device, dtype and thread settings; every module asks here."""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available")
    return dev


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 / AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map 'auto' to the fastest precision that is accurate enough on this device."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "fp32"


@dataclass(frozen=True)
class Runtime:
    """Device + precision chosen once and passed down to every stage."""

    device: torch.device
    precision: str  # resolved: fp32, bf16 or fp16

    @classmethod
    def create(cls, device: str | torch.device | None = "auto", precision: str = "fp32") -> Runtime:
        dev = resolve_device(device)
        return cls(dev, resolve_precision(precision, dev))

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]

    @property
    def channels_last(self) -> bool:
        """channels_last pays off for reduced-precision convolutions (oneDNN / cuDNN)."""
        return self.precision != "fp32" or self.device.type == "cuda"

    def autocast(self):
        """Autocast context for network inference; a no-op for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def configure_threads(num_threads: int | None = None) -> int:
    """Use all physical cores for intra-op work unless told otherwise (SPECTRE_THREADS or argument).

    On small machines (2 cores) inter-op parallelism only adds contention, so it is pinned to 1.
    """
    n = num_threads or int(os.environ.get("SPECTRE_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # may only be set once per process
        torch.set_num_interop_threads(1)
    return n
