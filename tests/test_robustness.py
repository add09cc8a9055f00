"""Robustness to other ECG devices: signal conditioning, log spectra, training augmentation and
the device shifts of the evaluate stage, each against known inputs and outputs."""
import dataclasses

import numpy as np
import pytest
import scipy.signal
import torch
from torch.overrides import TorchFunctionMode

from ecgpipe.core.errors import ParamsError
from ecgpipe.data.signals import load_signal_set
from ecgpipe.data.store import load_spectrogram_set, read_records
from ecgpipe.evaluation.scoring import same_windows, split_windows
from ecgpipe.inference.featurizers import RawCrops, SpectrogramChunks
from ecgpipe.inference.preprocessing import Preprocessing
from ecgpipe.inference.readers import read_recording
from ecgpipe.params import parse_params
from ecgpipe.pipeline.signals import run_signals
from ecgpipe.pipeline.train import model_preprocessing, stored_signals
from ecgpipe.signal.augment import Augmentation
from ecgpipe.signal.conditioning import Conditioning
from ecgpipe.signal.shifts import (
    SHIFT_KINDS,
    BandpassShift,
    BaselineShift,
    GainShift,
    MainsShift,
    OffsetShift,
    ResampleShift,
    WhiteNoiseShift,
    shift_rng,
)
from ecgpipe.signal.spectrogram import spectrogram_of_windows
from ecgpipe.training.loaders import random_crop_batches
from tests.conftest import small_params_dict
from tests.synthetic import synthetic_signal

FS = 300.0
BAND = Conditioning(highpass_hz=0.5, lowpass_hz=40.0, amplitude="mad")


def _ecg(n=3000, seed=0, label="N") -> torch.Tensor:
    return torch.from_numpy(synthetic_signal(label, n, np.random.default_rng(seed)).astype(np.float32))


# --- conditioning ------------------------------------------------------------------------------

def test_conditioning_removes_a_constant_offset_exactly():
    x = torch.stack([_ecg(seed=s) for s in range(4)])
    high = Conditioning(highpass_hz=0.5)
    shifted = high.apply(x + 300.0, FS)
    assert torch.allclose(shifted, high.apply(x, FS), atol=1e-2)  # units of 1/1000 mV, from ~1000 peaks
    assert shifted.mean(dim=1).abs().max() < 10.0  # nothing of the 300 is left


def test_mad_normalisation_undoes_a_gain():
    x = torch.stack([_ecg(seed=s) for s in range(4)])
    for gain in (0.5, 2.0, 7.3):
        assert torch.allclose(BAND.apply(x * gain, FS), BAND.apply(x, FS), rtol=1e-4, atol=1e-3)
    # the robust scale is 1: the median absolute deviation of the output is 1 / 1.4826
    mad = BAND.apply(x, FS).abs().median(dim=1).values
    assert torch.allclose(mad, torch.full_like(mad, 1 / 1.4826), atol=0.02)


@pytest.mark.parametrize("hz", [0.1, 0.3, 2.0, 10.0, 30.0, 40.0, 60.0, 100.0])
def test_filter_response_at_chosen_frequencies(hz):
    """A sinusoid comes out scaled by the Butterworth zero-phase gain 1/(1+(fc/f)^4) x 1/(1+(f/fc)^4)."""
    filt = Conditioning(highpass_hz=0.5, lowpass_hz=40.0)
    t = torch.arange(12_000, dtype=torch.float64) / FS  # 40 s
    out = filt.apply(torch.sin(2 * np.pi * hz * t)[None, :].float(), FS)[0].double()
    middle = slice(4_000, 8_000)  # away from the edges' ringing
    amplitude = torch.linalg.lstsq(torch.stack([torch.sin(2 * np.pi * hz * t[middle]), torch.cos(2 * np.pi * hz * t[middle])], 1),
                                   out[middle, None]).solution.norm()
    expected = 1 / (1 + (0.5 / hz) ** 4) / (1 + (hz / 40.0) ** 4)
    assert float(filt.response(np.array([hz]))[0]) == pytest.approx(expected)
    assert float(amplitude) == pytest.approx(expected, abs=0.01)


def test_conditioning_off_is_the_identity_and_round_trips():
    x = _ecg()[None, :]
    assert Conditioning().is_identity and torch.equal(Conditioning().apply(x, FS), x)
    assert Conditioning.from_dict(BAND.to_dict()) == BAND and Conditioning.from_dict(None) == Conditioning()


def test_torch_spectrogram_equals_scipys():
    x = torch.stack([_ecg(n=1124, seed=s) for s in range(3)])
    ours = spectrogram_of_windows(x.double(), 32, 4, "spectrum")
    _, _, theirs = scipy.signal.spectrogram(x.double().numpy(), scaling="spectrum", nperseg=32, noverlap=4)
    assert np.allclose(ours.numpy(), theirs.transpose(0, 2, 1), rtol=1e-10, atol=1e-12)


def test_log_spectra_of_conditioned_chunks(prepared):
    """A robust spectrogram featurizer's chunk = normalised log10(scipy's spectrogram of the
    conditioned span + floor), and its normalisation is fitted to the training spans."""
    stage = load_spectrogram_set(prepared["spectrogram"]).preprocessing
    plain = SpectrogramChunks.from_stage(stage, 8)
    robust = dataclasses.replace(plain, conditioning=BAND, log_floor=1e-3)
    spans = torch.stack([_ecg(n=robust.window_samples + 500, seed=s)[:robust.window_samples] for s in range(40)])
    fitted = robust.fitted_to(spans)
    features = fitted.from_sample_windows(spans)
    assert features.shape == (40, 8, 17)
    flat = features.double().flatten(0, 1)
    assert torch.allclose(flat.mean(0), torch.zeros(17, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(flat.std(0, unbiased=False), torch.ones(17, dtype=torch.float64), atol=1e-3)
    conditioned = BAND.apply(spans, FS).double().numpy()
    _, _, sxx = scipy.signal.spectrogram(conditioned, scaling="spectrum", nperseg=32, noverlap=4)
    expected = (np.log10(sxx.transpose(0, 2, 1)[:, :8] + 1e-3) - fitted.normalisation.mean) / fitted.normalisation.std
    assert np.abs(features.numpy() - expected).max() < 1e-3  # float32 in ours, float64 in scipy's
    # saved and loaded whole; a featurizer without the options keeps its old dict
    pre = Preprocessing(fitted, ("N", "A"))
    again = Preprocessing.from_dict(pre.to_dict())
    assert again.featurizer.conditioning == BAND and again.featurizer.log_floor == 1e-3
    assert torch.equal(again.featurizer.from_sample_windows(spans), features)
    assert "conditioning" not in plain.to_dict() and "log_floor" not in plain.to_dict()


def test_plain_spectrogram_chunks_from_samples_match_the_notebook_path(prepared, records_dir):
    """The torch path (used when options are set) computes the notebook's chunks (float32 rounding)."""
    stage = load_spectrogram_set(prepared["spectrogram"]).preprocessing
    plain = SpectrogramChunks.from_stage(stage, 8)
    ids = read_records(prepared["spectrogram"])["record"]
    samples = read_recording(records_dir / f"{ids.iloc[0]}.mat").samples
    starts = plain.window_starts(len(samples))
    spans = torch.from_numpy(samples)[torch.from_numpy(starts)[:, None] + torch.arange(plain.window_samples)]
    assert torch.allclose(plain.from_sample_windows(spans.float()), plain.windows(samples), atol=1e-4)


# --- augmentation ------------------------------------------------------------------------------

ALL = Augmentation(probability=0.5, gain=[0.5, 2.0], offset=300, baseline_mv=0.5, noise_snr_db=[10, 30],
                   mains_mv=0.1, stretch=0.1, dropout_s=0.2)


def _crops(n: int, span: int, aug: Augmentation, seed=1) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.stack([torch.from_numpy(synthetic_signal("N", aug.input_samples(span), rng).astype(np.float32))
                        for _ in range(n)])


def test_augmentation_is_seeded_and_reproducible():
    x = _crops(32, 900, ALL)
    first = ALL.apply(x, torch.Generator().manual_seed(5), FS, 900)
    assert first.shape == (32, 900) and first.dtype == torch.float32
    assert torch.equal(first, ALL.apply(x, torch.Generator().manual_seed(5), FS, 900))
    assert not torch.equal(first, ALL.apply(x, torch.Generator().manual_seed(6), FS, 900))


def test_augmented_gain_stays_in_its_range_log_uniformly():
    aug = Augmentation(probability=1.0, gain=[0.5, 2.0])
    x = _crops(400, 300, aug) + 5000  # no zeros to divide by
    ratio = (aug.apply(x, torch.Generator().manual_seed(0), FS, 300) / x).median(dim=1).values
    assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 2.0 + 1e-6
    log_ratio = ratio.log()
    assert abs(float(log_ratio.mean())) < 0.05  # log-uniform on [log 0.5, log 2]: mean 0
    assert float(log_ratio.std()) == pytest.approx(np.log(4) / np.sqrt(12), rel=0.1)
    half = Augmentation(probability=0.5, gain=[0.5, 2.0])
    untouched = (half.apply(x, torch.Generator().manual_seed(0), FS, 300) == x).all(dim=1).float().mean()
    assert 0.4 < float(untouched) < 0.6  # each crop gets it with probability 0.5


def test_augmented_noise_has_the_drawn_snr():
    aug = Augmentation(probability=1.0, noise_snr_db=[20, 20])
    x = _crops(200, 900, aug)
    noise = aug.apply(x, torch.Generator().manual_seed(0), FS, 900) - x
    snr = 10 * torch.log10(x.var(dim=1) / noise.var(dim=1))
    assert float(snr.mean()) == pytest.approx(20.0, abs=0.1) and float((snr - 20).abs().max()) < 1.0
    assert abs(float(noise.mean())) < 5.0  # white noise about zero, in units of 1/1000 mV


def test_augmented_offset_wander_mains_stretch_and_dropout_keep_their_bounds():
    x = _crops(100, 600, Augmentation(stretch=0.1))
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    added = Augmentation(probability=1.0, offset=300).apply(x, gen(), FS, 600) - x[:, :600]
    offsets = added.mean(dim=1)
    assert torch.allclose(added, offsets[:, None].expand_as(added), atol=1e-3) and offsets.abs().max() <= 300
    wander = Augmentation(probability=1.0, baseline_mv=0.5, baseline_hz=[0.3, 0.3]).apply(x, gen(), FS, 600) - x[:, :600]
    assert wander.abs().max() <= 500.0 + 1e-3 and wander.abs().max() > 100
    mains = Augmentation(probability=1.0, mains_mv=0.1).apply(x, gen(), FS, 600) - x[:, :600]
    peak_hz = torch.fft.rfftfreq(600, 1 / FS)[torch.fft.rfft(mains, dim=1).abs().argmax(dim=1)]
    assert set(peak_hz.round().tolist()) <= {50.0, 60.0} and mains.abs().max() <= 100.0 + 1e-3
    ramp = torch.arange(700, dtype=torch.float32).repeat(50, 1)
    stretched = Augmentation(probability=1.0, stretch=0.1).apply(ramp, gen(), FS, 600)
    slope = stretched[:, 1:].sub(stretched[:, :-1]).mean(dim=1)
    assert slope.min() >= 0.9 - 1e-5 and slope.max() <= 1.1 + 1e-5 and slope.std() > 0.02
    flat = torch.full((50, 600), 7.0)
    dropped = Augmentation(probability=1.0, dropout_s=0.2).apply(flat, gen(), FS, 600)
    zeros = (dropped == 0).sum(dim=1)
    assert zeros.max() <= 0.2 * FS + 1 and zeros.float().mean() > 5
    for row in dropped:  # one burst: the zeros are contiguous
        idx = torch.nonzero(row == 0).flatten()
        assert len(idx) == 0 or idx[-1] - idx[0] + 1 == len(idx)


class _CountOps(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_augmentation_has_no_loop_over_crops():
    """The same number of torch operations for a batch of 2 crops as for 192: one set per batch."""
    counts = {}
    for n in (2, 192):
        x = _crops(n, 2700, ALL)
        with _CountOps() as mode:
            ALL.apply(x, torch.Generator().manual_seed(0), FS, 2700)
        counts[n] = mode.calls
    assert counts[2] == counts[192] and counts[2] < 200


def test_the_crop_loader_augments_and_conditions_reproducibly(prepared, records_dir, tmp_path):
    run_signals(records_dir, prepared["spectrogram"], tmp_path / "signals.pt")
    signals = load_signal_set(tmp_path / "signals.pt", prepared["spectrogram"])
    rows = torch.arange(len(signals.labels))
    featurizer = RawCrops(FS, 600, BAND)
    batches = random_crop_batches(signals, rows, featurizer, 16, ALL)
    first = [x for x, _ in batches(torch.Generator().manual_seed(1))]
    again = [x for x, _ in batches(torch.Generator().manual_seed(1))]
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and first[0].shape == (16, 600, 1)
    # unaugmented, the loader's crops are what scoring computes from the files (one path, two users)
    plain = random_crop_batches(signals, rows[:5], featurizer, 5)
    x, _ = next(plain(torch.Generator().manual_seed(2)))
    scored = featurizer.from_sample_windows(torch.stack([
        signals.samples[signals.offsets[r] + s : signals.offsets[r] + s + 600].float()
        for r, s in zip(*_starts_of(signals, rows[:5], 600, 2))]))
    assert torch.equal(x, scored)


def _starts_of(signals, rows, crop, seed):
    """The rows and offsets the crop loader draws with ``seed`` (its documented order of draws)."""
    generator = torch.Generator().manual_seed(seed)
    order = rows[torch.randperm(len(rows), generator=generator)]
    room = (signals.lengths[order] - crop + 1).to(torch.float64)
    offsets = (torch.rand(len(order), generator=generator, dtype=torch.float64) * room).long()
    return order.tolist(), offsets.tolist()


def test_robust_training_windows_equal_scoring_windows(prepared, records_dir, tmp_path):
    """Validation in training (from the signal store) and scoring (from the files) agree for a
    conditioned, log-spectrum featurizer fitted to the training recordings."""
    raw = small_params_dict()
    raw["experiments"]["robust"] = {"model": "torch_lstm", "loader": "random_crop", "epochs": 1, "lr": 0.01,
                                    "lr_schedule": "cosine", "conditioning": BAND.to_dict(), "log_floor": 1e-3}
    from ecgpipe.params import parse_params

    params = parse_params(raw)
    run_signals(records_dir, prepared["spectrogram"], tmp_path / "signals.pt")
    signals = load_signal_set(tmp_path / "signals.pt", prepared["spectrogram"])
    stage = load_spectrogram_set(prepared["spectrogram"]).preprocessing
    pre = model_preprocessing("robust", params.experiment("robust"), params.chunk.size, stage, signals,
                              torch.arange(10))
    assert pre.featurizer.from_samples and pre.featurizer.log_floor == 1e-3
    rows = torch.arange(10, 14)
    val = split_windows(pre, stored_signals(signals, rows.tolist(), 300.0), signals.labels, None, 0, "store")
    ids = read_records(prepared["spectrogram"])["record"].to_numpy()
    x, owner = pre.inputs([read_recording(records_dir / f"{ids[r]}.mat") for r in rows.tolist()], rows.tolist())
    # the same windows from the signal store (training's validation) and from the files (evaluation)
    assert torch.equal(owner, val.owner) and same_windows(x, val.x)


# --- device shifts -----------------------------------------------------------------------------

def test_each_shift_does_what_it_says():
    x = synthetic_signal("N", 3000, np.random.default_rng(0)).astype(np.float64)
    rng = lambda: shift_rng(1, "s", 0)  # noqa: E731
    assert np.array_equal(GainShift("gain", factor=2.0).apply(x, FS, rng())[0], 2 * x)
    assert np.array_equal(GainShift("gain", factor=1.0).apply(x, FS, rng())[0], x)
    assert np.array_equal(OffsetShift("offset", units=-300).apply(x, FS, rng())[0], x - 300)
    wander = BaselineShift("baseline", hz=0.3, mv=0.5).apply(x, FS, rng())[0] - x
    assert np.abs(wander).max() == pytest.approx(500, rel=1e-3)
    noisy = WhiteNoiseShift("white_noise", snr_db=20).apply(x, FS, rng())[0]
    assert 10 * np.log10(np.var(x) / np.var(noisy - x)) == pytest.approx(20, abs=0.3)
    hum = MainsShift("mains", hz=50, mv=0.1).apply(x, FS, rng())[0] - x
    assert np.fft.rfftfreq(3000, 1 / FS)[np.abs(np.fft.rfft(hum)).argmax()] == 50 and np.abs(hum).max() <= 100.001
    resampled, fs = ResampleShift("resample", hz=360).apply(x, FS, rng())
    assert fs == 360.0 and len(resampled) == 3600
    t = np.arange(6000) / FS
    for hz, kept in ((10, True), (100, False), (0.05, False)):
        tone = np.sin(2 * np.pi * hz * t)
        out = BandpassShift("bandpass", low_hz=0.5, high_hz=40).apply(tone, FS, rng())[0][2000:4000]
        assert (np.abs(out).max() > 0.95) == kept
    # seeded per shift and recording
    a = WhiteNoiseShift("white_noise", snr_db=20).apply(x, FS, shift_rng(1, "n", 3))[0]
    assert np.array_equal(a, WhiteNoiseShift("white_noise", snr_db=20).apply(x, FS, shift_rng(1, "n", 3))[0])
    assert not np.array_equal(a, WhiteNoiseShift("white_noise", snr_db=20).apply(x, FS, shift_rng(1, "n", 4))[0])


# one entry per registered shift kind, as params.yaml writes it: a new kind fails here until it has one
SHIFT_EXAMPLES = {
    "gain": {"factor": 0.5}, "offset": {"units": 200.0}, "baseline": {"hz": 0.3, "mv": 0.4},
    "mains": {"hz": 60.0, "mv": 0.05}, "white_noise": {"snr_db": 15.0}, "resample": {"hz": 250.0},
    "bandpass": {"low_hz": 1.0, "high_hz": 35.0},
}


def test_every_registered_shift_kind_has_an_example():
    assert sorted(SHIFT_EXAMPLES) == sorted(SHIFT_KINDS)


@pytest.mark.parametrize("kind", sorted(SHIFT_KINDS))
def test_every_registered_shift_kind_parses_applies_and_is_seeded(small_params, kind):
    """Each kind, read from params.yaml's form through the union on ``kind``, changes a recording,
    keeps it finite float64 of the length its rate implies, and draws its randomness only from the
    generator it is given."""
    small_params["evaluate"]["shifts"] = {"s": {"kind": kind, **SHIFT_EXAMPLES[kind]}}
    shift = parse_params(small_params).evaluate.shifts["s"]
    assert isinstance(shift, SHIFT_KINDS[kind])
    x = synthetic_signal("A", 3000, np.random.default_rng(0)).astype(np.float64)
    out, fs = shift.apply(x, FS, shift_rng(7, "s", 0))
    assert out.dtype == np.float64 and np.isfinite(out).all()
    assert len(out) == round(len(x) * fs / FS) and not (len(out) == len(x) and np.array_equal(out, x))
    again, _ = shift.apply(x, FS, shift_rng(7, "s", 0))
    assert np.array_equal(out, again)
    with pytest.raises(ParamsError, match=rf"evaluate\.shifts\.s\.{list(SHIFT_EXAMPLES[kind])[0]}: missing"):
        small_params["evaluate"]["shifts"] = {"s": {"kind": kind}}
        parse_params(small_params)
