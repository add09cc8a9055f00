"""The ConvNet's layer: ``AvgPool1d(ReLU(Conv1d(x)))`` on channels-last input, backward written out.

Input and output are (batch, steps, channels), so consecutive layers need no transposes. On a
CPU, ``nn.Conv1d`` is slow for these small sizes, and recording the same block from a dozen
autograd operations spends more time on zero-filled slice gradients and small copies than on
arithmetic. Here a layer is:
    forward:  the kernel's shifted copies of the input side by side (one strided copy),
              one matrix product with the bias, ReLU in place, the mean of each pooling window;
    backward: the pooled gradient spread over its window and masked by ReLU in one pass,
              one matrix product each for the weight and the input gradients.
Only the output steps that reach a pooling window are computed (``AvgPool1d`` drops a trailing
remainder). The tests check it against ``nn.Conv1d``/``nn.ReLU``/``nn.AvgPool1d`` in float64.
"""
from __future__ import annotations

import torch
from torch import nn


class _ConvReluPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pool: int):
        out_channels, channels, kernel = weight.shape
        batch, steps, _ = x.shape
        windows = (steps - kernel + 1) // pool
        used = windows * pool  # convolution outputs that some pooling window averages
        x = x.contiguous()
        # row t of each recording: input steps t .. t+kernel-1 side by side, tap-major
        columns = x.as_strided((batch, used, kernel * channels), (steps * channels, channels, 1),
                               x.storage_offset()).reshape(batch * used, kernel * channels)
        taps = weight.permute(2, 1, 0).reshape(kernel * channels, out_channels)  # the same order
        activation = torch.addmm(bias, columns, taps).relu_()
        windowed = activation.view(batch, windows, pool, out_channels)
        if pool == 2:  # two strided halves: faster than a reduction over a dimension of size 2
            pooled = torch.add(windowed[:, :, 0], windowed[:, :, 1]).mul_(0.5)
        else:
            pooled = windowed.sum(dim=2).mul_(1.0 / pool)
        ctx.save_for_backward(columns, taps, activation)
        ctx.pool, ctx.input_shape = pool, (batch, steps, channels)
        return pooled

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_pooled):
        columns, taps, activation = ctx.saved_tensors
        batch, steps, channels = ctx.input_shape
        pool = ctx.pool
        kernel_channels, out_channels = taps.shape
        kernel = kernel_channels // channels
        windows = d_pooled.shape[1]
        used = windows * pool
        # each window's gradient shared by its steps, zero where ReLU was off; threshold_backward is
        # ReLU's own backward kernel and takes the broadcast view without materialising it
        spread = (d_pooled * (1.0 / pool)).unsqueeze(2).expand(batch, windows, pool, out_channels)
        d_activation = torch.ops.aten.threshold_backward(spread, activation.view_as(spread), 0)
        d_activation = d_activation.reshape(batch * used, out_channels)
        d_weight = (columns.t() @ d_activation).view(kernel, channels, out_channels).permute(2, 1, 0)
        d_bias = d_activation.sum(dim=0)
        d_x = None
        if ctx.needs_input_grad[0]:
            d_columns = (d_activation @ taps.t()).view(batch, used, kernel_channels)
            # each input step collects the gradient of every tap that read it
            d_x = d_columns.new_empty(batch, steps, channels)
            d_x[:, :used] = d_columns[:, :, :channels]
            d_x[:, used:] = 0
            for tap in range(1, kernel):
                d_x[:, tap : tap + used] += d_columns[:, :, tap * channels : (tap + 1) * channels]
        return d_x, d_weight, d_bias, None


class ConvReluPool(nn.Conv1d):
    """``AvgPool1d(pool)(ReLU(Conv1d(x)))`` for channels-last x (batch, steps, channels): valid
    padding, stride 1; ``pool=None`` averages over all steps (``AdaptiveAvgPool1d(1)``), giving one.

    The parameters, their layout and initialisation are ``nn.Conv1d``'s.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, pool: int | None):
        super().__init__(in_channels, out_channels, kernel_size)
        self.pool = pool

    def _window(self, conv_steps: int) -> int:
        return conv_steps if self.pool is None else self.pool

    def output_steps(self, steps: int) -> int:
        conv_steps = steps - self.kernel_size[0] + 1
        return conv_steps // self._window(conv_steps) if conv_steps > 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output_steps(x.shape[1]) < 1:
            raise ValueError(f"{self.extra_repr()}: input of {x.shape[1]} steps is too short for one output step")
        window = self._window(x.shape[1] - self.kernel_size[0] + 1)
        return _ConvReluPool.apply(x, self.weight, self.bias, window)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pool={self.pool if self.pool is not None else 'all steps'}"
