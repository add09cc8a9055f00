"""An RNN and an LSTM written from their equations, batch-first, returning ``(outputs, state)``.

They compute the same functions as ``torch.nn.RNN`` (tanh) and ``torch.nn.LSTM``:
    RNN:  h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h)
    LSTM: i, f, o = sigmoid(x_t W_x* + h_{t-1} W_h* + b_*),  g = tanh(x_t W_xg + h_{t-1} W_hg + b_g)
          c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)
(PyTorch adds two bias vectors where one suffices; ``from_torch`` copies their sum.)

For speed the four LSTM gates share one weight matrix, and the input projection of every step
is one matrix product before the loop; only the recurrent product stays inside it. The LSTM's
recurrence also has its backward pass written out (backpropagation through time, from the same
equations) instead of recording ~10 autograd nodes per step: one matrix product per step each
way, and the recurrent weights' gradient as a single product at the end. The tests check it
against ``torch.nn.LSTM`` and against autograd in float64.
"""
from __future__ import annotations

import torch
from torch import nn


def _uniform(shape: tuple[int, ...], hidden: int) -> nn.Parameter:
    # PyTorch's recurrent initialisation: U(-1/sqrt(hidden), 1/sqrt(hidden))
    bound = hidden**-0.5
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class _RNNRecurrence(torch.autograd.Function):
    """h_1 ... h_T and h_T from projected inputs ``P`` (steps, batch, H), ``W_hh`` (H, H) and h_0."""

    @staticmethod
    def forward(ctx, projected, W_hh, h0):
        steps = projected.shape[0]
        hiddens = projected.new_empty(steps + 1, *h0.shape)  # h_0 ... h_T
        hiddens[0] = h0
        for t in range(steps):
            torch.tanh(torch.addmm(projected[t], hiddens[t], W_hh), out=hiddens[t + 1])
        ctx.save_for_backward(hiddens, W_hh)
        ctx.set_materialize_grads(False)
        return hiddens[1:], hiddens[steps].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_outputs, d_h_last):
        hiddens, W_hh = ctx.saved_tensors
        steps = hiddens.shape[0] - 1
        d_pre = torch.empty_like(hiddens[1:])  # dL/d(pre-activation) per step
        d_h = d_h_last.clone() if d_h_last is not None else torch.zeros_like(hiddens[0])
        W_hh_t = W_hh.t()
        for t in reversed(range(steps)):
            if d_outputs is not None:
                d_h = d_h + d_outputs[t]
            h = hiddens[t + 1]
            torch.mul(d_h, torch.addcmul(torch.ones_like(h), h, h, value=-1), out=d_pre[t])  # tanh' = 1 - h^2
            d_h = d_pre[t] @ W_hh_t
        hidden = hiddens.shape[2]
        d_W_hh = hiddens[:-1].reshape(-1, hidden).t() @ d_pre.reshape(-1, hidden)
        return d_pre, d_W_hh, d_h


class RNN(nn.Module):
    def __init__(self, num_inputs: int, num_hiddens: int):
        super().__init__()
        self.num_inputs, self.num_hiddens = num_inputs, num_hiddens
        self.W_xh = _uniform((num_inputs, num_hiddens), num_hiddens)
        self.W_hh = _uniform((num_hiddens, num_hiddens), num_hiddens)
        self.b_h = _uniform((num_hiddens,), num_hiddens)

    def forward(self, inputs: torch.Tensor, state: tuple[torch.Tensor] | None = None):
        """inputs (batch, steps, num_inputs) -> outputs (batch, steps, num_hiddens), (h,)."""
        batch, steps, _ = inputs.shape
        h = inputs.new_zeros(batch, self.num_hiddens) if state is None else state[0]
        time_major = inputs.transpose(0, 1).reshape(steps * batch, -1)
        projected = torch.addmm(self.b_h, time_major, self.W_xh).view(steps, batch, -1)
        outputs, h = _RNNRecurrence.apply(projected, self.W_hh, h)
        return outputs.transpose(0, 1), (h,)

    @torch.no_grad()
    def from_torch(self, rnn: nn.RNN) -> "RNN":
        """Copy the weights of a one-layer, batch-first, tanh ``torch.nn.RNN``."""
        self.W_xh.copy_(rnn.weight_ih_l0.T)
        self.W_hh.copy_(rnn.weight_hh_l0.T)
        self.b_h.copy_(rnn.bias_ih_l0 + rnn.bias_hh_l0)
        return self

    def extra_repr(self) -> str:
        return f"num_inputs={self.num_inputs}, num_hiddens={self.num_hiddens}"


class _LSTMRecurrence(torch.autograd.Function):
    """h_1 ... h_T, h_T and c_T from the projected inputs ``P`` (steps, batch, 4H), ``W_h`` (H, 4H),
    h_0 and c_0.

    Gate blocks in the order i, f, o, g: the three sigmoid gates side by side, so that one
    operation covers them, and the tanh candidate last. Time-major inside, so that every step
    works on contiguous memory. Each line of both loops is one pass over a step's values: on a
    CPU the passes, not the arithmetic, are what costs.
    """

    @staticmethod
    def forward(ctx, projected, W_h, h0, c0):
        steps, batch, four_h = projected.shape
        hidden = four_h // 4
        acts = torch.empty_like(projected)  # activated gates i, f, o, g per step
        cells = projected.new_empty(steps + 1, batch, hidden)  # c_0 ... c_T
        tanh_cells = projected.new_empty(steps, batch, hidden)  # tanh(c_1) ... tanh(c_T)
        hiddens = projected.new_empty(steps + 1, batch, hidden)  # h_0 ... h_T
        cells[0], hiddens[0] = c0, h0
        for t in range(steps):
            a = torch.addmm(projected[t], hiddens[t], W_h, out=acts[t])
            a[:, : 3 * hidden].sigmoid_()
            a[:, 3 * hidden :].tanh_()
            i, f, o, g = a.chunk(4, dim=1)
            c = torch.mul(f, cells[t], out=cells[t + 1]).addcmul_(i, g)  # c_t = f c_{t-1} + i g
            torch.mul(o, torch.tanh(c, out=tanh_cells[t]), out=hiddens[t + 1])  # h_t = o tanh(c_t)
        ctx.save_for_backward(acts, cells, tanh_cells, hiddens, W_h)
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None: no zeros
        return hiddens[1:], hiddens[steps].clone(), cells[steps].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_outputs, d_h_last, d_c_last):
        acts, cells, tanh_cells, hiddens, W_h = ctx.saved_tensors
        steps, batch, four_h = acts.shape
        hidden = four_h // 4
        d_gates = torch.empty_like(acts)  # dL/d(pre-activation gates), per step
        d_h = d_h_last if d_h_last is not None else torch.zeros_like(hiddens[0])  # read, never written
        d_c = d_c_last.clone() if d_c_last is not None else torch.zeros_like(d_h)  # updated in place
        W_h_t = W_h.t()
        for t in reversed(range(steps)):  # per step, while the step's activations are in cache
            a, d_a = acts[t], d_gates[t]
            i, f, o, g = a.chunk(4, dim=1)
            d_i, d_f, d_o, d_g = d_a.chunk(4, dim=1)
            if d_outputs is not None:
                d_h = d_h + d_outputs[t]
            tanh_c = tanh_cells[t]
            # h_t = o tanh(c_t):  dL/do = dL/dh tanh(c_t),  dL/dc_t += dL/dh o (1 - tanh(c_t)^2)
            torch.mul(d_h, tanh_c, out=d_o)
            d_c.addcmul_(torch.addcmul(d_h, d_o, tanh_c, value=-1), o)
            # c_t = f c_{t-1} + i g:  dL/di = dL/dc g,  dL/df = dL/dc c_{t-1},  dL/dg = dL/dc i
            torch.mul(d_c, g, out=d_i)
            torch.mul(d_c, cells[t], out=d_f)
            torch.mul(d_c, i, out=d_g)
            # through the activations: sigmoid' = s (1 - s) for i, f, o at once; tanh' = 1 - g^2
            sigmoids = a[:, : 3 * hidden]
            d_a[:, : 3 * hidden].mul_(torch.addcmul(sigmoids, sigmoids, sigmoids, value=-1))
            d_g.addcmul_(d_g * g, g, value=-1)
            d_c.mul_(f)  # dL/dc_{t-1}
            d_h = d_a @ W_h_t
        d_W_h = hiddens[:-1].reshape(-1, hidden).t() @ d_gates.reshape(-1, four_h)
        return d_gates, d_W_h, d_h, d_c


class LSTM(nn.Module):
    # Column blocks of W_x, W_h and b: input, forget and output gates, then the candidate cell.
    # (PyTorch orders them i, f, g, o; see from_torch.)
    GATES = ("input", "forget", "output", "candidate")

    def __init__(self, num_inputs: int, num_hiddens: int):
        super().__init__()
        self.num_inputs, self.num_hiddens = num_inputs, num_hiddens
        self.W_x = _uniform((num_inputs, 4 * num_hiddens), num_hiddens)
        self.W_h = _uniform((num_hiddens, 4 * num_hiddens), num_hiddens)
        self.b = _uniform((4 * num_hiddens,), num_hiddens)

    def forward(self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """inputs (batch, steps, num_inputs) -> outputs (batch, steps, num_hiddens), (h, c)."""
        batch, steps, _ = inputs.shape
        if state is None:
            h = c = inputs.new_zeros(batch, self.num_hiddens)
        else:
            h, c = state
        time_major = inputs.transpose(0, 1).reshape(steps * batch, -1)
        projected = torch.addmm(self.b, time_major, self.W_x).view(steps, batch, -1)
        outputs, h, c = _LSTMRecurrence.apply(projected, self.W_h, h, c)
        return outputs.transpose(0, 1), (h, c)

    @torch.no_grad()
    def from_torch(self, lstm: nn.LSTM) -> "LSTM":
        """Copy the weights of a one-layer, batch-first ``torch.nn.LSTM``."""

        def reorder(w: torch.Tensor) -> torch.Tensor:  # PyTorch's i, f, g, o -> our i, f, o, g
            i, f, g, o = w.chunk(4, dim=0)
            return torch.cat([i, f, o, g], dim=0)

        self.W_x.copy_(reorder(lstm.weight_ih_l0).T)
        self.W_h.copy_(reorder(lstm.weight_hh_l0).T)
        self.b.copy_(reorder(lstm.bias_ih_l0 + lstm.bias_hh_l0))
        return self

    def extra_repr(self) -> str:
        return f"num_inputs={self.num_inputs}, num_hiddens={self.num_hiddens}"
