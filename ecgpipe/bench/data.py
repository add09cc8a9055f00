"""`ecgpipe bench data`: time the data preparation (records -> chunks) in one process.

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

import numpy as np
import torch

from ecgpipe.bench import fresh_process_json, notebook_baseline
from ecgpipe.data.archive import extract_records, obtain_archive, verify_archive
from ecgpipe.data.balance import oversample
from ecgpipe.data.records import load_recordings
from ecgpipe.data.split import split_indices
from ecgpipe.params import Params, load_params
from ecgpipe.signal.spectrogram import compute_spectra, fit_normalise_, window_count
from ecgpipe.signal.windows import chunk_positions, gather_windows

STEPS = ("records", "spectrogram", "split", "balance", "chunk", "total")


def time_pipeline(records_dir: Path, params: Params) -> dict:
    """One pass of the data preparation as the stages do it, in memory; seconds per step."""
    sp, seconds = params.spectrogram, {}
    t0 = t = time.perf_counter()
    rec = load_recordings(records_dir, sp.classes, sp.min_length, sp.max_length, sp.flat_records)
    seconds["records"] = time.perf_counter() - t
    t = time.perf_counter()
    spectra = compute_spectra(rec.signals, sp.nperseg, sp.noverlap, sp.scaling, sp.batch_size)
    del rec.signals
    fit_normalise_(spectra, sp.stats_dtype)
    windows = torch.from_numpy(window_count(rec.lengths, sp.nperseg, sp.noverlap))
    spectra = torch.from_numpy(spectra)
    seconds["spectrogram"] = time.perf_counter() - t
    t = time.perf_counter()
    s = params.split
    parts = split_indices(rec.labels, s.train, s.val, s.test, s.seed, s.stratify)
    seconds["split"] = time.perf_counter() - t
    t = time.perf_counter()
    rng = np.random.default_rng(params.balance.seed)
    balanced = {k: parts[k][oversample(rec.labels[parts[k]], rng)] for k in ("train", "val")}
    seconds["balance"] = time.perf_counter() - t
    t = time.perf_counter()
    labels = torch.from_numpy(rec.labels)
    counts = {}
    for name, rows in parts.items():
        if len(rows):
            chunk_rows, starts = chunk_positions(torch.from_numpy(rows), windows, params.chunk.size)
            chunks = gather_windows(spectra, chunk_rows, starts, params.chunk.size)
            picked = oversample(labels[chunk_rows].numpy(), rng)
            counts[name] = {"chunks": len(chunks), "balanced_chunks": len(picked)}
    seconds["chunk"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    counts["balanced_records"] = {k: len(v) for k, v in balanced.items()}
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "counts": counts}


def _medians(runs: list[dict]) -> dict:
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
