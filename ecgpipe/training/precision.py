"""Training precision: float32, or bfloat16 autocast where the hardware runs bfloat16 natively.

Under ``torch.autocast`` the forward pass's matrix products and convolutions run in bfloat16, while
the weights, the optimiser's state, the loss and the gradients' accumulation stay float32. CPUs with
AVX512_BF16 or AMX (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later) run those
kernels natively; elsewhere bfloat16 is emulated and slower, so a CPU without it trains in float32
and says so in one log line. Validation and scoring always run in float32.
"""
from __future__ import annotations

import contextlib
import functools
import logging

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo's names


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 arithmetic natively (Linux's /proc/cpuinfo; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision training runs in: ``requested``, or float32 (with one log line) where the device
    has no native bfloat16."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {requested!r}")
    if requested == "float32":
        return requested
    if device.type == "cuda":
        native, what = torch.cuda.is_bf16_supported(), torch.cuda.get_device_name(device)
    else:
        native, what = device.type == "cpu" and cpu_has_native_bf16(), f"this {device.type}"
    if not native:
        log.warning("precision bfloat16: %s has no native bfloat16 (%s); training in float32", what,
                    " or ".join(NATIVE_BF16_FLAGS) if device.type == "cpu" else "compute capability 8.0+")
        return "float32"
    return requested


def autocast(precision: str, device: torch.device):
    """The context the forward pass runs in: nothing for float32, bfloat16 autocast otherwise."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
