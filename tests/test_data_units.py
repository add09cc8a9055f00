import numpy as np
import pytest
import scipy.signal
import torch

from ecgpipe.data.balance import oversample
from ecgpipe.data.card import class_counts, min_median_max
from ecgpipe.data.split import split_indices
from ecgpipe.signal.spectrogram import Normalisation, compute_spectra, fit_normalise_, window_count
from ecgpipe.signal.windows import chunk_positions, gather_windows


@pytest.fixture
def signals():
    rng = np.random.default_rng(1)
    return rng.integers(-2000, 2000, size=(13, 1500)).astype(np.int16)


# --- spectrogram ---------------------------------------------------------------------------

def test_spectra_shape_and_scipy_values(signals):
    spectra = compute_spectra(signals, nperseg=32, noverlap=4, batch_size=5)
    # scipy's own count for the padded length: (1500 - 4) // 28 = 53 windows, 17 bins
    assert spectra.shape == (13, 53, 17) and spectra.dtype == np.float32
    assert spectra.flags["C_CONTIGUOUS"]
    _, _, whole = scipy.signal.spectrogram(signals.astype(np.float32), scaling="spectrum", nperseg=32, noverlap=4)
    # batching changes nothing beyond float32 rounding (a CPU's batched FFT may round otherwise)
    np.testing.assert_allclose(spectra, whole.transpose(0, 2, 1), rtol=1e-5, atol=1e-6 * whole.max())


def test_window_count_formula():
    lengths = np.array([4004, 9000, 18286])
    # the notebook's (length - 32) // 28 gives its printed 141 / 320 / 651
    assert window_count(lengths, 32, 4).tolist() == [141, 320, 651]
    assert window_count(100, 10, 0) == 9


def test_float32_normalisation_is_the_notebooks(signals):
    spectra = compute_spectra(signals, 32, 4)
    sxx = spectra.transpose(0, 2, 1).copy(order="K")  # the notebook's (n, bins, windows) view
    view = spectra.copy().transpose(0, 2, 1)
    expected = view - np.mean(view, axis=(0, 2), keepdims=True)
    expected = expected / np.std(expected, axis=(0, 2), keepdims=True)
    stats = fit_normalise_(spectra, "float32")
    assert np.array_equal(spectra.transpose(0, 2, 1), expected)
    assert stats.mean.shape == (17,) and np.all(stats.std > 0)
    assert np.allclose(stats.mean, sxx.mean(axis=(0, 2), dtype=np.float64), rtol=1e-3)


def test_float64_normalisation_is_exact(signals):
    spectra = compute_spectra(signals, 32, 4)
    raw = spectra.astype(np.float64)
    stats = fit_normalise_(spectra, "float64")
    assert np.allclose(stats.mean, raw.mean(axis=(0, 1)), rtol=1e-12)
    assert np.allclose(stats.std, raw.std(axis=(0, 1)), rtol=1e-6)
    per_bin = spectra.astype(np.float64)
    assert np.abs(per_bin.mean(axis=(0, 1))).max() < 1e-5
    assert np.abs(per_bin.std(axis=(0, 1)) - 1).max() < 1e-5
    # the saved statistics reproduce the normalisation on new data
    again = Normalisation.from_dict(stats.to_dict()).apply_(compute_spectra(signals, 32, 4))
    assert np.allclose(again, spectra, atol=1e-5)


# --- split ---------------------------------------------------------------------------------

def test_split_disjoint_complete_deterministic():
    labels = np.array([0] * 80 + [1] * 20)
    a = split_indices(labels, 0.7, 0.2, 0.1, seed=3)
    b = split_indices(labels, 0.7, 0.2, 0.1, seed=3)
    c = split_indices(labels, 0.7, 0.2, 0.1, seed=4)
    assert [len(a[k]) for k in ("train", "val", "test")] == [70, 20, 10]
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(100))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])


def test_split_is_torch_random_split():
    labels = np.zeros(5622, dtype=int)
    ours = split_indices(labels, 0.8, 0.2, seed=12345)
    torch.manual_seed(12345)
    train, val = torch.utils.data.random_split(range(5622), [4497, 1125])
    assert ours["train"].tolist() == list(train.indices)
    assert ours["val"].tolist() == list(val.indices)
    assert len(ours["test"]) == 0


def test_stratified_split_keeps_proportions():
    labels = np.array([0] * 90 + [1] * 10)
    parts = split_indices(labels, 0.8, 0.2, seed=0, stratify=True)
    assert np.bincount(labels[parts["train"]]).tolist() == [72, 8]
    assert np.bincount(labels[parts["val"]]).tolist() == [18, 2]
    assert not set(parts["train"]) & set(parts["val"])


# --- balance -------------------------------------------------------------------------------

def test_oversample_counts_and_spread():
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 2])  # 7 / 2 / 1
    idx = oversample(labels, np.random.default_rng(0))
    assert idx[:10].tolist() == list(range(10))  # the originals first, in order
    assert np.bincount(labels[idx]).tolist() == [7, 7, 7]
    copies = np.bincount(idx, minlength=10)
    assert copies[:7].tolist() == [1] * 7
    assert sorted(copies[7:9].tolist()) == [3, 4]  # 7 of class 1 = 2 originals x 3 + 1 more
    assert copies[9] == 7


def test_oversample_already_balanced_and_seeded():
    labels = np.array([1, 0, 1, 0])
    assert oversample(labels, np.random.default_rng(0)).tolist() == [0, 1, 2, 3]
    labels = np.array([0] * 50 + [1] * 7)
    one = oversample(labels, np.random.default_rng(5))
    two = oversample(labels, np.random.default_rng(5))
    assert np.array_equal(one, two) and len(one) == 100


def test_class_counts_and_summary():
    assert class_counts(np.array([0, 2, 2]), ["N", "A", "O"]) == {"total": 3, "N": 1, "A": 0, "O": 2}
    assert min_median_max(np.array([5, 1, 4, 2])) == {"min": 1, "median": 2, "max": 5}  # lower median


# --- chunk ---------------------------------------------------------------------------------

def test_chunk_positions_and_values():
    windows = torch.tensor([85, 40, 39, 120])
    rows = torch.tensor([3, 0, 2, 1])  # a split's rows, in its order
    chunk_rows, starts = chunk_positions(rows, windows, 40)
    assert chunk_rows.tolist() == [3, 3, 3, 0, 0, 1]
    assert starts.tolist() == [0, 40, 80, 0, 40, 0]
    spectra = torch.arange(4 * 130 * 2, dtype=torch.float32).reshape(4, 130, 2)
    chunks = gather_windows(spectra, chunk_rows, starts, 40)
    assert chunks.shape == (6, 40, 2)
    for i, (r, s) in enumerate(zip(chunk_rows.tolist(), starts.tolist())):
        assert torch.equal(chunks[i], spectra[r, s : s + 40])


def test_k_fold_splits_are_disjoint_complete_stratified_and_deterministic():
    from ecgpipe.data.split import fold_indices

    rng = np.random.default_rng(0)
    labels = (rng.random(503) < 0.13).astype(np.int64)
    folds = [fold_indices(labels, 5, k, test=0.1, seed=7) for k in range(5)]
    test = folds[0]["test"]
    assert all(np.array_equal(f["test"], test) for f in folds)  # held out once, before the folds
    vals = [f["val"] for f in folds]
    assert sum(len(v) for v in vals) + len(test) == len(labels)
    assert len(np.unique(np.concatenate([*vals, test]))) == len(labels)  # disjoint and complete
    for f in folds:
        assert set(f["train"]) | set(f["val"]) | set(f["test"]) == set(range(len(labels)))
        assert not set(f["train"]) & set(f["val"])
    rest = np.setdiff1d(np.arange(len(labels)), test)
    for cls in (0, 1):  # each fold has each class's share, to within one recording
        per_fold = [int((labels[v] == cls).sum()) for v in vals]
        assert max(per_fold) - min(per_fold) <= 1
        assert sum(per_fold) == int((labels[rest] == cls).sum())
    assert all(np.array_equal(fold_indices(labels, 5, k, 0.1, 7)["val"], vals[k]) for k in range(5))
    assert not np.array_equal(fold_indices(labels, 5, 0, 0.1, 8)["val"], vals[0])


def test_fold_null_is_the_notebooks_split(records_dir, tmp_path, small_params):
    from ecgpipe.core.errors import ParamsError
    from ecgpipe.data.split import split_indices
    from ecgpipe.data.store import read_records
    from ecgpipe.params import parse_params
    from ecgpipe.pipeline.spectrogram import run_spectrogram
    from ecgpipe.pipeline.split import run_split

    params = parse_params(small_params)
    assert params.split.fold is None
    run_spectrogram(params.spectrogram, records_dir, tmp_path / "spec", tmp_path / "card.json")
    split = run_split(params.split, tmp_path / "spec", tmp_path / "split.json")
    table = read_records(tmp_path / "spec")
    expected = split_indices(table["class_index"].to_numpy(), 0.8, 0.2, 0.0, 12345)
    assert split["val"] == table["record"].to_numpy()[expected["val"]].tolist()
    small_params["split"]["fold"] = 2
    folded = run_split(parse_params(small_params).split, tmp_path / "spec", tmp_path / "split2.json")
    assert sorted(folded["train"] + folded["val"]) == sorted(split["train"] + split["val"])
    assert folded["val"] != split["val"]
    small_params["split"]["fold"] = 5
    with pytest.raises(ParamsError, match=r"split.fold: expected null or a fold from 0 to 4, got 5"):
        parse_params(small_params)


def test_calibration_holds_out_a_stratified_share_of_the_training_recordings():
    from ecgpipe.data.split import hold_out

    labels = np.array([0] * 80 + [1] * 20 + [2] * 3)
    parts = split_indices(labels, 0.8, 0.2, 0.0, 12345, stratify=True)
    held = hold_out(parts, labels, 0.1, 12345)
    assert held["val"] is parts["val"]
    # disjoint, and together the training recordings before
    assert sorted(np.concatenate([held["train"], held["calibration"]])) == sorted(parts["train"])
    train_counts = np.bincount(labels[parts["train"]], minlength=3)
    assert np.bincount(labels[held["calibration"]], minlength=3).tolist() == [
        int(0.1 * train_counts[0]), int(0.1 * train_counts[1]), 1]  # at least one of a class with two or more
    assert np.array_equal(hold_out(parts, labels, 0.1, 12345)["calibration"], held["calibration"])  # seeded
    assert not np.array_equal(hold_out(parts, labels, 0.1, 7)["calibration"], held["calibration"])
