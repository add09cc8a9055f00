"""The reference notebook's training loop and its networks, timed: the baseline for
`ecgpipe bench train --notebook`. A transcription of its networks (cells 12 and 16-21) and of
its `accuracy` and `train` (cells 14 and 15; the d2l helpers replaced by the same arithmetic).
The pipeline never uses it.
"""
from __future__ import annotations

import time

import torch

from ecgpipe.bench import start_clock


class NotebookRNN(torch.nn.Module):
    """The notebook's RNN module (cell 12): one step at a time, two matrix products per step."""

    def __init__(self, num_inputs, num_hiddens):
        super().__init__()
        self.num_hiddens = num_hiddens
        self.W_xh = torch.nn.Parameter(torch.normal(0, 0.01, size=(num_inputs, num_hiddens)))
        self.W_hh = torch.nn.Parameter(torch.normal(0, 0.01, size=(num_hiddens, num_hiddens)))
        self.b_h = torch.nn.Parameter(torch.zeros(num_hiddens))

    def forward(self, inputs):
        state = (torch.zeros((inputs.shape[0], self.num_hiddens), dtype=inputs.dtype, device=inputs.device),)
        outputs = []
        for step in range(inputs.shape[1]):
            (h,) = state
            state = (torch.tanh(torch.mm(inputs[:, step], self.W_xh) + torch.mm(h, self.W_hh) + self.b_h),)
            outputs.append(state[0])
        return torch.stack(outputs, axis=1), state


class NotebookRNNNet(torch.nn.Module):
    def __init__(self, inputs=17, outputs=1):
        super().__init__()
        self.rnn = NotebookRNN(inputs, 128)
        self.linear = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, outputs))

    def forward(self, x):
        out, (h,) = self.rnn(x)
        return self.linear(h)


class NotebookMeanSpectrumNet(torch.nn.Module):
    """The notebook's MeanSpectrumNet (cell 17)."""

    def __init__(self, inputs=17, outputs=1):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(inputs, 128), torch.nn.ReLU(),
            torch.nn.Linear(128, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, outputs),
        )

    def forward(self, x):
        return self.net(torch.mean(x, axis=1))


class NotebookFullyConnectedNet(torch.nn.Module):
    """The notebook's FullyConnectedNet (cell 16): nn.Linear layers on the flattened chunk."""

    def __init__(self, inputs=40 * 17, outputs=1):
        super().__init__()
        self.linear = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(inputs, 512), torch.nn.ReLU(),
            torch.nn.Linear(512, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, outputs),
        )

    def forward(self, x):
        return self.linear(x)


class NotebookConvNet(torch.nn.Module):
    """The notebook's ConvNet (cell 18) written as it is there, from torch.nn layers, with the two
    AvgPool1d(2) layers its description lists (its code left them out)."""

    def __init__(self, inputs=17, outputs=1):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv1d(inputs, 32, kernel_size=3), torch.nn.ReLU(), torch.nn.AvgPool1d(2),
            torch.nn.Conv1d(32, 64, kernel_size=3), torch.nn.ReLU(), torch.nn.AvgPool1d(2),
            torch.nn.Conv1d(64, 128, kernel_size=3), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(128, outputs),
        )

    def forward(self, x):
        return self.net(x.transpose(2, 1))


class NotebookTorchLSTMNet(torch.nn.Module):
    """The notebook's TorchLSTMNet (cell 21), its final-state reshape included."""

    def __init__(self, inputs=17, outputs=1):
        super().__init__()
        self.lstm = torch.nn.LSTM(inputs, 128, batch_first=True)
        self.linear = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, outputs))

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.linear(h.view(-1, 128))


def accuracy(y_hat, y):
    y_hat = (y_hat[:, 0] > 0).to(y.dtype) if y_hat.shape[1] == 1 else torch.argmax(y_hat, axis=1).to(y.dtype)
    return torch.mean((y_hat == y).to(torch.float32))


def timed_train_batches(net, x, y, batches, batch_size=192, lr=0.01, device="cpu", warmup=3):
    """Examples/s of the notebook's `train` loop (train phase) over a DataLoader of the balanced ``(x, y)``.

    Wall-clock, the DataLoader included (the notebook's own timer leaves the loader out; a user
    waits for both). The first ``warmup`` minibatches are not timed.
    """
    net = net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    # as the notebook's pre-chunked training set: its balance_dataset returns a Subset of the chunk
    # tensors, indexed by a LongTensor (cells 9 and 10), so every sample is fetched through it
    balanced = torch.utils.data.Subset(torch.utils.data.TensorDataset(x, y), torch.arange(len(x)))
    loader = torch.utils.data.DataLoader(balanced, shuffle=True, batch_size=batch_size)
    metrics = [0.0, 0.0, 0.0]
    net.train()
    done, seen, start = 0, 0, None
    while done < batches + warmup:
        for xb, yb in loader:
            if done == warmup:
                start, seen = start_clock(), 0
            xb, yb = xb.to(device), yb.to(device)
            y_hat = net(xb)
            if y_hat.shape[1] == 1:
                loss = torch.nn.BCEWithLogitsLoss()(y_hat[:, 0], yb.to(torch.float))
            else:
                loss = torch.nn.CrossEntropyLoss()(y_hat, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for i, v in enumerate((loss * xb.shape[0], accuracy(y_hat, yb) * xb.shape[0], xb.shape[0])):
                # d2l's Accumulator: one host sync per value (detached: the same sync, no warning)
                metrics[i] += float(v.detach()) if torch.is_tensor(v) else float(v)
            done += 1
            seen += xb.shape[0]
            if done >= batches + warmup:
                break
    return seen / (time.perf_counter() - start)
