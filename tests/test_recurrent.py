"""The from-scratch RNN and LSTM compute the same functions as PyTorch's, gradients included."""
import pytest
import torch

from ecgpipe.models.recurrent import LSTM, RNN, _LSTMRecurrence, _RNNRecurrence


def _compare(ours, theirs, x, state_len):
    out_a, state_a = ours(x)
    out_b, state_b = theirs(x)
    state_b = tuple(s[0] for s in state_b) if isinstance(state_b, tuple) else (state_b[0],)
    assert out_a.shape == out_b.shape == (x.shape[0], x.shape[1], 7)
    assert len(state_a) == state_len
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-6)
    for a, b in zip(state_a, state_b):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # a loss that reaches every output step and every final state
    weights = torch.randn_like(out_a)
    loss_a = (out_a * weights).sum() + sum((s**2).sum() for s in state_a)
    loss_b = (out_b * weights).sum() + sum((s**2).sum() for s in state_b)
    grads_a = torch.autograd.grad(loss_a, [x, *ours.parameters()])
    grads_b = torch.autograd.grad(loss_b, [x, *theirs.parameters()])
    return grads_a, grads_b


def test_rnn_matches_torch_rnn():
    torch.manual_seed(0)
    theirs = torch.nn.RNN(5, 7, batch_first=True, nonlinearity="tanh").double()
    ours = RNN(5, 7).double().from_torch(theirs)
    x = torch.randn(3, 11, 5, dtype=torch.float64, requires_grad=True)
    (dx_a, dWx, dWh, db), (dx_b, dWih, dWhh, dbih, dbhh) = _compare(ours, theirs, x, 1)
    torch.testing.assert_close(dx_a, dx_b, rtol=0, atol=1e-6)
    torch.testing.assert_close(dWx, dWih.T, rtol=0, atol=1e-6)
    torch.testing.assert_close(dWh, dWhh.T, rtol=0, atol=1e-6)
    torch.testing.assert_close(db, dbih, rtol=0, atol=1e-6)  # one bias stands for PyTorch's two
    torch.testing.assert_close(db, dbhh, rtol=0, atol=1e-6)


def _torch_order(w):  # our gate blocks i, f, o, g -> PyTorch's i, f, g, o
    i, f, o, g = w.chunk(4, dim=0)
    return torch.cat([i, f, g, o], dim=0)


def test_lstm_matches_torch_lstm():
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(5, 7, batch_first=True).double()
    ours = LSTM(5, 7).double().from_torch(theirs)
    x = torch.randn(3, 11, 5, dtype=torch.float64, requires_grad=True)
    (dx_a, dWx, dWh, db), (dx_b, dWih, dWhh, dbih, dbhh) = _compare(ours, theirs, x, 2)
    torch.testing.assert_close(dx_a, dx_b, rtol=0, atol=1e-6)
    torch.testing.assert_close(_torch_order(dWx.T), dWih, rtol=0, atol=1e-6)
    torch.testing.assert_close(_torch_order(dWh.T), dWhh, rtol=0, atol=1e-6)
    torch.testing.assert_close(_torch_order(db), dbih, rtol=0, atol=1e-6)
    torch.testing.assert_close(_torch_order(db), dbhh, rtol=0, atol=1e-6)


def test_lstm_hand_written_backward_passes_gradcheck():
    # the recurrence's backward is written by hand: check it against finite differences
    torch.manual_seed(1)
    steps, batch, hidden = 6, 2, 4
    args = [torch.randn(*shape, dtype=torch.float64, requires_grad=True)
            for shape in ((steps, batch, 4 * hidden), (hidden, 4 * hidden), (batch, hidden), (batch, hidden))]
    assert torch.autograd.gradcheck(_LSTMRecurrence.apply, args)


def test_rnn_hand_written_backward_passes_gradcheck():
    torch.manual_seed(2)
    steps, batch, hidden = 6, 2, 4
    args = [torch.randn(*shape, dtype=torch.float64, requires_grad=True)
            for shape in ((steps, batch, hidden), (hidden, hidden), (batch, hidden))]
    assert torch.autograd.gradcheck(_RNNRecurrence.apply, args)


@pytest.mark.parametrize("module", [RNN(17, 9), LSTM(17, 9)])
def test_repr_names_sizes(module):
    assert "num_inputs=17, num_hiddens=9" in repr(module)


def test_lstm_gradients_through_the_final_hidden_state_alone():
    # the networks use h_T only: the backward then starts with no output or cell gradient
    torch.manual_seed(3)
    theirs = torch.nn.LSTM(5, 7, batch_first=True).double()
    ours = LSTM(5, 7).double().from_torch(theirs)
    x = torch.randn(4, 9, 5, dtype=torch.float64, requires_grad=True)
    head = torch.randn(7, dtype=torch.float64)
    dx_a, _, dWh, _ = torch.autograd.grad((ours(x)[1][0] @ head).sum(), [x, *ours.parameters()])
    dx_b, _, dWhh, _, _ = torch.autograd.grad((theirs(x)[1][0][0] @ head).sum(), [x, *theirs.parameters()])
    torch.testing.assert_close(dx_a, dx_b, rtol=0, atol=1e-6)
    torch.testing.assert_close(_torch_order(dWh.T), dWhh, rtol=0, atol=1e-6)
