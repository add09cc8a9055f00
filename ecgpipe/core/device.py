"""Devices: the names ``train.device`` and ``--device`` take, and the torch device they mean."""
from __future__ import annotations

import typing

from ecgpipe.core.errors import ParamsError

if typing.TYPE_CHECKING:  # torch is imported where a device is made: every stage reads this module's names
    import torch

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo, else what the platform module says): training
    results and speeds differ between CPU models, so runs and benchmarks record it."""
    import platform

    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine() or "unknown")


def is_device_name(name: str) -> bool:
    """``train.device`` and ``bench train --device``: auto (CUDA when available), cpu, cuda, cuda:N."""
    return name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())


def resolve_device(name: str) -> torch.device:
    """The device that ``train.device`` names; a ParamsError if this machine does not have it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ParamsError(f"params: train.device: expected a device this machine has (cpu, or auto), got {name!r}: "
                              f"it has {count} CUDA device(s)")
    return device
