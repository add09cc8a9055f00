"""Process-wide CPU settings for training, for speed.

- glibc maps each block larger than the largest one freed so far afresh, unmaps it on free, and
  returns free memory at the top of its heap beyond twice that size. PyTorch's CPU allocator
  does not cache, so blocks that come and go each step, such as the workspace of PyTorch's LSTM
  (oneDNN), cost fresh pages and their page faults every time. Fixed thresholds keep freed
  memory for reuse, as the jemalloc or tcmalloc of PyTorch's performance guide would: the
  `torch_lstm` model trains about 1.5x faster (`ecgpipe bench train`).
- Denormal floats (below 1.2e-38) are handled in microcode, up to 30x slower than normal ones,
  and vanishing gradients of a recurrent network produce them. Flushing them to zero changes
  only values below float32's normal range; PyTorch offers the switch for this reason.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

import torch

log = logging.getLogger(__name__)

# glibc <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit: larger blocks are still mapped
_TRIM_THRESHOLD = 1024 * 1024 * 1024  # keep up to 1 GiB of freed heap for reuse
_TOP_PAD = 256 * 1024 * 1024  # heap growth step; 256 MiB, not 64, made PyTorch's LSTM 1.5x faster


def _tune_glibc_malloc() -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD)))


def tune_for_training() -> dict[str, bool]:
    """Apply both settings to this process (PyTorch's worker threads included); returns which
    took effect. Called once by the entry points that train: the train stage and the benchmark."""
    applied = {"malloc_keeps_freed_memory": _tune_glibc_malloc(), "flush_denormal": torch.set_flush_denormal(True)}
    log.debug("CPU settings: %s", applied)
    return applied
