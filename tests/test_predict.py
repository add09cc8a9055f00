"""Classifying new recordings: same numbers as the evaluate stage, every input format, bad files."""
import json
import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.signal

from ecgpipe.cli import main as cli_main
from ecgpipe.core.errors import PredictError
from ecgpipe.inference.predictor import Predictor, predict_files
from ecgpipe.inference.readers import Signal, read_recording
from tests.synthetic import synthetic_signal


def _evaluated_predictions(evaluated) -> pd.DataFrame:
    return pd.read_csv(evaluated["out"] / "plots" / "confusion" / evaluated["name"] / "val.csv", dtype={"record": str})


def test_predict_equals_the_evaluate_stage(evaluated, records_dir, tmp_path, capsys):
    expected = _evaluated_predictions(evaluated)
    files = [str(records_dir / f"{r}.mat") for r in expected["record"]]
    for source in (evaluated["out"] / "predictors" / evaluated["name"], evaluated["out"] / "models" / evaluated["name"]):
        cli_main(["predict", "--model", str(source), "--out", str(tmp_path / "p.csv"), *files])
        got = pd.read_csv(tmp_path / "p.csv", dtype={"record": str})
        assert got["record"].tolist() == expected["record"].tolist()
        np.testing.assert_allclose(got["p_A"], expected["p_A"], atol=2e-6)  # the CSVs round to 6 decimals
        assert got["label"].tolist() == expected["predicted"].tolist()
        assert got["error"].isna().all()
    assert "record" in capsys.readouterr().out


def test_each_input_format_gives_the_same_answer(evaluated, records_dir, tmp_path):
    predictor = Predictor.from_folder(evaluated["out"] / "predictors" / evaluated["name"])
    record = _evaluated_predictions(evaluated)["record"].iloc[0]
    raw = scipy.io.loadmat(records_dir / f"{record}.mat")["val"][0]
    np.save(tmp_path / "sig.npy", raw)
    np.savetxt(tmp_path / "sig.csv", raw, fmt="%d", header="ecg", comments="")
    np.savetxt(tmp_path / "mv.csv", raw / 1000.0)  # in mV, no header
    answers = {
        "mat": predictor.predict_proba(read_recording(records_dir / f"{record}.mat")),
        "wfdb": predictor.predict_proba(read_recording(records_dir / f"{record}.hea")),
        "npy": predictor.predict_proba(read_recording(tmp_path / "sig.npy", fs=300)),
        "csv": predictor.predict_proba(read_recording(tmp_path / "sig.csv", fs=300)),
        "csv in mV": predictor.predict_proba(read_recording(tmp_path / "mv.csv", fs=300, gain=1)),
    }
    for name, probs in answers.items():
        np.testing.assert_allclose(probs, answers["mat"], atol=1e-6, err_msg=name)
    assert answers["mat"].sum() == pytest.approx(1.0)


def test_resampled_360_hz_recording_gives_nearly_the_same_answer(evaluated, tmp_path):
    predictor = Predictor.from_folder(evaluated["out"] / "models" / evaluated["name"])
    rng = np.random.default_rng(3)
    for label in ("N", "A"):
        original = synthetic_signal(label, 3000, rng).astype(np.float64)
        at_360 = scipy.signal.resample_poly(original, 6, 5)  # the same rhythm sampled at 360 Hz
        np.save(tmp_path / "r360.npy", at_360)
        p300 = predictor.predict_proba(Signal(original, 300))
        p360 = predictor.predict_proba(read_recording(tmp_path / "r360.npy", fs=360))
        np.testing.assert_allclose(p360, p300, atol=0.05)


def test_bad_files_get_their_error_and_the_rest_are_classified(evaluated, records_dir, tmp_path):
    predictor = Predictor.from_folder(evaluated["out"] / "models" / evaluated["name"])
    good = str(records_dir / "A00001.mat")
    short = tmp_path / "short.npy"
    np.save(short, synthetic_signal("N", 200, np.random.default_rng(0)))  # one chunk of 8 windows needs 32 + 8 * 28 = 256
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    nonfinite = tmp_path / "nan.npy"
    np.save(nonfinite, np.full(4000, np.nan))
    corrupt = tmp_path / "corrupt.mat"
    corrupt.write_bytes(b"not a matlab file at all")
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    two_columns = tmp_path / "two.csv"
    np.savetxt(two_columns, np.ones((4000, 2)), delimiter=",")
    rows = predict_files(predictor, [str(short), good, str(empty), str(nonfinite), str(corrupt), str(two_columns),
                                     str(tmp_path / "missing.mat"), str(tmp_path / "x.wav")], fs=300)
    errors = {r["record"]: r["error"] for r in rows}
    assert "shorter than one chunk: 200 samples at 300 Hz, needs at least 256" in errors["short"]
    assert "empty" in errors["empty"] or "not a readable .csv" in errors["empty"]
    assert "non-finite samples" in errors["nan"]
    assert "corrupt.mat: not a readable MATLAB record" in errors["corrupt"]
    assert "expected one column of samples, got shape (4000, 2)" in errors["two"]
    assert "missing.mat: no such file" in errors["missing"]
    assert "unknown format '.wav'" in errors["x"]
    assert errors["A00001"] == "" and rows[1]["label"] in ("N", "A")
    with pytest.raises(PredictError, match="needs its sampling rate"):
        read_recording(short)


def test_mlflow_run_has_evaluation_and_predictor(evaluated):
    import mlflow
    from mlflow.tracking import MlflowClient

    run_id = json.loads((evaluated["out"] / "models" / evaluated["name"] / "mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(evaluated["uri"])
    run = client.get_run(run_id)
    # adding the evaluation keeps the run's training duration and status
    assert (run.info.status, run.info.end_time) == (evaluated["trained"].status, evaluated["trained"].end_time)
    record = evaluated["summary"]["val"]["record"]
    assert run.data.metrics["val_record_f1_A"] == pytest.approx(record["f1"]["A"], abs=1e-6)
    assert run.data.metrics["val_record_roc_auc"] == pytest.approx(record["roc_auc"], abs=1e-6)
    assert run.data.metrics["val_chunk_balanced_accuracy"] > 0
    evaluation = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/val_confusion.json", "evaluation/confusion_val.png",
            "evaluation/val_record_per_class.json"} <= evaluation
    confusion = json.loads(open(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="evaluation/val_confusion.json", tracking_uri=evaluated["uri"])).read())
    assert confusion["record"]["counts"] and confusion["record"]["classes"] == ["N", "A"]
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/predictor")
    signal = synthetic_signal("N", 2000, np.random.default_rng(0))
    out = model.predict(pd.DataFrame({"signal": [signal.astype(float).tolist()], "fs": [300.0]}))
    assert out["label"].iloc[0] in ("N", "A") and out["error"].iloc[0] == ""


# --- bad input: never a label for a recording that was not scored, never a lost call ----------

def test_unscorable_recordings_get_an_error_never_a_label(evaluated, records_dir, tmp_path):
    predictor = Predictor.from_folder(evaluated["out"] / "models" / evaluated["name"])
    raw = scipy.io.loadmat(records_dir / "A00001.mat")["val"][0].astype(np.float64)
    spike = raw.copy()
    spike[100] = 1e30  # finite, and even within float32, but no ECG's sample
    np.save(tmp_path / "spike.npy", spike)
    np.save(tmp_path / "zeros.npy", np.zeros(3000))
    np.save(tmp_path / "constant.npy", np.full(3000, 512.0))
    np.save(tmp_path / "good.npy", raw)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warning would leak beside our own error
        rows = {r["record"]: r for r in predict_files(
            predictor, [str(tmp_path / f"{n}.npy") for n in ("spike", "zeros", "constant", "good")], fs=300)}
    assert rows["spike"]["error"].endswith("spike.npy: sample 100 is 1e+30 (in 1/1000 mV), beyond any ECG (at most 1 V): "
                                           "a corrupt sample or wrong units (--gain)")
    assert "the recording is flat (every sample is 0, as float32)" in rows["zeros"]["error"]
    assert "the recording is flat (every sample is 512, as float32)" in rows["constant"]["error"]
    for name in ("spike", "zeros", "constant"):
        assert rows[name]["label"] == "" and np.isnan(rows[name]["p_A"])
    assert rows["good"]["error"] == "" and rows["good"]["label"] in ("N", "A")
    # a gain that blows every sample past float32's range
    tiny_gain = predict_files(predictor, [str(tmp_path / "good.npy")], fs=300, gain=1e-30)[0]
    assert tiny_gain["label"] == "" and "outside any ECG (1 µV to 50 mV); check the signal's units (--gain)" in \
        tiny_gain["error"]


def test_one_bad_file_does_not_lose_the_call(evaluated, records_dir, tmp_path, capsys):
    model = str(evaluated["out"] / "models" / evaluated["name"])
    np.save(tmp_path / "strings.npy", np.array(["a", "b", "c"]))
    np.save(tmp_path / "records.npy", np.zeros(3000, dtype=[("x", "f8"), ("y", "f8")]))
    out = tmp_path / "out.csv"
    with pytest.raises(SystemExit, match="2 of 3 recordings could not be classified"):
        cli_main(["predict", "--model", model, "--fs", "300", "--out", str(out), str(tmp_path / "strings.npy"),
                  str(records_dir / "A00001.mat"), str(tmp_path / "records.npy")])
    table = pd.read_csv(out, dtype={"record": str}, keep_default_na=False)
    errors = dict(zip(table["record"], table["error"]))
    assert errors["strings"] == f"{tmp_path / 'strings.npy'}: expected real-valued samples, got dtype <U1"
    assert errors["records"].startswith(f"{tmp_path / 'records.npy'}: expected real-valued samples, got dtype [(")
    assert errors["A00001"] == "" and table.set_index("record").loc["A00001", "label"] in ("N", "A")


@pytest.mark.parametrize("option, value, expected", [
    ("--fs", "0", "argument --fs: expected a sampling rate in Hz from 50 to 10000, got '0'"),
    ("--fs", "-5", "argument --fs: expected a sampling rate in Hz from 50 to 10000, got '-5'"),
    ("--fs", "inf", "argument --fs: expected a sampling rate in Hz from 50 to 10000, got 'inf'"),
    ("--fs", "nan", "argument --fs: expected a sampling rate in Hz from 50 to 10000, got 'nan'"),
    ("--fs", "1e9", "argument --fs: expected a sampling rate in Hz from 50 to 10000, got '1e9'"),
    ("--gain", "0", "argument --gain: expected a positive number of units per mV, got '0'"),
    ("--gain", "-1", "argument --gain: expected a positive number of units per mV, got '-1'"),
])
def test_bad_options_stop_the_call_before_any_file_is_read(tmp_path, capsys, monkeypatch, option, value, expected):
    monkeypatch.setattr("ecgpipe.inference.predictor.read_recording", lambda *a, **k: pytest.fail("a file was read"))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["predict", "--model", str(tmp_path / "any"), option, value, "x.mat"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"ecgpipe predict: error: {expected}"


def test_fs_applies_to_mat_files_and_zero_is_refused(evaluated, records_dir):
    path = records_dir / "A00001.mat"
    assert read_recording(path).fs == 300.0 and read_recording(path, fs=360.0).fs == 360.0
    predictor = Predictor.from_folder(evaluated["out"] / "models" / evaluated["name"])
    with pytest.raises(PredictError, match="--fs: expected a sampling rate in Hz from 50 to 10000, got 0"):
        predict_files(predictor, [str(path)], fs=0)
    with pytest.raises(PredictError, match="--gain: expected a positive number of units per mV, got 0"):
        predict_files(predictor, [str(path)], gain=0)


def test_files_with_the_same_stem_keep_apart(evaluated, records_dir, tmp_path):
    predictor = Predictor.from_folder(evaluated["out"] / "models" / evaluated["name"])
    raw = scipy.io.loadmat(records_dir / "A00004.mat")["val"][0]
    (tmp_path / "a").mkdir()
    np.save(tmp_path / "x.npy", raw)
    np.savetxt(tmp_path / "x.csv", raw, fmt="%d")
    np.save(tmp_path / "a" / "x.npy", raw)
    paths = [str(records_dir / "A00004.mat"), str(records_dir / "A00004.hea"), str(tmp_path / "x.npy"),
             str(tmp_path / "x.csv"), str(tmp_path / "a" / "x.npy")]
    rows = predict_files(predictor, paths, fs=300)
    assert [r["record"] for r in rows] == ["A00004.mat", "A00004.hea", str(tmp_path / "x.npy"), "x.csv",
                                           str(tmp_path / "a" / "x.npy")]
    assert all(r["error"] == "" for r in rows)


def test_unknown_mlflow_models_are_one_line(evaluated, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["predict", "--model", "models:/does-not-exist@champion", "x.mat"])
    assert exit_info.value.code == (f"error: models:/does-not-exist@champion: no MLflow store at "
                                    f"sqlite:///{tmp_path}/mlflow.db; set MLFLOW_TRACKING_URI to the store that "
                                    "holds the model")
    assert list(tmp_path.iterdir()) == []  # no empty store made on the way
    monkeypatch.setenv("MLFLOW_TRACKING_URI", evaluated["uri"])
    for uri in ("models:/does-not-exist@champion", "runs:/0123456789abcdef0123456789abcdef/predictor"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["predict", "--model", uri, "x.mat"])
        message = str(exit_info.value.code)
        assert message.startswith(f"error: {uri}: not found in the MLflow store {evaluated['uri']} (")
        assert "\n" not in message


def test_out_pointing_at_a_folder_is_refused_first(tmp_path, monkeypatch):
    monkeypatch.setattr("ecgpipe.tracking.registry.load_predictor", lambda source: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["predict", "--model", "any", "--out", str(tmp_path), "x.mat"])
    assert exit_info.value.code == f"error: --out {tmp_path}: is a folder; expected the path of a file to write"


def test_empty_csv_gives_one_message_and_no_warning(evaluated, tmp_path):
    import warnings

    predictor = Predictor.from_folder(evaluated["out"] / "models" / evaluated["name"])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy or scipy warning would raise here
        (row,) = predict_files(predictor, [str(empty)], fs=300)
    assert row["error"] == f"{empty}: the recording is empty"


def _broken_model(evaluated, tmp_path, change):
    folder = tmp_path / "old-model"
    shutil.copytree(evaluated["out"] / "models" / evaluated["name"], folder)
    change(folder)
    return folder


def _edit_spec(edit):
    def change(folder):
        spec = json.loads((folder / "model.json").read_text())
        edit(spec)
        (folder / "model.json").write_text(json.dumps(spec))
    return change


def _foreign_weights(folder):

    from ecgpipe.core.io import write_tensors
    from ecgpipe.models import create_model

    write_tensors(folder / "model.pt", create_model("conv", 17, 1, n_steps=40).state_dict())


@pytest.mark.parametrize("change, expected", [
    (_edit_spec(lambda spec: spec.pop("preprocessing")),
     "model.json: written by another version of ecgpipe (no preprocessing); retrain it (dvc repro), or load it with "
     "the ecgpipe version that wrote it"),
    (_edit_spec(lambda spec: spec["preprocessing"]["featurizer"].update(new_option=1)),
     "model.json: written by another version of ecgpipe (TypeError: SpectrogramChunks.__init__() got an unexpected "
     "keyword argument 'new_option')"),
    (_edit_spec(lambda spec: spec["preprocessing"]["featurizer"].update(kind="wavelets")),
     "model.json: written by another version of ecgpipe (ValueError: unknown featurizer kind 'wavelets'"),
    (_foreign_weights, "model.pt: does not match model.json's network 'mean_spectrum' (RuntimeError: Error(s) in "
                       "loading state_dict for"),
    (lambda folder: (folder / "model.pt").write_bytes((folder / "model.pt").read_bytes()[:300]),
     "model.pt: not a readable weights file ("),
    (lambda folder: (folder / "model.json").write_text('{"model": "mean'), "model.json: not valid JSON ("),
])
def test_model_folders_this_version_cannot_load_are_one_line(evaluated, tmp_path, change, expected):
    folder = _broken_model(evaluated, tmp_path, change)
    recording = tmp_path / "x.npy"
    np.save(recording, synthetic_signal("N", 2000, np.random.default_rng(0)))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["predict", "--model", str(folder), "--fs", "300", str(recording)])
    message = str(exit_info.value.code)
    assert message.startswith(f"error: {folder}/") and expected in message and "\n" not in message


# --- silent wrong answers, round two: each is now refused or said ---------------------------------

def _two_lead_record(tmp_path, first, second):
    import wfdb

    signal = np.stack([first, second], axis=1).astype(np.float64) / 1000.0  # mV
    wfdb.wrsamp("two", fs=300, units=["mV", "mV"], sig_name=["I", "II"], p_signal=signal, fmt=["16", "16"],
                adc_gain=[1000, 1000], baseline=[0, 0], write_dir=str(tmp_path))
    return tmp_path / "two.hea"


def test_a_multi_lead_record_needs_a_lead_and_says_which_it_used(evaluated, tmp_path, capsys):
    """Only lead 0 of a 2-lead record was classified, silently (swapping the leads flipped the label)."""
    rng = np.random.default_rng(3)
    normal, af = synthetic_signal("N", 3000, rng), synthetic_signal("A", 3000, rng)
    header = _two_lead_record(tmp_path, normal, af)
    predictor = Predictor.from_folder(evaluated["out"] / "predictors" / evaluated["name"])
    (row,) = predict_files(predictor, [str(header)])
    assert row["label"] == "" and row["error"] == (f"{header}: a 2-lead record (I, II); choose the lead to classify "
                                                   "with --lead NAME or INDEX")
    by_name, by_index = predict_files(predictor, [str(header)], lead="II"), predict_files(predictor, [str(header)], lead="1")
    assert by_name == by_index and by_name[0]["lead"] == "II" and by_name[0]["error"] == ""
    first = predict_files(predictor, [str(header)], lead="I")[0]
    assert first["lead"] == "I" and first["p_A"] != by_name[0]["p_A"]  # the two leads are scored apart
    # as the matching single-lead file would be
    np.save(tmp_path / "af.npy", af)
    assert by_name[0]["p_A"] == pytest.approx(predict_files(predictor, [str(tmp_path / "af.npy")], fs=300)[0]["p_A"],
                                              abs=2e-3)  # the header stores 16-bit samples of the mV values
    (bad,) = predict_files(predictor, [str(header)], lead="V1")
    assert bad["error"] == f"{header}: no lead 'V1'; expected one of its leads ['I', 'II'] or an index below 2"
    cli_main(["predict", "--model", str(evaluated["out"] / "predictors" / evaluated["name"]), "--lead", "II",
              "--out", str(tmp_path / "out.csv"), str(header)])
    assert pd.read_csv(tmp_path / "out.csv")["lead"].tolist() == ["II"]


@pytest.mark.parametrize("samples, expected", [
    (np.full(3000, 9_200_000_000_000_000_000, dtype=np.int64) + np.arange(3000) % 7,
     "the recording is flat (every sample is 9.2e+18, as float32): no signal to classify"),  # flat to the network
    (np.random.default_rng(0).integers(0, 2, 3000).astype(bool), "expected real-valued samples, got dtype bool"),
    (synthetic_signal("N", 3000, np.random.default_rng(0)) * 100_000.0,
     "median absolute value is 1.5e+06 (in 1/1000 mV), outside any ECG"),
    (synthetic_signal("N", 3000, np.random.default_rng(0)) / 100_000.0, "outside any ECG (1 µV to 50 mV)"),
    # past float32's range: the flat check's cast overflows, quietly, and the amplitude check says why
    (synthetic_signal("N", 3000, np.random.default_rng(0)) * 1e300, "(in 1/1000 mV), outside any ECG"),
])
def test_values_no_ecg_has_get_an_error_not_a_label(evaluated, tmp_path, samples, expected):
    predictor = Predictor.from_folder(evaluated["out"] / "predictors" / evaluated["name"])
    path = tmp_path / "odd.npy"
    np.save(path, samples)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an answer, not a numpy warning on the way
        (row,) = predict_files(predictor, [str(path)], fs=300)
    assert row["label"] == "" and expected in row["error"], row["error"]
    with pytest.raises(PredictError, match=re.escape(expected.split(" (")[0])):
        predictor.classify(Signal(samples, 300.0))  # the served model's path too


def test_a_csv_with_a_byte_order_mark_keeps_its_first_sample(evaluated, tmp_path):
    raw = synthetic_signal("N", 3000, np.random.default_rng(0))
    text = "\n".join(str(v) for v in raw) + "\n"
    (tmp_path / "plain.csv").write_text(text)
    (tmp_path / "bom.csv").write_text("\ufeff" + text, encoding="utf-8")
    (tmp_path / "bom_header.csv").write_text("\ufeffecg\n" + text, encoding="utf-8")
    for name in ("bom.csv", "bom_header.csv"):
        signal = read_recording(tmp_path / name, fs=300)
        assert len(signal.samples) == 3000 and signal.samples[0] == raw[0], name


def test_the_evaluate_stage_counts_af_false_alarms_on_the_rhythms_the_task_never_saw(evaluated, records_dir, tmp_path):
    """The two-class model on every O and ~ recording of the archive: eval.json's ``unseen`` section,
    MLflow's metrics and results.csv's columns say what `ecgpipe predict` says of those files."""
    from mlflow.tracking import MlflowClient

    from ecgpipe.data.records import read_reference

    reference = read_reference(records_dir)
    unseen = {r: label for r, label in reference.items() if label in ("O", "~")}
    assert set(unseen.values()) == {"O", "~"}  # the synthetic archive has both
    cli_main(["predict", "--model", str(evaluated["out"] / "predictors" / evaluated["name"]), "--out",
              str(tmp_path / "p.csv"), *[str(records_dir / f"{r}.mat") for r in unseen]])
    got = pd.read_csv(tmp_path / "p.csv", dtype={"record": str})
    got["rhythm"] = got["record"].map(unseen)
    section = json.loads((evaluated["out"] / "metrics" / evaluated["name"] / "eval.json").read_text())["unseen"]
    metrics = MlflowClient(evaluated["uri"]).get_run(evaluated["trained"].run_id).data.metrics
    assert section["refused"] == 0
    for label, mlflow_label in (("O", "O"), ("~", "noise")):
        mine = got[got["rhythm"] == label]
        assert section["recordings"][label] == len(mine)
        expected = (mine["label"] != "A").mean()
        assert section["af_specificity"][label] == pytest.approx(expected, abs=1e-6)
        low, high = section["ci"]["af_specificity"][label]
        assert low <= expected <= high and high - low < 1
        assert metrics[f"unseen_af_specificity_{mlflow_label}"] == pytest.approx(expected, abs=1e-6)
