import copy
import re

import pytest
import yaml

from ecgpipe.core.errors import ParamsError
from ecgpipe.params import load_params, parse_params
from tests.conftest import ROOT


def test_project_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.spectrogram.classes == ["N", "A"]
    assert (params.spectrogram.nperseg, params.spectrogram.noverlap) == (32, 4)
    assert params.chunk.size == 40
    assert params.split.train == 0.8 and params.split.seed == 12345


def test_four_classes_accepted(small_params):
    small_params["spectrogram"]["classes"] = ["N", "A", "O", "~"]
    assert parse_params(small_params).spectrogram.classes == ["N", "A", "O", "~"]


def test_af_against_the_rest_accepted(small_params):
    small_params["spectrogram"]["classes"] = ["rest", "A"]
    assert parse_params(small_params).spectrogram.classes == ["rest", "A"]


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("chunk", "size", -40, "chunk.size: expected a positive number of windows, got -40"),
        ("chunk", "size", "40", "chunk.size: expected an integer, got '40'"),
        ("spectrogram", "noverlap", 32, "spectrogram.noverlap: expected 0 <= noverlap < nperseg (32), got 32"),
        ("spectrogram", "classes", ["N", "X"], "spectrogram.classes: expected labels from ['N', 'A', 'O', '~'], or 'rest' for all others, got 'X'"),
        ("spectrogram", "stats_dtype", "float16", "spectrogram.stats_dtype: expected one of 'float32', 'float64'"),
        ("split", "test", 0.1, "split.train + split.val + split.test: expected fractions that sum to 1, got 1.1"),
        ("split", "stratify", "yes", "split.stratify: expected true or false, got 'yes'"),
        ("download", "sha256", "abc", "download.sha256: expected null or 64 hexadecimal digits"),
        ("train", "eval_batch_size", 0, "train.eval_batch_size: expected a positive integer, got 0"),
        # accepted once, then a stage crashed, blew up memory or registered nonsense
        ("spectrogram", "classes", ["A"], "spectrogram.classes: expected at least two labels (a classifier needs two "
         "classes), got ['A']"),
        ("spectrogram", "max_length", 100_000_000, "spectrogram.max_length: expected from min_length (1000) to 60,000 "
         "samples (every recording is padded to it in memory), got 100000000"),
        ("spectrogram", "classes", ["rest", "N", "A", "O", "~"], "spectrogram.classes: expected 'rest' beside fewer "
         "than all of ['N', 'A', 'O', '~'] (it holds the labels not listed), got ['rest', 'N', 'A', 'O', '~']"),
        ("spectrogram", "flat_records", "keep", "spectrogram.flat_records: expected one of 'refuse', 'drop'"),
        ("balance", "seed", -1, "balance.seed: expected a seed from 0 to 4294967295, got -1"),
        ("split", "seed", 2**40, "split.seed: expected a seed from 0 to 4294967295, got 1099511627776"),
        ("evaluate", "bootstrap_seed", -5, "evaluate.bootstrap_seed: expected a seed from 0 to 4294967295, got -5"),
        ("evaluate", "confidence", float("nan"), "evaluate.confidence: expected a finite number, got nan"),
        ("report", "registered_model", "bad/name:1", "report.registered_model: expected a name of letters, digits, "
         "'_', '.' and '-' (MLflow's registry refuses '/' and ':' in names), got 'bad/name:1'"),
    ],
)
def test_invalid_values_name_the_key(small_params, section, key, value, message):
    small_params[section][key] = value
    with pytest.raises(ParamsError) as info:
        parse_params(small_params)
    assert message in str(info.value)


def test_experiment_lr_schedule_is_checked(small_params):
    entry = small_params["experiments"]["mean_spectrum-chunked"]
    entry["lr_schedule"] = "step"
    with pytest.raises(ParamsError, match=r"experiments\.mean_spectrum-chunked\.lr_schedule: expected one of 'constant', 'cosine', got 'step'"):
        parse_params(small_params)
    del entry["lr_schedule"]  # no silent default: every experiment states its schedule
    with pytest.raises(ParamsError, match=r"experiments\.mean_spectrum-chunked\.lr_schedule: missing"):
        parse_params(small_params)


def test_unknown_and_missing_keys(small_params):
    small_params["chunk"]["sise"] = 40
    with pytest.raises(ParamsError, match=r"chunk\.sise: expected one of the known keys \['seed', 'size'\]"):
        parse_params(small_params)
    del small_params["chunk"]["sise"], small_params["chunk"]["size"]
    with pytest.raises(ParamsError, match=r"chunk\.size: missing \(expected an integer\)"):
        parse_params(small_params)
    del small_params["chunk"]
    with pytest.raises(ParamsError, match=r"params: chunk: missing"):
        parse_params(small_params)


def test_file_errors_name_the_file(tmp_path, small_params):
    with pytest.raises(ParamsError, match="no such parameters file"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "params.yaml"
    small_params["split"]["seed"] = 1.5
    bad.write_text(yaml.safe_dump(small_params))
    with pytest.raises(ParamsError, match=rf"{bad}: params: split.seed: expected an integer, got 1.5"):
        load_params(bad)


def test_raw_signal_models_go_with_the_random_crop_loader_and_a_crop(small_params):
    experiments = small_params["experiments"]
    experiments["raw"] = {"model": "raw_resnet", "loader": "random_crop", "crop_samples": 900, "epochs": 1,
                          "lr": 0.01, "lr_schedule": "cosine"}
    assert parse_params(small_params).experiment("raw").raw_signal
    cases = [
        ({"loader": "chunked"}, "experiments.raw.loader: expected random_crop for model raw_resnet"),
        ({"crop_samples": 32}, "experiments.raw.crop_samples: expected at least 64 samples"),
        ({"crop_samples": None}, "experiments.raw.crop_samples: expected at least 64 samples"),
        # spectrogram.min_length is 1000: a recording of 1000 samples could not give a crop of 1001
        ({"crop_samples": 1001}, "experiments.raw.crop_samples: expected at most spectrogram.min_length (1000)"),
    ]
    for change, message in cases:
        bad = copy.deepcopy(small_params)
        bad["experiments"]["raw"].update(change)
        with pytest.raises(ParamsError, match=re.escape(message)):
            parse_params(bad)
    # a spectrogram network may read random crops too: its crop is the span of one chunk
    good = copy.deepcopy(small_params)
    good["experiments"]["mean_spectrum-chunked"].update(loader="random_crop")
    parsed = parse_params(good)
    # nperseg 32, a step of 28 samples, chunks of 8 windows
    assert parsed.crop_span(parsed.experiment("mean_spectrum-chunked")) == 32 + (8 - 1) * 28
    for loader in ("random_crop", "chunked"):
        bad = copy.deepcopy(small_params)
        bad["experiments"]["mean_spectrum-chunked"].update(loader=loader, crop_samples=900)
        with pytest.raises(ParamsError, match=re.escape("crop_samples: expected no crop_samples for spectrogram model")):
            parse_params(bad)


def test_robustness_options_are_checked_by_key(small_params):
    experiments = small_params["experiments"]
    robust = {"model": "torch_lstm", "loader": "random_crop", "epochs": 1, "lr": 0.01, "lr_schedule": "cosine",
              "conditioning": {"highpass_hz": 0.5, "lowpass_hz": 40, "amplitude": "mad"}, "log_floor": 0.001,
              "augment": {"gain": [0.5, 2.0], "noise_snr_db": [10, 40], "stretch": 0.1}}
    experiments["robust"] = robust
    parsed = parse_params(small_params).experiment("robust")
    assert parsed.robust and parsed.conditioning.lowpass_hz == 40.0 and parsed.augment.gain == [0.5, 2.0]
    cases = [
        ({"loader": "random_chunk"}, "experiments.robust.loader: expected random_crop with conditioning"),
        ({"conditioning": {"highpass_hz": 50, "lowpass_hz": 40}}, "experiments.robust.conditioning.lowpass_hz: "
         "expected above highpass_hz (50 Hz)"),
        ({"conditioning": {"lowpass_hz": 200}}, "conditioning.lowpass_hz: expected below the Nyquist frequency (150 Hz)"),
        ({"conditioning": {"amplitude": "rms"}}, "conditioning.amplitude: expected one of 'none', 'mad'"),
        ({"log_floor": 0}, "experiments.robust.log_floor: expected null or a positive floor"),
        ({"augment": {"gain": [2.0, 0.5]}}, "experiments.robust.augment.gain: expected null or [low, high]"),
        ({"augment": {"probability": 0}}, "experiments.robust.augment.probability: expected a probability"),
        ({"augment": {"stretch": 0.6}}, "experiments.robust.augment.stretch: expected null or a fraction"),
        ({"augment": {"jitter": 1}}, "experiments.robust.augment.jitter: expected one of the known keys"),
    ]
    for change, message in cases:
        bad = copy.deepcopy(small_params)
        bad["experiments"]["robust"] = {**robust, **change}
        with pytest.raises(ParamsError, match=re.escape(message)):
            parse_params(bad)
    # a chunk's span (228 samples here) stretched by up to 10% needs ceil(227 x 1.1) + 2 = 252 samples: more than min_length 240
    bad = copy.deepcopy(small_params)
    bad["spectrogram"]["min_length"] = 240
    with pytest.raises(ParamsError, match=re.escape("experiments.robust.augment.stretch: expected a stretch whose "
                                                    "crop (252 samples) fits spectrogram.min_length (240)")):
        parse_params(bad)
    bad = copy.deepcopy(small_params)
    bad["spectrogram"]["scaling"] = "density"
    with pytest.raises(ParamsError, match=re.escape("spectrogram.scaling: expected spectrum for experiment robust")):
        parse_params(bad)
    bad = copy.deepcopy(small_params)
    bad["experiments"]["robust"] = {"model": "raw_resnet", "loader": "random_crop", "crop_samples": 900, "epochs": 1,
                                    "lr": 0.01, "lr_schedule": "cosine", "log_floor": 0.001}
    with pytest.raises(ParamsError, match=re.escape("experiments.robust.log_floor: expected null for a raw-signal model")):
        parse_params(bad)


def test_shifts_are_checked_by_key(small_params):
    small_params["evaluate"] = {"shifts": {"gain_2x": {"kind": "gain", "factor": 2.0},
                                           "band": {"kind": "bandpass", "low_hz": 0.5, "high_hz": 40}}}
    assert parse_params(small_params).evaluate.shifts["band"].high_hz == 40.0
    cases = [
        ({"g": {"kind": "gain"}}, "evaluate.shifts.g.factor: missing (expected a number)"),
        ({"g": {"kind": "gain", "factor": 2, "hz": 3}}, "evaluate.shifts.g.hz: expected one of the known keys ['factor', 'kind'], got 'an unknown key'"),
        ({"g": {"kind": "tilt"}}, "evaluate.shifts.g.kind: expected one of 'gain'"),
        ({"b": {"kind": "bandpass", "low_hz": 40, "high_hz": 1}}, "evaluate.shifts.b.high_hz: expected above low_hz"),
        ({"r": {"kind": "resample", "hz": -1}}, "evaluate.shifts.r.hz: expected a positive number"),
        ({"a+b": {"kind": "gain", "factor": 2}}, "evaluate.shifts.a+b: expected a name of letters"),
    ]
    for shifts, message in cases:
        bad = copy.deepcopy(small_params)
        bad["evaluate"]["shifts"] = shifts
        with pytest.raises(ParamsError, match=re.escape(message)):
            parse_params(bad)


@pytest.mark.parametrize("shift, message", [
    ({"kind": "bandpass", "low_hz": 0.5, "high_hz": 200}, "evaluate.shifts.s.high_hz: expected below the Nyquist "
     "frequency of the 300 Hz recordings (150 Hz), got 200.0"),
    ({"kind": "mains", "hz": 150, "mv": 0.1}, "evaluate.shifts.s.hz: expected below the Nyquist frequency"),
    ({"kind": "resample", "hz": 1e9}, "evaluate.shifts.s.hz: expected a rate from 50 to 2000 Hz (ECG devices record "
     "at 100-1,000 Hz; each recording is resampled in memory), got 1000000000.0"),
    ({"kind": "resample", "hz": 10}, "evaluate.shifts.s.hz: expected a rate from 50 to 2000 Hz"),
    ({"kind": "white_noise", "snr_db": float("nan")}, "evaluate.shifts.s.snr_db: expected a finite number, got nan"),
])
def test_shifts_that_would_crash_or_exhaust_memory_are_refused(small_params, shift, message):
    small_params["evaluate"]["shifts"] = {"s": shift}
    with pytest.raises(ParamsError, match=re.escape(message)):
        parse_params(small_params)


def test_a_non_finite_learning_rate_is_refused(small_params):
    small_params["experiments"]["mean_spectrum-chunked"]["lr"] = float("inf")
    with pytest.raises(ParamsError, match=re.escape("experiments.mean_spectrum-chunked.lr: expected a finite number, "
                                                    "got inf")):
        parse_params(small_params)
    small_params["experiments"]["mean_spectrum-chunked"]["lr"] = yaml.safe_load("lr: .inf")["lr"]  # YAML's spelling
    with pytest.raises(ParamsError, match="expected a finite number, got inf"):
        parse_params(small_params)


def test_bfloat16_is_refused_for_networks_whose_backward_autocast_cannot_reach(small_params):
    """Issue 41: the hand-written conv, rnn and lstm compute their gradients in float32 themselves, and
    bfloat16 autocast crashed them in the first backward step; params.yaml says so at once."""
    small_params["experiments"]["mean_spectrum-chunked"]["precision"] = "bfloat16"
    assert parse_params(small_params).experiments["mean_spectrum-chunked"].precision == "bfloat16"
    small_params["experiments"]["conv-chunked"] = {"model": "conv", "loader": "chunked", "epochs": 1, "lr": 0.01,
                                                  "lr_schedule": "constant", "precision": "bfloat16"}
    with pytest.raises(ParamsError, match=r"experiments.conv-chunked.precision: expected float32 for model conv \(its "
                                          r"backward is written by hand in float32; bfloat16 trains \['fully_connected', "
                                          r"'mean_spectrum', 'raw_resnet', 'torch_lstm'\]\), got 'bfloat16'"):
        parse_params(small_params)


def test_loss_weights_go_with_a_loader_that_draws_from_the_recordings(small_params):
    experiments = small_params["experiments"]
    experiments["mean_spectrum-chunked"]["class_balance"] = "loss_weights"
    with pytest.raises(ParamsError, match=re.escape("experiments.mean_spectrum-chunked.class_balance: expected "
                                                    "oversample for the chunked loader")):
        parse_params(small_params)
    experiments["mean_spectrum-chunked"]["loader"] = "random_chunk"
    assert parse_params(small_params).experiment("mean_spectrum-chunked").class_balance == "loss_weights"
    experiments["mean_spectrum-chunked"]["class_balance"] = "undersample"
    with pytest.raises(ParamsError, match=re.escape("experiments.mean_spectrum-chunked.class_balance: expected one of")):
        parse_params(small_params)
