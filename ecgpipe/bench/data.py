"""`ecgpipe bench data`: time the data stages (records -> chunks), their own code, in one process.

Each run is a fresh process, so its peak memory is its own; with ``--notebook`` the
notebook's own code (``benchmarks/notebook/notebook_data.py``) runs interleaved with ours on the
same extracted records, and the result holds both medians and their ratio.
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ecgpipe.bench import fresh_process_json, notebook_baseline
from ecgpipe.data.archive import extract_records, obtain_archive, verify_archive
from ecgpipe.params import Params, load_params
from ecgpipe.pipeline.balance import run_balance
from ecgpipe.pipeline.chunk import run_chunk
from ecgpipe.pipeline.spectrogram import run_spectrogram
from ecgpipe.pipeline.split import run_split

# the spectrogram stage reads the records itself: the notebook's separate step is added to its own
STEPS = ("spectrogram", "split", "balance", "chunk", "total")


def time_pipeline(records_dir: Path, params: Params) -> dict:
    """One pass of the data stages (their own functions, writing their outputs to a temporary
    folder, as `dvc repro` runs them); seconds per stage."""
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="ecgpipe-bench-data-") as tmp:
        out = Path(tmp)
        spectrogram, split, balance = out / "spectrogram", out / "split.json", out / "balance.json"
        stages = {
            "spectrogram": lambda: run_spectrogram(params.spectrogram, records_dir, spectrogram, out / "card.json"),
            "split": lambda: run_split(params.split, spectrogram, split),
            "balance": lambda: run_balance(params.balance, spectrogram, split, balance),
            "chunk": lambda: run_chunk(params.chunk, spectrogram, split, balance, out / "chunks", out / "chunk.json"),
        }
        t0 = time.perf_counter()
        for name, run in stages.items():
            t = time.perf_counter()
            card = run()
            seconds[name] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - t0
    counts = {split_name: {"chunks": c["chunks"]["total"], "balanced_chunks": c["balanced_chunks"]["total"]}
              for split_name, c in card.items()}
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "counts": counts}


def _medians(runs: list[dict]) -> dict:
    for run in runs:  # the notebook reads its records in a step of its own
        run["seconds"]["spectrogram"] += run["seconds"].pop("records", 0.0)
    return {
        "seconds": {k: statistics.median(r["seconds"][k] for r in runs) for k in STEPS},
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
    }


def bench_data(params_path: Path, repeats: int = 3, notebook: bool = False) -> dict:
    """Extract the archive once (untimed), then time ``repeats`` fresh-process runs; medians."""
    if repeats < 1:
        raise ValueError(f"repeats: expected at least 1 run to time, got {repeats}")
    if notebook:
        notebook_baseline("notebook_data")  # missing: one line here, before the archive is extracted
    params = load_params(params_path)
    with tempfile.TemporaryDirectory(prefix="ecgpipe-bench-") as tmp:
        archive, _ = obtain_archive(params.download.url, Path(tmp) / "download")  # a temporary folder: ours either way
        records_dir = Path(tmp) / "records"
        extract_records(verify_archive(archive), records_dir)
        ours, theirs = [], []
        for _ in range(repeats):
            ours.append(fresh_process_json(["-m", "ecgpipe.bench.data", str(records_dir), str(params_path)]))
            if notebook:
                theirs.append(fresh_process_json([str(notebook_baseline("notebook_data")), str(records_dir)]))
    result = {**_medians(ours), "repeats": repeats, "archive": str(archive), "counts": ours[0]["counts"]}
    if notebook:
        result["notebook"] = _medians(theirs)
        result["notebook"]["counts"] = theirs[0]["counts"]
        result["speedup_total"] = result["notebook"]["seconds"]["total"] / result["seconds"]["total"]
        result["memory_ratio"] = result["peak_rss_mb"] / result["notebook"]["peak_rss_mb"]
    return result


if __name__ == "__main__":  # one timed run in this fresh process: records_dir params_path
    print(json.dumps(time_pipeline(Path(sys.argv[1]), load_params(sys.argv[2]))))
