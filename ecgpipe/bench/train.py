"""`ecgpipe bench train`: training throughput of every registered model, through the project's
own training path (`chunked_batches` + `train_step`), batch 192, inputs of the real shape 40x17.

With ``--notebook`` the notebook's loop (a DataLoader over the chunk tensors) is timed beside
it, interleaved in the same process: on the same network for mean_spectrum, fully_connected and
torch_lstm; on the notebook's ConvNet built from nn.Conv1d/AvgPool1d for conv; on the
notebook's own RNN for rnn; and on the notebook's TorchLSTMNet for the from-scratch lstm (the
target: at least as fast as PyTorch's LSTM in the notebook's loop).
"""
from __future__ import annotations

import statistics
import time

import torch

from ecgpipe.bench import notebook_train
from ecgpipe.models import create_model, list_models
from ecgpipe.training import Chunks, chunked_batches, make_optimizer, resolve_device, train_step

BATCH_SIZE, STEPS, BINS = 192, 40, 17


def _ours(name: str, data: Chunks, batches: int, device: torch.device, warmup: int = 3) -> float:
    torch.manual_seed(0)
    model = create_model(name, BINS, 1, n_steps=STEPS).to(device)
    optimizer = make_optimizer(model, 0.01)
    epoch = chunked_batches(data, BATCH_SIZE)
    generator = torch.Generator().manual_seed(0)
    done, seen, start = 0, 0, None
    while done < batches + warmup:
        for x, y in epoch(generator):
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start, seen = time.perf_counter(), 0
            train_step(model, optimizer, x, y)
            done += 1
            seen += len(y)
            if done >= batches + warmup:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def _baseline(name: str, x: torch.Tensor, y: torch.Tensor, batches: int, device: torch.device) -> tuple[str, float]:
    torch.manual_seed(0)
    if name == "rnn":
        label, net = "notebook RNNNet", notebook_train.NotebookRNNNet()
    elif name == "lstm":
        label, net = "notebook TorchLSTMNet", notebook_train.NotebookTorchLSTMNet()
    elif name == "conv":
        label, net = "notebook ConvNet (nn.Conv1d, with its pooling)", notebook_train.NotebookConvNet()
    else:
        label, net = f"{name} in the notebook's loop", create_model(name, BINS, 1, n_steps=STEPS)
    return label, notebook_train.timed_train_batches(net, x, y, batches, BATCH_SIZE, device=device)


def bench_train(batches: int = 50, repeats: int = 3, device: str = "auto", notebook: bool = False,
                models: list[str] | None = None) -> dict:
    device = resolve_device(device)
    generator = torch.Generator().manual_seed(0)
    n = BATCH_SIZE * (batches + 4)
    x = torch.randn(n, STEPS, BINS, generator=generator)
    y = (torch.rand(n, generator=generator) < 0.5).long()
    data = Chunks(x.to(device), y.to(device), torch.zeros(n, dtype=torch.long, device=device),
                  torch.arange(n, device=device))
    names = models or list_models()
    ours: dict[str, list[float]] = {m: [] for m in names}
    theirs: dict[str, list[float]] = {m: [] for m in names}
    labels: dict[str, str] = {}
    for _ in range(repeats):  # interleaved, so machine noise hits both sides alike
        for name in names:
            ours[name].append(_ours(name, data, batches, device))
            if notebook:
                labels[name], value = _baseline(name, x, y, batches, device)
                theirs[name].append(value)
    result = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "batch_size": BATCH_SIZE,
        "batches": batches,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "examples_per_s": {m: round(statistics.median(v), 1) for m, v in ours.items()},
    }
    if notebook:
        result["notebook_examples_per_s"] = {m: round(statistics.median(v), 1) for m, v in theirs.items()}
        result["notebook_baseline"] = labels
        result["speedup"] = {m: round(statistics.median(a / b for a, b in zip(ours[m], theirs[m])), 3) for m in names}
    return result
