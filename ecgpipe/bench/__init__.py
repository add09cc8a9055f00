"""Benchmarks: ``ecgpipe bench data`` and ``ecgpipe bench train``, each beside the notebook's code."""
from __future__ import annotations

import gc
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

# The notebook's own code, the baselines: in the project's checkout, not in the installed package
# (neither the wheel nor a served model carries it). The benchmarks run from the project's root.
NOTEBOOK_BASELINES = Path("benchmarks") / "notebook"


def notebook_baseline(name: str) -> Path:
    """The file of the notebook's baseline ``name`` (notebook_data, notebook_train), or an OSError
    saying where it is expected."""
    path = NOTEBOOK_BASELINES / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(2, "no such file (the notebook's baselines are in the project's checkout; run the "
                                "benchmark from the project's root folder)", str(path))
    return path


def load_notebook_baseline(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"notebook_baseline_{name}", notebook_baseline(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
