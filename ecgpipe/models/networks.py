"""The notebook's six networks (its defects fixed). Input: (batch, steps, frequency bins).

Each returns logits: one per sample for two classes (binary cross-entropy), else one per class.
"""
from __future__ import annotations

import torch
from torch import nn

from ecgpipe.models.recurrent import LSTM, RNN
from ecgpipe.models.registry import register_model


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


class ChannelsLastConv1d(nn.Conv1d):
    """``nn.Conv1d`` (valid padding, stride 1) applied to channels-last input (batch, steps, channels).

    Same parameters and function as ``nn.Conv1d``; computed as one matrix product over the
    ``kernel_size`` shifted copies of the input, which on a CPU is several times faster than the
    convolution kernels for these small sizes and needs no transposes between layers.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        steps = x.shape[1] - k + 1
        columns = torch.cat([x[:, i : i + steps] for i in range(k)], dim=2)  # (batch, steps, k * c_in)
        weight = self.weight.permute(0, 2, 1).reshape(self.out_channels, -1)  # (c_out, k * c_in)
        return nn.functional.linear(columns, weight, self.bias)


def avg_pool_steps(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """``AvgPool1d(size)`` over the steps of (batch, steps, channels); a trailing remainder is dropped."""
    batch, steps, channels = x.shape
    usable = steps // size * size
    return x[:, :usable].reshape(batch, steps // size, size, channels).mean(dim=2)


class ConvNet(nn.Module):
    """1-D convolutions over the steps, bins as channels: 32, pool, 64, pool, 128, global mean."""

    KERNEL = 3

    def __init__(self, n_inputs: int, n_outputs: int, channels: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = ChannelsLastConv1d(n_inputs, c1, self.KERNEL)
        self.conv2 = ChannelsLastConv1d(c1, c2, self.KERNEL)
        self.conv3 = ChannelsLastConv1d(c2, c3, self.KERNEL)
        self.out = nn.Linear(c3, n_outputs)

    @classmethod
    def min_steps(cls) -> int:
        # three valid convolutions (-2 each) and two halvings must leave at least one step
        return ((1 + 2) * 2 + 2) * 2 + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = avg_pool_steps(torch.relu(self.conv1(x)))
        x = avg_pool_steps(torch.relu(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        return self.out(x.mean(dim=1))  # AdaptiveAvgPool1d(1) and Flatten


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


@register_model
def mean_spectrum(n_inputs: int, n_outputs: int, n_steps: int) -> nn.Module:
    return MeanSpectrumNet(n_inputs, n_outputs)


@register_model
def fully_connected(n_inputs: int, n_outputs: int, n_steps: int) -> nn.Module:
    return FullyConnectedNet(n_inputs * n_steps, n_outputs)


@register_model
def conv(n_inputs: int, n_outputs: int, n_steps: int) -> nn.Module:
    if n_steps < ConvNet.min_steps():
        raise ValueError(f"model conv needs chunks of at least {ConvNet.min_steps()} steps, got {n_steps}")
    return ConvNet(n_inputs, n_outputs)


@register_model
def rnn(n_inputs: int, n_outputs: int, n_steps: int, hidden: int = 128) -> nn.Module:
    return RecurrentNet(RNN(n_inputs, hidden), hidden, n_outputs)


@register_model
def lstm(n_inputs: int, n_outputs: int, n_steps: int, hidden: int = 128) -> nn.Module:
    return RecurrentNet(LSTM(n_inputs, hidden), hidden, n_outputs)


@register_model
def torch_lstm(n_inputs: int, n_outputs: int, n_steps: int, hidden: int = 128, num_layers: int = 1) -> nn.Module:
    return RecurrentNet(nn.LSTM(n_inputs, hidden, num_layers=num_layers, batch_first=True), hidden, n_outputs)
