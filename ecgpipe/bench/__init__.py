"""Benchmarks: ``ecgpipe bench data`` and ``ecgpipe bench train``, each beside the notebook's code."""
from __future__ import annotations

import json
import subprocess
import sys


def fresh_process_json(args: list[str]) -> dict:
    """Run ``python ARGS`` in a fresh process and parse the JSON it prints: each timed run gets its
    own memory, allocator and thread state, so one run's leftovers cannot slow the next."""
    out = subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)
