"""The reference notebook's own data preparation, timed: the baseline for `ecgpipe bench data`.

A transcription of the course notebook's cells 2, 5, 8, 9 and 10 (load, spectrogram, random
split, balance, chunk), kept only so that `ecgpipe bench data --notebook` can time it next to
ecgpipe on the same machine. The pipeline never uses it. By hand:

    python benchmarks/notebook/notebook_data.py DIR_WITH_EXTRACTED_RECORDS [--json PATH]
"""
import argparse
import csv
import glob
import json
import os
import re
import resource
import time

import numpy as np
import scipy.io
import scipy.signal
import torch


def load(directory, max_length=18286, class_labels=("N", "A")):
    label_map = {}
    with open("%s/REFERENCE.csv" % directory) as f:
        for line in csv.reader(f):
            label_map[line[0]] = line[1]
    samples, lengths, labels = [], [], []
    for file in sorted(glob.glob("%s/*.mat" % directory)):
        subject_id = re.match(r"^(A[0-9]+)\.mat", os.path.basename(file))[1]
        label = label_map[subject_id]
        if label not in class_labels:
            continue
        sample = scipy.io.loadmat(file)["val"][0]
        if len(sample) < 4000:
            continue
        samples.append(np.pad(sample, (0, max_length - len(sample))))
        lengths.append(len(sample))
        labels.append(class_labels.index(label))
    samples = torch.tensor(np.vstack(samples), dtype=torch.float32)
    return samples, torch.tensor(np.stack(lengths)), torch.tensor(np.stack(labels))


def spectrum(samples, lengths):
    _, _, sxx = scipy.signal.spectrogram(samples.numpy(), scaling="spectrum", nperseg=32, noverlap=4)
    sxx = sxx - np.mean(sxx, axis=(0, 2), keepdims=True)
    sxx = sxx / np.std(sxx, axis=(0, 2), keepdims=True)
    return torch.tensor(sxx.transpose(0, 2, 1)), (lengths - 32) // 28


class SpectrumDataset(torch.utils.data.Dataset):
    def __init__(self, samples, lengths, labels):
        self.samples, self.lengths, self.labels = samples, lengths, labels

    def __getitem__(self, index):
        return self.samples[index, : self.lengths[index]], self.labels[index]

    def __len__(self):
        return self.samples.shape[0]


def balance_dataset(dataset):
    labels = torch.zeros((len(dataset),), dtype=torch.long)
    for i, (x, y) in enumerate(dataset):
        labels[i] = y
    indices = torch.arange(len(dataset), dtype=torch.long)
    unique_labels = np.unique(labels.numpy())
    n = [torch.sum((labels == label).to(torch.long)).item() for label in unique_labels]
    if len(np.unique(n)) == 1:
        return dataset
    for i, label in enumerate(unique_labels):
        while n[i] < max(n):
            extra_samples = max(n) - n[i]
            idxs = torch.where(labels == label)[0]
            idxs = idxs[torch.randperm(idxs.shape[0])][:extra_samples]
            indices = torch.cat((indices, idxs))
            n[i] += len(idxs)
    return torch.utils.data.Subset(dataset, indices)


class ChunkedDataset(torch.utils.data.TensorDataset):
    def __init__(self, source_dataset, chunk_size=40):
        all_x, all_y = [], []
        for x, y in source_dataset:
            for chunk in range(x.shape[0] // chunk_size):
                offset = chunk * chunk_size
                all_x.append(x[offset : offset + chunk_size])
                all_y.append(y)
        self.tensors = (torch.stack(all_x), torch.tensor(all_y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(12345)
    seconds = {}
    t0 = t = time.perf_counter()
    samples, lengths, labels = load(args.directory)
    seconds["records"] = time.perf_counter() - t
    t = time.perf_counter()
    spectra, windows = spectrum(samples, lengths)
    data = SpectrumDataset(spectra, windows, labels)
    seconds["spectrogram"] = time.perf_counter() - t
    t = time.perf_counter()
    n_train = int(0.8 * len(data))
    train, val = torch.utils.data.random_split(data, [n_train, len(data) - n_train])
    seconds["split"] = time.perf_counter() - t
    t = time.perf_counter()
    train_bal, val_bal = balance_dataset(train), balance_dataset(val)
    seconds["balance"] = time.perf_counter() - t
    t = time.perf_counter()
    chunk_train = balance_dataset(ChunkedDataset(train))
    chunk_val = balance_dataset(ChunkedDataset(val))
    seconds["chunk"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    result = {
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "counts": {"records": len(data), "train": len(train), "val": len(val),
                   "balanced_train": len(train_bal), "balanced_val": len(val_bal),
                   "chunks_train": len(chunk_train), "chunks_val": len(chunk_val)},
    }
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
