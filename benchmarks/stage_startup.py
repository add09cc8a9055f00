"""Start-up of each stage process (Python, imports, argument parsing: `python stages/NAME.py --help`),
for one or more checkouts, interleaved so that machine drift hits them alike; medians in seconds.

    python benchmarks/stage_startup.py --repeats 5 /tmp/old .      # the code before a change, and now

Every stage of `dvc repro` pays this once per run, before its first line of work; on the synthetic
data of the DVC tests it is most of a stage's time.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ecgpipe.core.device import cpu_name

STAGES = ("check", "download", "spectrogram", "signals", "split", "balance", "chunk", "train", "evaluate", "report")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkouts", nargs="+", type=Path, help="folders holding stages/ and ecgpipe/")
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()
seconds = {str(c): {s: [] for s in STAGES} for c in args.checkouts}
for _ in range(args.repeats):
    for stage in STAGES:
        for checkout in args.checkouts:  # the checkouts alternate stage by stage
            start = time.perf_counter()
            subprocess.run([sys.executable, f"stages/{stage}.py", "--help"], cwd=checkout, check=True,
                           capture_output=True, env={"PYTHONPATH": str(checkout.resolve()), "PATH": "/usr/bin:/bin"})
            seconds[str(checkout)][stage].append(time.perf_counter() - start)
medians = {c: {s: round(statistics.median(v), 2) for s, v in per.items()} for c, per in seconds.items()}
commits = {str(c): subprocess.run(["git", "-C", str(c), "describe", "--always", "--dirty"], capture_output=True,
                                  text=True).stdout.strip() for c in args.checkouts}
print(json.dumps({"cpu": cpu_name(), "cpus": os.cpu_count(), "commits": commits, "repeats": args.repeats, "median_s": medians,
                  "total_median_s": {c: round(sum(m.values()), 2) for c, m in medians.items()}}, indent=1))
