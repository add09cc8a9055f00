"""`ecgpipe bench train`: training throughput of every registered model, through the project's
own training path (`chunked_batches` + `train_step`, with the train stage's CPU settings from
`ecgpipe.training.cpu`), batch 192, inputs of the real shape 40x17, drawn from a set of as many random
chunks as the real training split. The values matter for one baseline: the notebook's RNN runs
into denormal floats on the real chunks and mostly not on these (benchmarks/README.md).

With ``--notebook`` the notebook's code is timed beside it: its loop (a DataLoader over the
chunk tensors) training its own network for each model, as the notebook writes them
(`benchmarks/notebook/notebook_train.py`): MeanSpectrumNet, FullyConnectedNet, its ConvNet built from
nn.Conv1d/AvgPool1d, its RNNNet, and TorchLSTMNet for both torch_lstm and the from-scratch lstm
(the target there: at least as fast as PyTorch's LSTM in the notebook's loop).

Raw-signal models (``raw_resnet``) are timed through ``random_crop_batches``: crops of 2,700
samples from as many int16 recordings of 9,000 samples as one epoch of the two-class training set
has; the notebook has no such network, so they have no baseline.

Each model runs in a fresh process per side and repeat, the two sides alternating model by
model, so that machine noise hits both alike (a ratio's two timings are seconds apart) and
neither inherits the other's allocator or thread state. The notebook's
process runs as the notebook does, without our CPU settings; ``--tuned-notebook`` gives it them
too, to see how much of a ratio is the settings and how much the code.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ecgpipe.bench import fresh_process_json, load_notebook_baseline, notebook_baseline, start_clock
from ecgpipe.core.device import resolve_device
from ecgpipe.data.signals import SignalSet
from ecgpipe.data.store import Chunks
from ecgpipe.inference.featurizers import RawCrops
from ecgpipe.models import create_model, input_kind, list_models, trains_in_bfloat16
from ecgpipe.training.cpu import tune_for_training
from ecgpipe.training.fit import make_optimizer, train_step
from ecgpipe.training.loaders import chunked_batches, random_crop_batches
from ecgpipe.training.precision import resolve_precision

BATCH_SIZE, STEPS, BINS = 192, 40, 17
# untimed first minibatches: allocations, thread pool and kernel selection. In a fresh process
# our step takes about ten batches to settle (batches 3-10 ran 10-30% slower than later ones);
# `--warmup` takes fewer where the figure does not matter (the tests)
WARMUP = 10
# as many chunks as the real training split has (metrics/chunk.json), whatever the number of
# batches timed: batches are gathered from a set of the real size, as in training
TRAIN_CHUNKS = 38_805
# raw-signal models: as many recordings as one epoch of the real two-class training set has
# (balanced), each of the median CinC length, cut into random crops of the experiment's length
TRAIN_RECORDINGS, RECORDING_SAMPLES, CROP_SAMPLES = 7_890, 9_000, 2_700


def _raw_epoch(device: torch.device, generator: torch.Generator, data_scale: float = 1.0):
    """The random-crop loader over int16 signals of the real set's size (values do not matter here)."""
    n = _scaled(TRAIN_RECORDINGS, data_scale)
    samples = torch.randint(-500, 500, (n * RECORDING_SAMPLES,), dtype=torch.int16, generator=generator)
    offsets = torch.arange(n + 1) * RECORDING_SAMPLES
    signals = SignalSet(samples, offsets, (torch.rand(n, generator=generator) < 0.5).long()).to(device)
    rows = torch.arange(n, device=device)
    return random_crop_batches(signals, rows, RawCrops(300.0, CROP_SAMPLES), BATCH_SIZE)


def _scaled(n: int, data_scale: float) -> int:
    """``n`` examples times ``data_scale``, at least one batch (tests time a few batches on a small set)."""
    return max(BATCH_SIZE, round(n * data_scale))


def _ours(name: str, data: Chunks | None, batches: int, device: torch.device, data_scale: float = 1.0,
          precision: str = "float32", warmup: int = WARMUP, compiled: bool = False) -> float:
    torch.manual_seed(0)
    if data is None:  # a raw-signal model
        model = create_model(name, 1, 1, n_steps=CROP_SAMPLES).to(device)
        epoch = _raw_epoch(device, torch.Generator().manual_seed(0), data_scale)
    else:
        model = create_model(name, BINS, 1, n_steps=STEPS).to(device)
        epoch = chunked_batches(data, BATCH_SIZE)
    optimizer = make_optimizer(model, 0.01)
    if compiled:  # inductor, one graph per batch shape (the full one and the epoch's last)
        model = torch.compile(model, dynamic=False)
    generator = torch.Generator().manual_seed(0)
    if compiled:  # the first epoch is untimed: its last, shorter batch compiles a second graph
        for x, y in epoch(generator):
            train_step(model, optimizer, x, y, precision)
    done, seen, start = 0, 0, None
    while done < batches + warmup:
        for x, y in epoch(generator):
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start, seen = start_clock(), 0
            train_step(model, optimizer, x, y, precision)
            done += 1
            seen += len(y)
            if done >= batches + warmup:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def _baseline_network(name: str) -> tuple[str, torch.nn.Module]:
    """The notebook's own network for a registered model, as the notebook writes it."""
    notebook_train = load_notebook_baseline("notebook_train")
    baselines = {
        "mean_spectrum": ("notebook MeanSpectrumNet", notebook_train.NotebookMeanSpectrumNet),
        "fully_connected": ("notebook FullyConnectedNet", notebook_train.NotebookFullyConnectedNet),
        "conv": ("notebook ConvNet (nn.Conv1d, with its pooling)", notebook_train.NotebookConvNet),
        "rnn": ("notebook RNNNet", notebook_train.NotebookRNNNet),
        "lstm": ("notebook TorchLSTMNet", notebook_train.NotebookTorchLSTMNet),  # the target for our LSTM
        "torch_lstm": ("notebook TorchLSTMNet", notebook_train.NotebookTorchLSTMNet),
    }
    label, network = baselines[name]
    return label, network()


def time_side(side: str, name: str, batches: int, device_name: str, tuned: bool, data_scale: float = 1.0,
              precision: str = "float32", warmup: int = WARMUP, compiled: bool = False) -> dict:
    """In this process: examples/s of one model on one side, ``ours`` or ``notebook`` (``precision``:
    ours only, as the train stage resolves it)."""
    if tuned:
        tune_for_training()
    device = resolve_device(device_name)
    precision = resolve_precision(precision, device)
    generator = torch.Generator().manual_seed(0)
    n = _scaled(TRAIN_CHUNKS, data_scale)
    x = torch.randn(n, STEPS, BINS, generator=generator)
    y = (torch.rand(n, generator=generator) < 0.5).long()
    label = None
    if side == "ours" and input_kind(name) == "raw_signal":
        speed = _ours(name, None, batches, device, data_scale, precision, warmup, compiled)
    elif side == "ours":
        data = Chunks(x.to(device), y.to(device), torch.zeros(n, dtype=torch.long, device=device),
                      torch.arange(n, device=device))
        speed = _ours(name, data, batches, device, data_scale, precision, warmup, compiled)
    else:
        torch.manual_seed(0)
        label, net = _baseline_network(name)
        speed = load_notebook_baseline("notebook_train").timed_train_batches(net, x, y, batches, BATCH_SIZE, device=device, warmup=warmup)
    return {"examples_per_s": speed, "label": label, "device": str(device), "precision": precision,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch_threads": torch.get_num_threads()}


def _run_side(side: str, name: str, batches: int, device: str, tuned: bool, data_scale: float = 1.0,
              precision: str = "float32", warmup: int = WARMUP, compiled: bool = False) -> dict:
    args = ["-m", "ecgpipe.bench.train", side, name, "--batches", str(batches), "--device", device,
            "--data-scale", str(data_scale), "--precision", precision, "--warmup", str(warmup)]
    return fresh_process_json(args + (["--tuned"] if tuned else []) + (["--compiled"] if compiled else []))


def median_speeds(runs: list[dict], names: list[str]) -> dict:
    """Per model: the median examples/s over ``runs`` (one dict per repeat)."""
    return {m: round(statistics.median(r["examples_per_s"][m] for r in runs), 1) for m in names}


def speedups(ours_runs: list[dict], notebook_runs: list[dict], names: list[str]) -> tuple[dict, dict]:
    """Per model: the median of the per-repeat ratios, and every repeat's ratio.

    Each ratio is taken from two neighbouring processes, so that machine drift cancels; the
    per-repeat ratios show whether a target is met reliably or only on average.
    """
    ratios = {m: [round(a["examples_per_s"][m] / b["examples_per_s"][m], 3) for a, b in zip(ours_runs, notebook_runs)]
              for m in names}
    return {m: round(statistics.median(r), 3) for m, r in ratios.items()}, ratios


def bench_train(batches: int = 200, repeats: int = 5, device: str = "auto", notebook: bool = False,
                models: list[str] | None = None, tuned_notebook: bool = False, data_scale: float = 1.0,
                bf16: bool = False, warmup: int | None = None, compiled: bool = False) -> dict:
    """Examples/s per model (medians over ``repeats``), timed in fresh processes; ``data_scale`` shrinks
    the data set the batches are drawn from (1.0: the real training split's size; tests use less).
    ``bf16``: each model also trains under bfloat16 autocast, in a process beside its float32 one,
    and the ratio is the median of the per-repeat ratios. ``warmup``: untimed minibatches first, per process.
    ``compiled``: each model also trains under ``torch.compile`` (inductor), in each precision timed, in
    a process beside its eager one; its first epoch (where the graphs compile) is never timed."""
    resolve_device(device)  # a bad name fails here, before any process starts
    names = models or list_models()
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        raise ValueError(f"unknown models {unknown}; registered: {list_models()}")
    if batches < 1 or repeats < 1:
        raise ValueError(f"--batches and --repeats must be at least 1, got {batches} and {repeats}")
    warmup = WARMUP if warmup is None else warmup
    if warmup < 0:
        raise ValueError(f"--warmup must be at least 0, got {warmup}")
    if not 0 < data_scale <= 1:
        raise ValueError(f"--data-scale must be in (0, 1], got {data_scale}")
    if notebook:
        notebook_baseline("notebook_train")  # missing: one line here, not a child's traceback
    ours_runs, notebook_runs, bf16_runs, labels = [], [], [], {}
    compiled_runs = {"float32": [], "bfloat16": []}
    for _ in range(repeats):
        ours_run, notebook_run, bf16_run = {"examples_per_s": {}}, {"examples_per_s": {}}, {"examples_per_s": {}}
        compiled_run = {p: {"examples_per_s": {}} for p in compiled_runs}
        for name in names:  # a fresh process per model and side, the sides alternating: a ratio's
            # two timings are seconds apart, so that machine drift hits both alike
            ours = _run_side("ours", name, batches, device, True, data_scale, warmup=warmup)
            ours_run["examples_per_s"][name] = ours["examples_per_s"]
            if bf16 and trains_in_bfloat16(name):
                in_bf16 = _run_side("ours", name, batches, device, True, data_scale, "bfloat16", warmup)
                bf16_run["examples_per_s"][name], bf16_precision = in_bf16["examples_per_s"], in_bf16["precision"]
            for precision in ("float32", "bfloat16") if compiled else ():
                if precision == "float32" or (bf16 and trains_in_bfloat16(name)):
                    side = _run_side("ours", name, batches, device, True, data_scale, precision, warmup, True)
                    compiled_run[precision]["examples_per_s"][name] = side["examples_per_s"]
            if notebook and input_kind(name) == "spectrogram":  # the notebook has no raw-signal network
                theirs = _run_side("notebook", name, batches, device, tuned_notebook, data_scale, warmup=warmup)
                notebook_run["examples_per_s"][name], labels[name] = theirs["examples_per_s"], theirs["label"]
        ours_runs.append(ours_run)
        notebook_runs.append(notebook_run)
        bf16_runs.append(bf16_run)
        for precision, runs in compiled_runs.items():
            runs.append(compiled_run[precision])
    result = {
        "device": ours["device"] + (f" ({ours['gpu']})" if ours["gpu"] else ""),  # as in every process
        "batch_size": BATCH_SIZE,
        "batches": batches,
        "warmup": warmup,
        "repeats": repeats,
        "data_scale": data_scale,
        "torch_threads": ours["torch_threads"],
        "examples_per_s": median_speeds(ours_runs, names),
    }
    in_bf16 = [m for m in names if trains_in_bfloat16(m)]
    if bf16 and in_bf16:
        # "float32" where the device has no native bfloat16: the ratio then says what fell back
        result["bf16_ran_as"] = bf16_precision
        result["bf16_examples_per_s"] = median_speeds(bf16_runs, in_bf16)
        result["bf16_speedup"], result["bf16_speedup_per_repeat"] = speedups(bf16_runs, ours_runs, in_bf16)
    if compiled:  # each against the eager run of its own precision
        eager = {"float32": ours_runs, "bfloat16": bf16_runs}
        for precision, runs in compiled_runs.items():
            done = [m for m in names if m in runs[0]["examples_per_s"]]
            if done:
                key = "compiled" if precision == "float32" else "compiled_bf16"
                result[f"{key}_examples_per_s"] = median_speeds(runs, done)
                result[f"{key}_speedup"], result[f"{key}_speedup_per_repeat"] = speedups(runs, eager[precision], done)
    compared = [m for m in names if input_kind(m) == "spectrogram"]
    if notebook and compared:
        result["notebook_examples_per_s"] = median_speeds(notebook_runs, compared)
        result["notebook_baseline"] = labels
        result["notebook_cpu_settings"] = "ecgpipe.training.cpu (as ours)" if tuned_notebook else "none (as the notebook)"
        result["speedup"], result["speedup_per_repeat"] = speedups(ours_runs, notebook_runs, compared)
    return result


if __name__ == "__main__":  # one model on one side, timed in this fresh process; prints JSON
    parser = argparse.ArgumentParser()
    parser.add_argument("side", choices=["ours", "notebook"])
    parser.add_argument("model")
    parser.add_argument("--batches", type=int, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--tuned", action="store_true")
    parser.add_argument("--data-scale", type=float, default=1.0)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--compiled", action="store_true")
    args = parser.parse_args()
    print(json.dumps(time_side(args.side, args.model, args.batches, args.device, args.tuned, args.data_scale,
                               args.precision, args.warmup, args.compiled)))
