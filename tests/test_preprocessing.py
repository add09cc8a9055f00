"""The preprocessing object: one path from a raw recording to network input for training batches,
evaluation and `ecgpipe predict`, for both featurizers; saved and loaded whole."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from ecgpipe.core.errors import PredictError, StoreError
from ecgpipe.core.io import load_tensors
from ecgpipe.data.signals import SignalSet, load_signal_set
from ecgpipe.data.store import Chunks, load_spectrogram_set, read_records
from ecgpipe.evaluation.scoring import Validation, same_windows, split_windows
from ecgpipe.inference.checkpoint import model_spec
from ecgpipe.inference.featurizers import FEATURIZERS, RawCrops, SpectrogramChunks, featurizer_from_dict
from ecgpipe.inference.predictor import Predictor
from ecgpipe.inference.preprocessing import Preprocessing, aggregate_by_record
from ecgpipe.inference.readers import Signal, read_recording
from ecgpipe.models import create_model
from ecgpipe.params import parse_params
from ecgpipe.pipeline.signals import run_signals
from ecgpipe.pipeline.train import model_preprocessing, stored_signals
from ecgpipe.signal.conditioning import Conditioning
from ecgpipe.signal.windows import gather_windows
from ecgpipe.training.fit import fit
from ecgpipe.training.loaders import random_crop_batches
from tests.conftest import small_params_dict
from tests.synthetic import synthetic_signal

CROP = 600


def _params(**experiments):
    raw = small_params_dict()
    raw["experiments"].update(experiments)
    return parse_params(raw)


RAW_EXPERIMENT = {"model": "raw_resnet", "loader": "random_crop", "crop_samples": CROP, "epochs": 2, "lr": 0.01,
                  "lr_schedule": "cosine"}


@pytest.fixture(scope="module")
def signals(prepared, records_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("signals") / "signals.pt"
    run_signals(records_dir, prepared["spectrogram"], path)
    return load_signal_set(path, prepared["spectrogram"])


def _val_signals(prepared, records_dir):
    val = Chunks.load(prepared["chunks"] / "val.pt", "cpu")
    rows = torch.unique_consecutive(val.records)
    ids = read_records(prepared["spectrogram"])["record"].to_numpy()
    return val, rows, [read_recording(records_dir / f"{ids[r]}.mat") for r in rows.tolist()]


def test_spectrogram_chunks_are_the_same_in_training_evaluation_and_predict(prepared, records_dir):
    params = prepared["params"]
    stage = load_spectrogram_set(prepared["spectrogram"])
    name = "mean_spectrum-chunked"
    pre = model_preprocessing(name, params.experiment(name), params.chunk.size, stage.preprocessing)
    assert isinstance(pre.featurizer, SpectrogramChunks)
    val, rows, signals = _val_signals(prepared, records_dir)

    # evaluation's path (from the files, through the object) = the chunk stage's training-time tensors
    x, owner = pre.inputs(signals, rows.tolist())
    assert torch.equal(owner, val.records) and same_windows(x, val.x)  # one recording at a time vs batched
    # the random-chunk loader's windows = the object's windows of the same recording at the same start
    size = params.chunk.size
    for row, signal in zip(rows.tolist()[:5], signals):
        one = pre.network_input(signal)
        starts = torch.arange(len(one)) * size
        from_stage = gather_windows(stage.spectra, torch.full_like(starts, row), starts, size)
        assert same_windows(one, from_stage)
    # predict: the probabilities of the recording's training-time chunks, aggregated
    torch.manual_seed(0)
    model = create_model("mean_spectrum", 17, 1, n_steps=size).eval()
    chunks = val.x[val.records == rows[0]]
    with torch.no_grad():
        _, expected = aggregate_by_record(model(chunks), torch.zeros(len(chunks), dtype=torch.long), "mean_logit")
    np.testing.assert_allclose(Predictor(model, pre).predict_proba(signals[0]), expected[0].numpy().astype(np.float64),
                               rtol=1e-5, atol=1e-6)
    # and a real mismatch is caught: other windows are not "the same" by the run-time check's tolerance
    assert not same_windows(x, val.x * 1.001) and not same_windows(x[:-1], val.x[:-1].flip(0))


def test_raw_crops_are_the_same_in_training_evaluation_and_predict(prepared, records_dir, signals):
    params = _params(**{"raw_resnet-random_crop": RAW_EXPERIMENT})
    name = "raw_resnet-random_crop"
    pre = model_preprocessing(name, params.experiment(name), params.chunk.size,
                              load_spectrogram_set(prepared["spectrogram"]).preprocessing)
    assert pre.featurizer == RawCrops(300.0, CROP)
    val, rows, recordings = _val_signals(prepared, records_dir)

    # training-time validation crops (from the signal store) = evaluation's (from the files)
    from_store = split_windows(pre, stored_signals(signals, rows.tolist(), 300.0), signals.labels, val, 0, "store")
    x, owner = pre.inputs(recordings, rows.tolist())
    assert torch.equal(owner, from_store.owner) and torch.equal(x, from_store.x)
    assert x.dtype == torch.float32 and x.shape[1:] == (CROP, 1)
    np.testing.assert_allclose(x[0, :, 0].double().numpy(), recordings[0].samples[:CROP] / 1000, rtol=1e-6)

    # a training batch: each crop is a contiguous piece of its recording, in mV, at a start in range
    train_rows = torch.tensor(json.loads(prepared["balance"].read_text())["train"])
    loader = random_crop_batches(signals, train_rows, pre.featurizer, batch_size=8)
    ids = read_records(prepared["spectrogram"])["record"].to_numpy()
    for crops, labels in loader(torch.Generator().manual_seed(0)):
        for crop, label in zip(crops[:, :, 0], labels):
            matches = [r for r in set(train_rows.tolist()) if signals.labels[r] == label]
            found = False
            for r in matches:
                samples = read_recording(records_dir / f"{ids[r]}.mat").samples
                windows = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float32) * np.float32(1e-3), CROP)
                found |= bool((windows == crop.numpy()).all(axis=1).any())
            assert found
        break


def test_crops_cover_the_whole_recording_evenly():
    crops = RawCrops(300.0, 100)
    assert crops.crop_starts(100).tolist() == [0]
    assert crops.crop_starts(101).tolist() == [0, 1]
    assert crops.crop_starts(250).tolist() == [0, 75, 150]  # three crops, the last ending at sample 250
    starts = crops.crop_starts(9_001)
    assert len(starts) == 91 and starts[0] == 0 and starts[-1] == 9_001 - 100
    assert np.all(np.diff(starts) <= 100)  # no gap between neighbours


def test_round_trip_through_model_json_for_both_featurizers(prepared):
    params = _params(**{"raw_resnet-random_crop": RAW_EXPERIMENT})
    stage = load_spectrogram_set(prepared["spectrogram"]).preprocessing
    for name in ("mean_spectrum-chunked", "raw_resnet-random_crop"):
        pre = model_preprocessing(name, params.experiment(name), params.chunk.size, stage)
        spec = json.loads(json.dumps(model_spec(name, params.experiment(name).model, pre)))  # as written to model.json
        loaded = Preprocessing.from_spec(spec)
        assert loaded.to_dict() == pre.to_dict()
        assert type(loaded.featurizer) is type(pre.featurizer)
        signal = Signal(synthetic_signal("N", 2000, np.random.default_rng(0)).astype(np.float64), 300)
        assert torch.equal(loaded.network_input(signal), pre.network_input(signal))
        assert (spec["n_steps"], spec["n_inputs"]) == pre.featurizer.input_shape


def _example_featurizers(stage: dict) -> dict:
    """One featurizer per registered kind, as a trained model would carry it (a robust variant too)."""
    chunks = SpectrogramChunks.from_stage(stage, 4)
    return {"spectrogram_chunks": [chunks, dataclasses.replace(chunks, conditioning=Conditioning(highpass_hz=0.5),
                                                                log_floor=1e-3)],
            "raw_crops": [RawCrops(300.0, 600), RawCrops(300.0, 600, Conditioning(highpass_hz=0.5, amplitude="mad"))]}


@pytest.mark.parametrize("kind", sorted(FEATURIZERS))
def test_every_registered_featurizer_round_trips_and_scores(prepared, kind):
    """Each featurizer kind: through model.json and back unchanged, windows of the declared shape
    for a recording, and a clear refusal of one too short for a single window."""
    examples = _example_featurizers(load_spectrogram_set(prepared["spectrogram"]).preprocessing)
    assert sorted(examples) == sorted(FEATURIZERS)  # a new kind fails here until it has an example
    samples = synthetic_signal("A", 3000, np.random.default_rng(1)).astype(np.float64)
    for featurizer in examples[kind]:
        loaded = featurizer_from_dict(json.loads(json.dumps(featurizer.to_dict())))
        assert type(loaded) is FEATURIZERS[kind] and loaded.to_dict() == featurizer.to_dict()
        windows = loaded.windows(samples)
        assert windows.dtype == torch.float32 and windows.shape[1:] == loaded.input_shape and len(windows) >= 1
        assert torch.isfinite(windows).all() and torch.equal(windows, featurizer.windows(samples))
        with pytest.raises(PredictError, match="shorter than one"):
            loaded.windows(samples[: loaded.min_samples - 1])
    with pytest.raises(ValueError, match="unknown featurizer kind 'wavelets'"):
        featurizer_from_dict({"kind": "wavelets"})


def test_models_saved_before_the_featurizers_still_load(prepared):
    """A model.json of the earlier layout (the spectrogram stage's settings and chunk_size)."""
    stage = load_spectrogram_set(prepared["spectrogram"]).preprocessing
    old = {"class_names": ["N", "A"], "chunk_size": 8, "preprocessing": stage}
    pre = Preprocessing.from_spec(old)
    assert pre.to_dict() == Preprocessing(SpectrogramChunks.from_stage(stage, 8), ("N", "A")).to_dict()
    assert pre.featurizer.chunk_size == 8 and pre.aggregation == "mean_logit"


def test_featurizers_refuse_what_they_cannot_score():
    crops = Preprocessing(RawCrops(300.0, 600), ("N", "A"))
    with pytest.raises(PredictError, match=r"shorter than one crop: 599 samples at 300 Hz, needs at least 600 \(2.0 s\)"):
        crops.network_input(Signal(np.arange(599.0), 300))
    with pytest.raises(PredictError, match="flat"):
        crops.network_input(Signal(np.full(900, 7.0), 300))
    with pytest.raises(PredictError, match=r"sample 899 is 1e\+300 \(in 1/1000 mV\), beyond any ECG \(at most 1 V\)"):
        crops.network_input(Signal(np.r_[100 * np.sin(np.arange(899) / 10), 1e300], 300))  # an ECG's amplitude, and a spike
    # a 600 Hz recording is resampled to the training rate: 1,200 samples become 600
    assert crops.network_input(Signal(100 * np.sin(np.arange(1200) / 10), 600)).shape == (1, 600, 1)


def test_signal_store_must_follow_the_spectrogram_records(prepared, records_dir, tmp_path):
    path = tmp_path / "signals.pt"
    run_signals(records_dir, prepared["spectrogram"], path)
    data = load_tensors(path)
    table = read_records(prepared["spectrogram"])
    assert len(data["offsets"]) == len(table) + 1 and data["samples"].dtype == torch.int16
    assert (data["offsets"].diff().numpy() == table["samples"].to_numpy()).all()
    other = tmp_path / "other"
    other.mkdir()
    (other / "records.csv").write_text(table.iloc[:-1].to_csv(index=False))
    with pytest.raises(StoreError, match="made for another .*records.csv .*rerun the signals stage"):
        load_signal_set(path, other)


def test_raw_resnet_learns_a_separable_task_from_random_crops():
    """Regular beats against irregular beats over a fibrillatory wave (the synthetic N and A)."""
    rng = np.random.default_rng(0)
    labels = torch.tensor([0, 1] * 40)
    recordings = [synthetic_signal("A" if y else "N", int(rng.integers(1500, 3000)), rng) for y in labels.tolist()]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum([len(r) for r in recordings])]))
    store = SignalSet(torch.from_numpy(np.concatenate(recordings)), offsets, labels)
    featurizer = RawCrops(300.0, 900)
    train, val = torch.arange(0, 60), torch.arange(60, 80)
    torch.manual_seed(0)
    model = create_model("raw_resnet", 1, 1, n_steps=900)
    # 8 per batch, 8 epochs: 60 steps, enough for BatchNorm's running statistics (used in eval
    # mode) to forget their initial values
    pre = Preprocessing(featurizer, ("N", "A"))
    validate = Validation(pre, split_windows(pre, stored_signals(store, val.tolist(), 300.0), labels, None, 0, "store"),
                          labels, 64)
    history = fit(model, random_crop_batches(store, train, featurizer, 8), validate,
                  epochs=8, lr=0.003, seed=0, lr_schedule="cosine")
    assert history.last()["train_loss"] < 0.5 * history.epochs[0]["train_loss"]
    assert history.last()["val_chunk_balanced_accuracy"] >= 0.9 and history.last()["val_record_accuracy"] >= 0.9


def test_random_crop_refuses_recordings_shorter_than_the_crop():
    store = SignalSet(torch.zeros(300, dtype=torch.int16), torch.tensor([0, 100, 300]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"has 100 samples, fewer than the crop \(150\)"):
        random_crop_batches(store, torch.tensor([0, 1]), RawCrops(300.0, 150), 4)
