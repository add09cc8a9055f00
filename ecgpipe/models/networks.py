"""The notebook's six networks (its defects fixed). Input: (batch, steps, frequency bins).

Each returns logits: one per sample for two classes (binary cross-entropy), else one per class.
"""
from __future__ import annotations

import torch
from torch import nn

from ecgpipe.models.conv import ConvReluPool
from ecgpipe.models.recurrent import LSTM, RNN


class MeanSpectrumNet(nn.Module):
    """Mean spectrum over the steps -> 128 -> 64 -> outputs."""

    def __init__(self, n_inputs: int, n_outputs: int, hidden: tuple[int, int] = (128, 64)):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_inputs, hidden[0]), nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
            nn.Linear(hidden[1], n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.mean(dim=1))


class InputMajorLinear(nn.Module):
    """``nn.Linear`` with its weight stored as (in_features, out_features): ``x @ weight + bias``.

    The same function and initialisation. Both matrix products of a training step then read and
    write their operands untransposed; on a CPU the large first layer's weight gradient ``x^T g``
    is cheaper this way (benchmarks/README.md).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = in_features**-0.5  # nn.Linear's: kaiming_uniform(a=sqrt(5)) and its bias rule
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class FullyConnectedNet(nn.Module):
    """All steps and bins flattened -> 512 -> 256 -> outputs."""

    def __init__(self, n_inputs: int, n_outputs: int, hidden: tuple[int, int] = (512, 256)):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            InputMajorLinear(n_inputs, hidden[0]), nn.ReLU(),
            InputMajorLinear(hidden[0], hidden[1]), nn.ReLU(),
            InputMajorLinear(hidden[1], n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNet(nn.Module):
    """1-D convolutions over the steps, bins as channels: 32, pool, 64, pool, 128, global mean."""

    KERNEL = 3

    def __init__(self, n_inputs: int, n_outputs: int, channels: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = ConvReluPool(n_inputs, c1, self.KERNEL, pool=2)
        self.conv2 = ConvReluPool(c1, c2, self.KERNEL, pool=2)
        self.conv3 = ConvReluPool(c2, c3, self.KERNEL, pool=None)  # AdaptiveAvgPool1d(1)
        self.out = nn.Linear(c3, n_outputs)

    @classmethod
    def min_steps(cls) -> int:
        # three valid convolutions (-2 each) and two halvings must leave at least one step
        return ((1 + 2) * 2 + 2) * 2 + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv3(self.conv2(self.conv1(x)))  # (batch, 1, channels)
        return self.out(features[:, 0])  # Flatten and Linear


class RecurrentNet(nn.Module):
    """A recurrent layer's final hidden state -> 128 -> outputs."""

    def __init__(self, recurrent: nn.Module, hidden: int, n_outputs: int):
        super().__init__()
        self.recurrent = recurrent
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.recurrent(x)
        h = state[0]
        if h.dim() == 3:  # torch.nn.LSTM: (layers, batch, hidden); the last layer's final state
            h = h[-1]
        return self.head(h)


# The constructors, by the names ecgpipe/models/registry.py's MODELS lists.

def mean_spectrum(n_inputs: int, n_outputs: int, n_steps: int) -> nn.Module:
    return MeanSpectrumNet(n_inputs, n_outputs)


def fully_connected(n_inputs: int, n_outputs: int, n_steps: int) -> nn.Module:
    return FullyConnectedNet(n_inputs * n_steps, n_outputs)


def conv(n_inputs: int, n_outputs: int, n_steps: int) -> nn.Module:
    if n_steps < ConvNet.min_steps():
        raise ValueError(f"model conv needs chunks of at least {ConvNet.min_steps()} steps, got {n_steps}")
    return ConvNet(n_inputs, n_outputs)


def rnn(n_inputs: int, n_outputs: int, n_steps: int, hidden: int = 128) -> nn.Module:
    return RecurrentNet(RNN(n_inputs, hidden), hidden, n_outputs)


def lstm(n_inputs: int, n_outputs: int, n_steps: int, hidden: int = 128) -> nn.Module:
    return RecurrentNet(LSTM(n_inputs, hidden), hidden, n_outputs)


def torch_lstm(n_inputs: int, n_outputs: int, n_steps: int, hidden: int = 128, num_layers: int = 1) -> nn.Module:
    return RecurrentNet(nn.LSTM(n_inputs, hidden, num_layers=num_layers, batch_first=True), hidden, n_outputs)
