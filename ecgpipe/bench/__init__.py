"""Benchmarks: ``ecgpipe bench data`` and ``ecgpipe bench train``, each beside the notebook's code."""
from __future__ import annotations

import gc
import json
import subprocess
import sys
import time


def fresh_process_json(args: list[str]) -> dict:
    """Run ``python ARGS`` in a fresh process and parse the JSON it prints: each timed run gets its
    own memory, allocator and thread state, so one run's leftovers cannot slow the next."""
    out = subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def start_clock() -> float:
    """Collect garbage, then read the clock; both sides call it after their warm-up batches.

    PyTorch imports modules lazily in the first steps, and the cyclic garbage collector then runs
    a few full collections of 80-130 ms each over the next second or so. That is a one-time cost
    of a fresh process, not training throughput, and it landed in the notebook's timed window
    far more than in ours (timeit, likewise, keeps the collector out of its timings).
    """
    gc.collect()
    return time.perf_counter()
