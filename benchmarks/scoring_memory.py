"""Peak memory of scoring one long recording through the predictor's path (`ecgpipe predict` and the
served model), with the robust raw ResNet's network and featurizer (random weights: memory does not
depend on them).

    python benchmarks/scoring_memory.py --hours 4.6 --fs 300
    python benchmarks/scoring_memory.py --hours 3.5 --fs 10000 --npy /tmp/long.npy   # ecgpipe predict's path

prints JSON: samples, peak RSS of the process before and after scoring (MB), and seconds. Each run
is a fresh process, so the peak is this recording's alone. With ``--npy``, the recording is written
to that float64 .npy file first (a block at a time, so that writing it takes no memory) and read
back as ``ecgpipe predict`` reads it."""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from ecgpipe.inference.featurizers import RawCrops
from ecgpipe.inference.predictor import Predictor, predict_files
from ecgpipe.inference.preprocessing import Preprocessing
from ecgpipe.inference.readers import Signal
from ecgpipe.models.registry import create_model
from ecgpipe.signal.conditioning import Conditioning


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def ecg_like(t: np.ndarray, fs: float) -> np.ndarray:
    return np.sin(t / fs * 2 * np.pi * 1.2) * 500  # 72 beats a minute, 0.5 mV


def write_npy(path: Path, n: int, fs: float, block: int = 1 << 22) -> None:
    with open(path, "wb") as out:
        np.lib.format.write_array_header_1_0(out, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
        for start in range(0, n, block):
            out.write(ecg_like(np.arange(start, min(n, start + block)), fs).astype("<f8").tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=4.6)
    parser.add_argument("--fs", type=float, default=300.0)
    parser.add_argument("--npy", type=Path, help="write the recording to this .npy and score it as ecgpipe predict")
    args = parser.parse_args()
    torch.set_num_threads(1)
    featurizer = RawCrops(300.0, 2700, Conditioning(highpass_hz=0.5, lowpass_hz=40, amplitude="mad"))
    predictor = Predictor(create_model("raw_resnet", 1, 1, n_steps=2700), Preprocessing(featurizer, ("N", "A")))
    n = int(args.hours * 3600 * args.fs)
    if args.npy:
        write_npy(args.npy, n, args.fs)
    else:
        samples = ecg_like(np.arange(n), args.fs)
    before = peak_rss_mb()
    start = time.perf_counter()
    if args.npy:
        [row] = predict_files(predictor, [str(args.npy)], fs=args.fs)
        assert not row["error"], row["error"]
    else:
        predictor.predict_proba(Signal(samples, args.fs))
    print(json.dumps({"hours": args.hours, "fs": args.fs, "samples": n, "peak_rss_before_mb": round(before),
                      "peak_rss_mb": round(peak_rss_mb()), "scoring_growth_mb": round(peak_rss_mb() - before),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
