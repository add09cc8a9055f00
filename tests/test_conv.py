import pytest
import torch
from torch import nn

from ecgpipe.models.conv import ConvReluPool, _ConvReluPool


def _reference(block: ConvReluPool) -> nn.Sequential:
    """The same layer from torch.nn, on channels-first input, sharing the block's parameters."""
    pool = nn.AdaptiveAvgPool1d(1) if block.pool is None else nn.AvgPool1d(block.pool)
    conv = nn.Conv1d(block.in_channels, block.out_channels, block.kernel_size[0]).double()
    conv.weight, conv.bias = block.weight, block.bias
    return nn.Sequential(conv, nn.ReLU(), pool)


@pytest.mark.parametrize("steps, pool", [(12, 2), (11, 2), (13, 3), (9, None), (3, None)])
def test_conv_relu_pool_is_conv1d_relu_avgpool(steps, pool):
    torch.manual_seed(0)
    block = ConvReluPool(5, 7, 3, pool=pool).double()
    reference = _reference(block)
    x = torch.randn(4, steps, 5, dtype=torch.float64, requires_grad=True)
    ours = block(x)
    expected = reference(x.transpose(1, 2)).transpose(1, 2)
    assert ours.shape == expected.shape == (4, block.output_steps(steps), 7)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    g = torch.randn_like(ours)
    params = [x, block.weight, block.bias]
    grads = torch.autograd.grad((ours * g).sum(), params)
    ref_grads = torch.autograd.grad((expected * g).sum(), params)
    for name, a, b in zip(["input", "weight", "bias"], grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=lambda m: f"{name} gradient: {m}")
    assert torch.count_nonzero(grads[1]) > 0  # some units were active, so the test saw gradients


def test_conv_relu_pool_hand_written_backward_passes_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    for pool in (2, 8):  # pairs with a dropped remainder, and the mean over all eight steps
        assert torch.autograd.gradcheck(lambda *a: _ConvReluPool.apply(*a, pool), (x, weight, bias))


def test_conv_relu_pool_without_input_gradient_and_on_strided_input():
    torch.manual_seed(0)
    block = ConvReluPool(5, 7, 3, pool=2)
    channels_first = torch.randn(4, 5, 12)
    x = channels_first.transpose(1, 2)  # a non-contiguous view, as data never needs a gradient
    out = block(x)
    torch.testing.assert_close(out, _reference(block).float()(channels_first).transpose(1, 2))
    out.sum().backward()
    assert block.weight.grad.shape == block.weight.shape and block.bias.grad.shape == (7,)
    assert block.weight.grad.abs().sum() > 0


def test_conv_relu_pool_rejects_too_short_input():
    block = ConvReluPool(5, 7, 3, pool=2)
    assert block.output_steps(4) == 1 and block.output_steps(3) == 0
    with pytest.raises(ValueError, match="input of 3 steps is too short"):
        block(torch.randn(2, 3, 5))
    assert "pool=all steps" in repr(ConvReluPool(5, 7, 3, pool=None))
