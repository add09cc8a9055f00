"""The beat features of ecgpipe.ensemble.rhythm (issue 24's rhythm candidate) on synthetic
recordings whose rhythm is known: a regular sinus rhythm with P waves, an irregular one without
(as in AF), a regular one with an early beat and its pause every fourth beat (ectopy), and noise."""
import numpy as np
import pytest

from ecgpipe.ensemble import rhythm as rhythm_module

FS = 300


@pytest.fixture(scope="module")
def rhythm():
    return rhythm_module


def _wave(t: np.ndarray, centre: float, width: float, height: float) -> np.ndarray:
    return height * np.exp(-0.5 * ((t - centre) / width) ** 2)


def ecg(beat_times: np.ndarray, seconds: float = 30.0, p_waves: bool = True, seed: int = 0) -> np.ndarray:
    """Samples in 1/1000 mV: a QRS (1 mV), a T wave, optionally a P wave 0.16 s before each beat."""
    t = np.arange(int(seconds * FS)) / FS
    mv = np.zeros_like(t)
    for b in beat_times:
        mv += _wave(t, b, 0.012, 1.0) + _wave(t, b + 0.25, 0.04, 0.25)
        if p_waves:
            mv += _wave(t, b - 0.16, 0.025, 0.15)
    mv += 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return np.round(mv * 1000).astype(np.int16)


def test_the_rhythm_features_tell_regular_irregular_and_ectopic_beats_apart(rhythm):
    rng = np.random.default_rng(1)
    regular = np.arange(0.5, 29.5, 0.8)
    irregular = 0.5 + np.cumsum(rng.uniform(0.4, 1.2, 60))
    irregular = irregular[irregular < 29.5]
    ectopic = []
    t = 0.5
    for k in range(40):  # every fourth beat early by 0.25 s, the next one late by as much
        ectopic.append(t)
        t += 0.8 + (-0.25 if k % 4 == 2 else 0.25 if k % 4 == 3 else 0.0)
    ectopic = np.array([b for b in ectopic if b < 29.5])

    sinus = rhythm.rhythm_features(ecg(regular))
    af = rhythm.rhythm_features(ecg(irregular, p_waves=False))
    pvc = rhythm.rhythm_features(ecg(ectopic))

    assert sinus["beats_per_10s"] == pytest.approx(10 * len(regular) / 30, abs=0.5)
    assert sinus["rr_median"] == pytest.approx(0.8, abs=0.02)
    assert sinus["rr_cv"] < 0.02 and sinus["irregular_share"] == 0 and sinus["premature_share"] == 0
    assert af["rr_cv"] > 0.2 and af["irregular_share"] > 0.4
    assert pvc["premature_share"] > 0.15 and pvc["irregular_share"] > 0.3
    assert sinus["beat_corr_mean"] > 0.95
    # P waves are there in sinus rhythm (0.15 of the QRS) and missing without them
    assert sinus["p_wave_ratio"] > 0.08 > af["p_wave_ratio"]


def test_noise_and_too_few_beats_give_unknown_not_a_failure(rhythm):
    noise = np.round(300 * np.random.default_rng(2).standard_normal(30 * FS)).astype(np.int16)
    figures = rhythm.rhythm_features(noise)
    assert figures["power_above_40hz"] > 0.5  # white noise: most of its power is above 40 Hz
    flat_ish = rhythm.rhythm_features(ecg(np.array([1.0, 2.0]), seconds=10))
    assert np.isnan(flat_ish["rr_cv"]) and np.isnan(flat_ish["beat_corr_mean"])
    assert flat_ish["duration_s"] == pytest.approx(10.0)
    assert list(figures) == list(rhythm.FEATURE_NAMES) == list(flat_ish)  # one order, whatever the beats


def test_sample_entropy_is_low_for_a_repeating_series_and_high_for_a_random_one(rhythm):
    repeating = np.tile([0.8, 0.9, 0.7], 20)
    random = np.random.default_rng(3).uniform(0.5, 1.2, 60)
    assert rhythm._sample_entropy(repeating) < 0.1
    assert rhythm._sample_entropy(random) > 1.0
    assert np.isnan(rhythm._sample_entropy(np.full(30, 0.8)))


def test_the_features_table_gives_back_the_very_floats_it_was_written_with(rhythm, tmp_path):
    signals = [ecg(np.arange(0.5, 9.5, 0.8), seconds=10, seed=s) for s in range(3)] + [np.zeros(3000)]
    rows = rhythm.feature_rows(signals, workers=1)
    assert rows.shape == (4, len(rhythm.FEATURE_NAMES)) and np.isnan(rows[3]).any()  # no beats: unknown
    assert rows[1].tolist() == pytest.approx(list(rhythm.rhythm_features(signals[1]).values()), rel=0, abs=0,
                                             nan_ok=True)
    path = tmp_path / "features.csv"
    rhythm.write_features(path, ["r0", "r1", "r2", "flat"], rows)
    np.testing.assert_array_equal(rhythm.read_features(path, ["flat", "r0"]), rows[[3, 0]])  # NaN kept as NaN
