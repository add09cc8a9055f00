"""The training path's CPU settings, each checked in a fresh process (they are process-wide)."""
import sys
import textwrap

import pytest

from ecgpipe.bench import fresh_process_json

# Allocates, touches and frees blocks of 20 and 24 MiB in turn through the C library, as
# PyTorch's CPU allocator does for a training step's activations. Prints what tune_for_training
# applied, the minor page faults of the loop, and a denormal float times one.
_PROBE = textwrap.dedent("""
    import ctypes, json, resource, sys, torch
    applied = None
    if sys.argv[1] == "tuned":
        from ecgpipe.training.cpu import tune_for_training
        applied = tune_for_training()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for size in [20 * 1024 * 1024, 24 * 1024 * 1024] * 5:
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    denormal = float(torch.tensor([1e-39]) * 1.0)
    print(json.dumps({"applied": applied, "faults": faults, "denormal": denormal}))
""")


def _probe(mode: str) -> dict:
    return fresh_process_json(["-c", _PROBE, mode])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tuning_keeps_freed_memory_and_flushes_denormals():
    plain, tuned = _probe("plain"), _probe("tuned")
    assert tuned["applied"] == {"malloc_keeps_freed_memory": True, "flush_denormal": True}
    # untuned, glibc maps a block as large as the largest freed so far afresh and unmaps it on
    # free: new pages each time; tuned, blocks come from the heap and reuse the first ones' pages
    assert plain["faults"] > 2 * tuned["faults"]
    assert plain["denormal"] == pytest.approx(1e-39, rel=1e-3)
    assert tuned["denormal"] == 0.0
