"""Every registered model: shapes, gradients; and the fast layers against PyTorch's reference ones."""
from pathlib import Path

import pytest
import torch
from torch import nn

from ecgpipe.models import create_model, list_models
from ecgpipe.models.networks import ConvNet, InputMajorLinear


def test_registry_has_the_notebooks_six_networks_and_the_raw_resnet():
    assert list_models() == ["conv", "fully_connected", "lstm", "mean_spectrum", "raw_resnet", "rnn", "torch_lstm"]
    with pytest.raises(ValueError, match="unknown model 'gru'; registered: \\['conv'"):
        create_model("gru", 17, 1)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("n_outputs", [1, 4])
def test_forward_shape_and_backward_reaches_every_parameter(name, n_outputs):
    torch.manual_seed(0)
    model = create_model(name, 17, n_outputs, n_steps=40)
    out = model(torch.randn(5, 40, 17))
    assert out.shape == (5, n_outputs)
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"


@pytest.mark.parametrize("samples", [64, 901, 2700, 18_286])
def test_raw_resnet_scores_any_length_from_its_minimum(samples):
    """Trained on crops, it takes any length (global average pooling): the shortest crop the
    params allow (64) up to the longest CinC recording."""
    torch.manual_seed(0)
    model = create_model("raw_resnet", 1, 4, n_steps=2700)
    x = torch.randn(2, samples, 1, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_raw_resnet_is_the_described_architecture():
    model = create_model("raw_resnet", 1, 1, n_steps=2700)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d) and m.kernel_size[0] > 1]
    assert len(convs) == 13  # the stem and two per residual block
    assert [c.out_channels for c in convs[1::2]] == [16, 32, 64, 96, 128, 128]
    assert all(c.stride == (2,) for c in convs[1::2])  # each block halves the time axis
    assert sum(p.numel() for p in model.parameters()) < 700_000


def test_conv_needs_enough_steps():
    assert ConvNet.min_steps() == 18
    create_model("conv", 17, 1, n_steps=18)(torch.randn(2, 18, 17))  # the shortest that works
    with pytest.raises(ValueError, match="conv needs chunks of at least 18 steps, got 17"):
        create_model("conv", 17, 1, n_steps=17)


def test_input_major_linear_is_linear():
    torch.manual_seed(0)
    ours = InputMajorLinear(680, 9).double()
    reference = nn.Linear(680, 9).double()
    with torch.no_grad():
        reference.weight.copy_(ours.weight.T)
        reference.bias.copy_(ours.bias)
    x = torch.randn(5, 680, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-12)
    g = torch.randn(5, 9, dtype=torch.float64)
    dx, dw, db = torch.autograd.grad((ours(x) * g).sum(), [x, ours.weight, ours.bias])
    ref_dx, ref_dw, ref_db = torch.autograd.grad((reference(x) * g).sum(), [x, reference.weight, reference.bias])
    torch.testing.assert_close(dx, ref_dx, rtol=0, atol=1e-12)
    torch.testing.assert_close(dw, ref_dw.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(db, ref_db, rtol=0, atol=1e-12)
    # nn.Linear's initialisation: uniform within 1/sqrt(in_features), weight and bias alike
    bound, linear = 680**-0.5, nn.Linear(680, 512)
    for ours_p, ref_p in ((ours.weight, linear.weight), (ours.bias, linear.bias)):
        assert ours_p.abs().max() <= bound and ref_p.abs().max() <= bound
    assert abs(float(ours.weight.detach().std()) - float(linear.weight.detach().std())) < 0.1 * bound
    assert "in_features=680, out_features=9" in repr(ours)


def test_convnet_is_the_described_architecture():
    torch.manual_seed(0)
    net = ConvNet(17, 1)
    reference = nn.Sequential(
        nn.Conv1d(17, 32, 3), nn.ReLU(), nn.AvgPool1d(2),
        nn.Conv1d(32, 64, 3), nn.ReLU(), nn.AvgPool1d(2),
        nn.Conv1d(64, 128, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(128, 1),
    )
    with torch.no_grad():
        for ours, ref in zip([net.conv1, net.conv2, net.conv3, net.out], [reference[0], reference[3], reference[6], reference[10]]):
            ref.weight.copy_(ours.weight)
            ref.bias.copy_(ours.bias)
    x = torch.randn(6, 40, 17)
    torch.testing.assert_close(net(x), reference(x.transpose(1, 2)), rtol=1e-5, atol=1e-6)


def test_torch_lstm_uses_the_last_layers_final_state():
    torch.manual_seed(0)
    net = create_model("torch_lstm", 17, 1, num_layers=2)
    x = torch.randn(3, 40, 17)
    _, (h, _) = net.recurrent(x)
    torch.testing.assert_close(net(x), net.head(h[-1]))  # not h.view(-1, 128), which mixes layers


@pytest.mark.parametrize("name", list_models())
def test_evaluation_batch_size_changes_logits_by_rounding_at_most(name):
    """train.eval_batch_size bounds memory; another batching may round a row otherwise on some CPUs
    (so it is a DVC param), but never by more than float32 rounding."""
    from ecgpipe.models.heads import predict_logits

    torch.manual_seed(0)
    model = create_model(name, 17, 1, n_steps=40)
    x = torch.randn(130, 40, 17)  # batch sizes 7, 64 and 100 each end on a part batch
    whole = predict_logits(model, x, batch_size=4096)
    for batch_size in (1, 7, 64, 100, 1024):
        torch.testing.assert_close(predict_logits(model, x, batch_size=batch_size), whole, rtol=1e-5, atol=1e-5)


def test_batch_sizes_that_can_change_outputs_are_dvc_params():
    """No value that can change an output is hidden from DVC."""
    import yaml

    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    assert "spectrogram.batch_size" in stages["spectrogram"]["params"]
    for stage in ("train", "evaluate"):
        assert "train.eval_batch_size" in stages[stage]["do"]["params"], stage
    assert "train.eval_batch_size" in stages["report"]["params"]


def test_every_model_table_entry_names_a_constructor_and_a_known_input():
    """The registry is a table (it needs no torch): each line must point at a constructor of that name in
    its module, with an input kind the loaders know."""
    import importlib

    from ecgpipe.models import MODELS
    from ecgpipe.models.registry import INPUT_KINDS

    for name, entry in MODELS.items():
        assert entry.input_kind in INPUT_KINDS, name
        assert callable(getattr(importlib.import_module(f"ecgpipe.models.{entry.module}"), name, None)), name
