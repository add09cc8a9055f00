"""A compact 1-D residual ConvNet on the raw signal, in the spirit of Hannun et al. (2019, awni/ecg).

Hannun's network has 33 convolutions (16 residual blocks, 32 to 256 channels, kernel 16) on 256
samples at 200 Hz per output; it trains in hours on a GPU. This one keeps its shape and cuts its
cost to fit a 2-core CPU in minutes (benchmarks/README.md): a stride-2 stem, then six residual
blocks of two kernel-7 convolutions, each block halving the time axis and widening from 16 to 128
channels (the wide layers work on the shortest time axes, where they cost least). After the stem and six halvings one output step sees about 2,300 input samples (7.7 s at
300 Hz, eight to ten beats: enough to see an irregular rhythm). Global average pooling over time
then makes the network take any length: a crop in training, a longer window when scoring.

Input: (batch, samples, 1) in mV, as :class:`ecgpipe.inference.featurizers.RawCrops` makes it.
"""
from __future__ import annotations

import torch
from torch import nn


STEM_WIDTH = 16
WIDTHS = (16, 32, 64, 96, 128, 128)  # channels out of each of the six blocks
KERNEL = 7


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (a strided 1x1 convolution when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel: int = KERNEL):
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm1d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class RawResNet(nn.Module):
    def __init__(self, n_inputs: int, n_outputs: int, widths: tuple[int, ...] = WIDTHS, dropout: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(n_inputs, STEM_WIDTH, 15, stride=2, padding=7, bias=False),
                                  nn.BatchNorm1d(STEM_WIDTH), nn.ReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(a, b, stride=2) for a, b in zip((STEM_WIDTH, *widths), widths)))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, channels, time); one channel is a plain reshape, whose standard strides let the
        # convolutions pick a faster kernel than the transposed view (6% per step, measured)
        x = x.reshape(len(x), 1, x.shape[1]) if x.shape[2] == 1 else x.transpose(1, 2)
        h = self.blocks(self.stem(x))
        return self.head(self.dropout(h.mean(dim=2)))


def raw_resnet(n_inputs: int, n_outputs: int, n_steps: int) -> nn.Module:
    """``n_steps`` (the training crop) does not fix the architecture: any length of input works."""
    return RawResNet(n_inputs, n_outputs)
