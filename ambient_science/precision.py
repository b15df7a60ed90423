"""The network's arithmetic at inference: float32, bfloat16 autocast, or bfloat16 where the device computes it
natively (:func:`autocast_dtype`). Device capabilities are probed here, once, so that the sampling code names no
device."""

from __future__ import annotations

import functools

import torch

__all__ = ["PRECISIONS", "autocast_dtype", "check_precision"]

#: the network's arithmetic in a denoiser: float32, bfloat16 autocast, or bfloat16 where the device computes it
#: natively (a CUDA GPU that supports it; a CPU with AVX-512 BF16 or AMX, through oneDNN) and float32 elsewhere
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "auto")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ``ValueError`` naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (:data:`PRECISIONS`) on ``device``; ``None``: plain float32."""
    check_precision(precision)
    device = torch.device(device)
    if precision == "float32" or device.type not in ("cpu", "cuda"):
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if _native_bf16(device) else None


@functools.cache
def _native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    try:  # oneDNN's check for AVX-512 BF16 / AMX (emulated bfloat16 convolutions are several times slower)
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
