"""The training loop on small hand-made tasks: it learns, and the loaders draw what they should."""
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgpipe.core.io import read_json
from ecgpipe.data.store import PREPROCESSING_FILE, Chunks
from ecgpipe.evaluation.scoring import SplitWindows, Validation
from ecgpipe.inference.featurizers import RawCrops, SpectrogramChunks
from ecgpipe.inference.preprocessing import Preprocessing
from ecgpipe.models import create_model
from ecgpipe.models.heads import loss_fn, predicted_labels, probabilities
from ecgpipe.params import ExperimentParams
from ecgpipe.pipeline.signals import run_signals
from ecgpipe.training.fit import EpochOutputs, fit
from ecgpipe.training.loaders import (LOADERS, LoaderSources, Spectrograms, chunked_batches, class_balance,
                                      random_chunk_batches)


def _separable_chunks(n: int, seed: int) -> Chunks:
    """Class 1 has more energy in bins 5-9 than class 0: learnable, not trivially."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.25).long()  # imbalanced, like the real data
    x = torch.randn(n, 24, 17, generator=g)
    x[:, :, 5:10] += 0.8 * y[:, None, None]
    minority = torch.nonzero(y == 1).ravel()
    extra = minority[torch.randint(len(minority), ((y == 0).sum() - len(minority),), generator=g)]
    return Chunks(x, y, torch.arange(n), torch.cat([torch.arange(n), extra]))


def _validation(chunks: Chunks) -> Validation:
    """Validation through the Predictor on hand-made windows, one recording each (the featurizer is
    not used: the windows are cut already)."""
    preprocessing = Preprocessing(RawCrops(300.0, chunks.x.shape[1]), ("N", "A"))
    return Validation(preprocessing, SplitWindows(chunks.x, chunks.records, chunks.balanced), chunks.y, 4096)


def test_fit_learns_a_separable_task():
    torch.manual_seed(0)
    train, val = _separable_chunks(1200, 1), _separable_chunks(400, 2)
    model = create_model("conv", 17, 1, n_steps=24)
    seen = []
    history = fit(model, chunked_batches(train, 64), _validation(val), epochs=4, lr=0.01, seed=0,
                  on_epoch=lambda epoch, metrics: seen.append(epoch))
    losses = [e["train_loss"] for e in history.epochs]
    assert seen == [1, 2, 3, 4]
    assert losses[-1] < 0.5 * losses[0]
    last = history.last()
    assert last["val_chunk_balanced_accuracy"] > 0.9 and last["val_chunk_accuracy"] > 0.9
    # one window per recording: the recording level is the chunk level
    assert last["val_record_accuracy"] == last["val_chunk_accuracy"] and last["val_record_f1_A"] > 0.8
    assert history.last()["examples_per_s"] > 0


@pytest.mark.parametrize("name", ["fully_connected", "raw_resnet"])
def test_bfloat16_autocast_learns_and_keeps_float32_weights_and_loss(name):
    """Issue 41: the forward pass under bfloat16 autocast (emulated where the CPU has no native bf16,
    so this runs anywhere); the weights, the returned logits and the loss stay float32, and the network
    still learns the separable task."""
    torch.manual_seed(0)
    if name == "fully_connected":
        train, val = _separable_chunks(1200, 1), _separable_chunks(400, 2)
        model = create_model("fully_connected", 17, 1, n_steps=24)
    else:  # a raw-signal network on 1-D "recordings": class 1 carries a 10 Hz tone
        g = torch.Generator().manual_seed(1)

        def crops(n):
            y = (torch.arange(n) % 2).long()
            x = torch.randn(n, 256, 1, generator=g) * 0.3
            x[:, :, 0] += y[:, None] * torch.sin(torch.arange(256) / 300 * 2 * torch.pi * 10)
            return Chunks(x, y, torch.arange(n), torch.arange(n))
        train, val = crops(512), crops(128)
        model = create_model("raw_resnet", 1, 1, n_steps=256)
    history = fit(model, chunked_batches(train, 64), _validation(val), epochs=4, lr=0.01, seed=0, precision="bfloat16")
    losses = [e["train_loss"] for e in history.epochs]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < 0.7 * losses[0] and history.last()["val_chunk_balanced_accuracy"] > 0.8, history.epochs
    from ecgpipe.training.fit import make_optimizer, train_step

    loss, logits = train_step(model, make_optimizer(model, 0.001), val.x[:8], val.y[:8], "bfloat16")
    assert loss.dtype == logits.dtype == torch.float32


def test_bfloat16_falls_back_to_float32_with_one_line_where_the_cpu_has_none(monkeypatch, caplog):
    import ecgpipe.training.precision as precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger=precision.__name__):
        assert precision.resolve_precision("bfloat16", cpu) == "float32"
    assert [r.getMessage() for r in caplog.records] == [
        "precision bfloat16: this cpu has no native bfloat16 (avx512_bf16 or amx_bf16); training in float32"]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("bfloat16", cpu) == "bfloat16"
    assert precision.resolve_precision("float32", cpu) == "float32"
    with pytest.raises(ValueError, match="precision: expected one of"):
        precision.resolve_precision("float16", cpu)


def test_fit_is_repeatable_on_cpu():
    def run():
        torch.manual_seed(3)
        model = create_model("mean_spectrum", 17, 1, n_steps=24)
        return fit(model, chunked_batches(_separable_chunks(300, 1), 64), _validation(_separable_chunks(100, 2)),
                   epochs=2, lr=0.01, seed=7).epochs
    first, second = run(), run()
    for a, b in zip(first, second):
        assert a["train_loss"] == b["train_loss"] and a["val_chunk_accuracy"] == b["val_chunk_accuracy"]


def test_lr_schedules():
    def rates(schedule):
        torch.manual_seed(0)
        model = create_model("mean_spectrum", 17, 1, n_steps=24)
        history = fit(model, chunked_batches(_separable_chunks(200, 1), 64), _validation(_separable_chunks(50, 2)),
                      epochs=4, lr=0.02, seed=0, lr_schedule=schedule)
        return [e["lr"] for e in history.epochs]
    assert rates("constant") == [0.02] * 4
    # cosine over 4 epochs: 0.02 * (1 + cos(pi * e / 4)) / 2 for e = 0..3
    assert rates("cosine") == pytest.approx([0.02, 0.01707107, 0.01, 0.00292893])
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'"):
        rates("linear")


def test_chunked_batches_cover_the_balanced_set_each_epoch():
    data = _separable_chunks(100, 0)
    epoch = chunked_batches(Chunks(torch.arange(100.0)[:, None, None].expand(100, 2, 1), data.y, data.records,
                                   data.balanced), batch_size=32)
    xs = torch.cat([x[:, 0, 0] for x, _ in epoch(torch.Generator().manual_seed(0))]).long()
    assert sorted(xs.tolist()) == sorted(data.balanced.tolist())


def test_random_chunks_lie_inside_each_recordings_valid_windows():
    n, padded, bins, size = 30, 50, 3, 8
    windows = torch.randint(size, padded + 1, (n,), generator=torch.Generator().manual_seed(0))
    windows[:3] = torch.tensor([size, size + 1, 3])  # exactly one chunk; two; too short for any
    # each window holds (recording, window index, 1 if inside the valid length else 0)
    row = torch.arange(n)[:, None].expand(n, padded)
    step = torch.arange(padded)[None, :].expand(n, padded)
    spectra = torch.stack([row, step, (step < windows[:, None]).long()], dim=2).float()
    labels = (torch.arange(n) % 2)
    balanced = torch.cat([torch.arange(n), torch.arange(0, n, 2)])  # some recordings twice
    loader = random_chunk_batches(Spectrograms(spectra, windows, labels, balanced), size, batch_size=7)
    starts_seen = set()
    for epoch in range(3):
        rows = []
        for x, y in loader(torch.Generator().manual_seed(epoch)):
            assert x.shape[1:] == (size, bins)
            r = x[:, 0, 0].long()
            assert torch.all(x[:, :, 2] == 1)  # every window inside the recording
            assert torch.equal(x[:, :, 1] - x[:, :1, 1], torch.arange(size).float().expand(len(x), size))
            assert torch.equal(y, labels[r])
            starts_seen.update(zip(r.tolist(), x[:, 0, 1].long().tolist()))
            rows += r.tolist()
        expected = [r for r in balanced.tolist() if windows[r] >= size]
        assert sorted(rows) == sorted(expected)  # each balanced recording once, the short one left out
    assert (1, 1) in starts_seen or (1, 0) in starts_seen
    assert {s for r, s in starts_seen if r == 0} == {0}


def test_probabilities_and_labels_binary_and_multiclass():
    binary = torch.tensor([[0.0], [2.0], [-1.0]])
    assert predicted_labels(binary).tolist() == [0, 1, 0]
    torch.testing.assert_close(probabilities(binary)[:, 1], torch.sigmoid(binary[:, 0]))
    multi = torch.tensor([[0.1, 2.0, 0.3, 0.0]])
    assert predicted_labels(multi).tolist() == [1]
    torch.testing.assert_close(probabilities(multi).sum(1), torch.ones(1))


def test_epoch_outputs_weight_each_batch_by_its_size():
    outputs = EpochOutputs()
    # binary: one logit per example; batches of 3 and 1 examples
    outputs.add(torch.tensor(0.5), torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1, 1, 0]))
    outputs.add(torch.tensor(1.5), torch.tensor([[-3.0]]), torch.tensor([0]))
    assert outputs.seen == 4
    loss, acc = outputs.loss_and_accuracy()
    assert loss == pytest.approx((0.5 * 3 + 1.5 * 1) / 4)
    assert acc == pytest.approx(2 / 4)  # right: 2.0 -> 1 and -3.0 -> 0; wrong: -1.0 -> 0 and 0.5 -> 1
    multiclass = EpochOutputs()
    multiclass.add(torch.tensor(1.0), torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]), torch.tensor([1, 2]))
    assert multiclass.loss_and_accuracy() == pytest.approx((1.0, 0.5))


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_registered_loader_draws_balanced_batches_its_featurizer_shaped(prepared, records_dir, tmp_path, name):
    """Each loader, on the synthetic pipeline's outputs: the files it names exist, its batches have
    the network input shape of the model's featurizer, and an epoch draws the classes equally."""
    params = prepared["params"]
    run_signals(records_dir, prepared["spectrogram"], tmp_path / "signals.pt")
    stage = read_json(prepared["spectrogram"] / PREPROCESSING_FILE)
    sources = LoaderSources(prepared["spectrogram"], prepared["balance"], prepared["chunks"], tmp_path / "signals.pt",
                            torch.device("cpu"), 8, params.chunk.size, params.chunk.seed)

    def featurize(signals, rows):  # a raw-signal loader hands over the signals; the others do not
        featurizer = (SpectrogramChunks.from_stage(stage, params.chunk.size) if signals is None
                      else RawCrops(300.0, 600))
        return Preprocessing(featurizer, tuple(stage["classes"]))

    loader = LOADERS[name](sources, featurize)
    assert loader.inputs and all(Path(p).is_file() for p in loader.inputs)
    shape = loader.preprocessing.featurizer.input_shape
    batches = list(loader.batches(torch.Generator().manual_seed(0)))
    assert all(x.shape[1:] == shape and len(x) == len(y) <= 8 and x.dtype == torch.float32 for x, y in batches)
    labels = torch.cat([y for _, y in batches])
    assert (labels == 0).sum() == (labels == 1).sum() > 0


def test_the_loaders_params_yaml_accepts_are_the_registered_ones():
    assert set(typing.get_args(typing.get_type_hints(ExperimentParams)["loader"])) == set(LOADERS)


def test_class_weighted_loss_is_the_weighted_mean_of_each_examples_loss():
    labels = torch.tensor([0, 2, 2, 1, 0])
    logits = torch.tensor([[2.0, 0.1, -1.0], [0.3, 0.2, 0.1], [-1.0, 0.0, 3.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    weights = torch.tensor([0.5, 2.0, 4.0])
    each = -torch.log_softmax(logits, dim=1)[torch.arange(5), labels]
    by_hand = (weights[labels] * each).sum() / weights[labels].sum()
    assert float(loss_fn(logits, labels, weights)) == pytest.approx(float(by_hand), rel=1e-6)
    # equal weights are the unweighted mean; the one-logit binary head weighs the same way
    assert float(loss_fn(logits, labels, torch.ones(3))) == pytest.approx(float(each.mean()), rel=1e-6)
    binary, y = torch.tensor([[1.5], [-0.5], [0.2]]), torch.tensor([1, 0, 0])
    each = -torch.log(torch.where(y == 1, torch.sigmoid(binary[:, 0]), 1 - torch.sigmoid(binary[:, 0])))
    w = torch.tensor([1.0, 3.0])
    assert float(loss_fn(binary, y, w)) == pytest.approx(float((w[y] * each).sum() / w[y].sum()), rel=1e-6)
    assert float(loss_fn(binary, y, torch.ones(2))) == pytest.approx(float(each.mean()), rel=1e-6)


def test_inverse_share_weights_give_each_present_class_the_same_total():
    from ecgpipe.data.balance import inverse_share_weights

    labels = np.array([0, 0, 0, 1, 3, 3])  # class 2 absent
    weights = inverse_share_weights(labels, 4)
    np.testing.assert_allclose(weights, [6 / (3 * 3), 6 / (3 * 1), 0.0, 6 / (3 * 2)])
    totals = np.bincount(labels, weights=weights[labels], minlength=4)
    np.testing.assert_allclose(totals[[0, 1, 3]], 2.0)


def test_loss_weights_draw_the_natural_mix_for_as_many_steps_as_oversampling(prepared):
    """class_balance loss_weights: an epoch draws as many recordings as the balanced epoch, each a training
    recording (no copies beyond the listing), the classes near their natural shares, the weights by hand."""
    recordings = Spectrograms.load(prepared["spectrogram"], prepared["balance"], torch.device("cpu"))
    balanced = recordings.balanced_train
    natural = torch.unique(balanced)
    labels = recordings.labels
    oversampled = class_balance(balanced, labels, 4, "oversample")
    assert oversampled.class_weights is None and torch.equal(oversampled.rows, balanced)
    weighted = class_balance(balanced, labels, 4, "loss_weights")
    counts = torch.bincount(labels[natural], minlength=4).double()
    assert len(torch.unique(weighted.rows)) == len(natural) and weighted.epoch_size == len(balanced)
    copies = len(weighted.rows) // len(natural)
    assert torch.equal(torch.bincount(weighted.rows), torch.bincount(natural.repeat(copies)))
    expected = counts.sum() / (int((counts > 0).sum()) * counts)
    torch.testing.assert_close(weighted.class_weights.double(), expected.where(counts > 0, torch.zeros(4)))

    epoch = random_chunk_batches(recordings, prepared["params"].chunk.size, 8, weighted)
    drawn = torch.cat([y for _, y in epoch(torch.Generator().manual_seed(0))])
    assert len(drawn) == len(balanced)  # every recording of the synthetic set has room for a chunk
    assert (torch.bincount(drawn, minlength=4) <= copies * counts).all()
    balanced_epoch = torch.cat([y for _, y in random_chunk_batches(recordings, prepared["params"].chunk.size, 8)(
        torch.Generator().manual_seed(0))])
    assert len(balanced_epoch) == len(drawn)
