"""Faults a user can hit in the stages: interrupted writes, mixed inputs, bad params, full or
read-only disks, missing inputs. Each gets one clear line, and nothing half-written is left."""
import errno
import hashlib
import os
import runpy
import shutil
import stat
import sys

import pytest
import torch
import yaml

from ecgpipe.core import io as ecg_io
from ecgpipe.core.errors import ParamsError, StoreError
from ecgpipe.data.store import PREPROCESSING_FILE, RECORDS_FILE, SPECTRA_FILE, load_spectrogram_set
from ecgpipe.params import load_params, parse_params
from ecgpipe.pipeline.chunk import run_chunk
from ecgpipe.pipeline.spectrogram import run_spectrogram
from ecgpipe.pipeline.stage import RESTORE_HINT
from tests.conftest import ROOT


def _md5s(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _run_stage_script(name, argv, monkeypatch):
    """Run ``stages/<name>.py`` in this process as DVC would; returns its exit message."""
    monkeypatch.setattr(sys, "argv", [f"stages/{name}.py", *map(str, argv)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name="__main__")
    return str(exit_info.value.code)


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob(".*.tmp"))


# --- 3. a stage's outputs appear as one set or not at all ---------------------------------------

@pytest.mark.parametrize("fail_at", [1, 2])
def test_interrupted_spectrogram_stage_leaves_the_old_or_the_new_set(records_dir, tmp_path, small_params,
                                                                     monkeypatch, fail_at):
    two = parse_params(small_params).spectrogram
    small_params["spectrogram"]["classes"] = ["N", "A", "O", "~"]
    four = parse_params(small_params).spectrogram
    out, card = tmp_path / "spectrogram", tmp_path / "metrics" / "spectrogram.json"
    run_spectrogram(two, records_dir, out, card)
    old = _md5s(out)

    # fail the fail_at-th swap of the new outputs into place (1: the folder, 2: the data card)
    real_replace, calls = ecg_io.replace_path, []

    def interrupted(tmp, path):
        calls.append(path)
        if len(calls) == fail_at:
            raise KeyboardInterrupt("killed between renames")
        real_replace(tmp, path)

    monkeypatch.setattr(ecg_io, "replace_path", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_spectrogram(four, records_dir, out, card)
    monkeypatch.undo()

    spectrogram = load_spectrogram_set(out)  # the three files agree: never a mix
    n_classes = len(spectrogram.preprocessing["classes"])
    assert n_classes == (2 if fail_at == 1 else 4)
    if fail_at == 1:
        assert _md5s(out) == old
    assert _leftovers(tmp_path) == []


def test_chunk_stage_rejects_spectrogram_files_of_two_runs(prepared, records_dir, tmp_path, small_params):
    small_params["spectrogram"]["classes"] = ["N", "A", "O", "~"]
    mixed = tmp_path / "mixed"
    shutil.copytree(prepared["spectrogram"], mixed)
    four = tmp_path / "four"
    run_spectrogram(parse_params(small_params).spectrogram, records_dir, four, tmp_path / "card.json")
    shutil.copy(four / SPECTRA_FILE, mixed / SPECTRA_FILE)  # a new spectra.pt beside the old table
    with pytest.raises(StoreError, match=r"their records_md5 differ .*come from different spectrogram runs"):
        run_chunk(prepared["params"].chunk, mixed, prepared["split"], prepared["balance"], tmp_path / "chunks",
                  tmp_path / "chunk.json")
    assert not (tmp_path / "chunks").exists() and not (tmp_path / "chunk.json").exists()
    shutil.copy(four / PREPROCESSING_FILE, mixed / PREPROCESSING_FILE)
    shutil.copy(prepared["spectrogram"] / SPECTRA_FILE, mixed / SPECTRA_FILE)
    with pytest.raises(StoreError, match="come from different spectrogram runs"):  # same rows, other statistics
        load_spectrogram_set(mixed)


# --- 4. a chunk longer than every recording ---------------------------------------------------

def test_chunk_size_beyond_every_recording_is_an_error_and_writes_nothing(prepared, tmp_path, small_params):
    longest = int(torch.load(prepared["spectrogram"] / SPECTRA_FILE, weights_only=True)["windows"].max())
    small_params["chunk"]["size"] = longest + 1
    params = parse_params(small_params)
    with pytest.raises(ParamsError, match=rf"chunk.size: expected at most {longest} windows .* got {longest + 1}"):
        run_chunk(params.chunk, prepared["spectrogram"], prepared["split"], prepared["balance"],
                  tmp_path / "chunks", tmp_path / "chunk.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- 9. one line, not a traceback --------------------------------------------------------------

def _write_params(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a CUDA device this machine must not have")
def test_cuda_device_on_a_machine_without_one(prepared, records_dir, tmp_path, small_params, monkeypatch):
    small_params["train"]["device"] = "cuda"
    params = _write_params(tmp_path, small_params)
    name = "mean_spectrum-chunked"
    expected = ("error: params: train.device: expected a device this machine has (cpu, or auto), got 'cuda': "
                f"it has 0 CUDA device(s) ({RESTORE_HINT})")
    train = _run_stage_script("train", [
        "--params", params, "--experiment", name, "--spectrogram", prepared["spectrogram"], "--signals",
        tmp_path / "signals.pt", "--balance", prepared["balance"], "--chunks", prepared["chunks"], "--out",
        tmp_path / "model", "--metrics",
        tmp_path / "train.json", "--history", tmp_path / "history.csv", "--speed", tmp_path / "speed.json"],
        monkeypatch)
    assert train == expected
    evaluate = _run_stage_script("evaluate", [
        "--params", params, "--experiment", name, "--records", records_dir, "--spectrogram",
        prepared["spectrogram"], "--chunks", prepared["chunks"], "--model", tmp_path / "model", "--metrics",
        tmp_path / "eval.json", "--plots", tmp_path / "plots", "--predictor", tmp_path / "predictor"], monkeypatch)
    assert evaluate == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def _split_args(prepared, params, spectrogram, out):
    return ["--params", params, "--spectrogram", spectrogram, "--out", out]


def test_missing_upstream_input_is_named(prepared, tmp_path, small_params, monkeypatch):
    params = _write_params(tmp_path, small_params)
    message = _run_stage_script("split", _split_args(prepared, params, tmp_path / "nowhere", tmp_path / "split.json"),
                                monkeypatch)
    assert message == (f"error: {tmp_path / 'nowhere' / RECORDS_FILE}: missing (No such file or directory); "
                       f"run the stages that make it first (dvc repro) ({RESTORE_HINT})")


def test_read_only_output_folder_is_one_line(prepared, tmp_path, small_params, monkeypatch):
    params = _write_params(tmp_path, small_params)
    out = tmp_path / "locked" / "split.json"
    out.parent.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # root ignores permission bits: refuse as a read-only folder
        if str(path).startswith(str(out.parent)) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    message = _run_stage_script("split", _split_args(prepared, params, prepared["spectrogram"], out), monkeypatch)
    assert message == (f"error: {out}: not allowed (Permission denied); expected a folder this user can write to "
                       f"({RESTORE_HINT})")
    assert list(out.parent.iterdir()) == []


def test_full_disk_says_so_and_keeps_the_old_output(prepared, tmp_path, small_params, monkeypatch):
    out = tmp_path / "chunks"
    args = ["--params", _write_params(tmp_path, small_params), "--spectrogram", prepared["spectrogram"],
            "--split", prepared["split"], "--balance", prepared["balance"], "--out", out, "--metrics",
            tmp_path / "chunk.json"]
    shutil.copytree(prepared["chunks"], out)
    old = _md5s(out)

    def disk_full(path, tensors):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write to an open file reports it

    monkeypatch.setattr("ecgpipe.pipeline.chunk.write_tensors", disk_full)
    message = _run_stage_script("chunk", args, monkeypatch)
    assert message.startswith(f"error: the disk is full: could not write {out}")
    assert message.endswith(f"(No space left on device); free some space and run again ({RESTORE_HINT})")
    assert _md5s(out) == old and _leftovers(tmp_path) == [] and not (tmp_path / "chunk.json").exists()


# --- 10. duplicate keys -------------------------------------------------------------------------

def test_duplicate_params_key_names_the_key_and_both_lines(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("  size: 40")) + 1
    text = text.replace("  size: 40", "  size: 40\n  size: 20", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=rf"key 'size' appears twice in one mapping, on lines {first} and {first + 1}"):
        load_params(path)


# --- 11. outputs follow the user's umask ---------------------------------------------------------

def test_outputs_get_the_users_umask(records_dir, tmp_path, small_params):
    old = os.umask(0o022)
    try:
        out = tmp_path / "spectrogram"
        run_spectrogram(parse_params(small_params).spectrogram, records_dir, out, tmp_path / "m" / "card.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for path in [*out.iterdir(), tmp_path / "m" / "card.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_ctrl_c_in_a_stage_is_one_line_and_its_mlflow_run_is_killed(tmp_path):
    """Issue 40, item 11: Ctrl-C printed a traceback and marked the run FAILED."""
    import subprocess
    import sys

    import mlflow

    from tests.conftest import ROOT

    script = tmp_path / "train.py"  # a stage whose body is interrupted inside its MLflow run, as SIGINT does
    # (Python's own SIGINT handler, as under a terminal: a shell that started the tests in the background
    # made them ignore SIGINT, and this child inherits that)
    script.write_text(
        "import os, signal, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from ecgpipe.core.io import atomic_path\n"
        "from ecgpipe.pipeline.stage import run_stage\n"
        "from ecgpipe.tracking.runs import start_run\n"
        "def body(params, args):\n"
        "    with start_run('ctrl-c', args.experiment, {'lr': 0.1}, {}, system_metrics=False):\n"
        "        with atomic_path(args.out) as tmp:\n"
        "            tmp.write_text('half')\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "            time.sleep(30)\n"
        "run_stage('a stage', ['out'], body, options=['experiment'])\n")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, str(script), "--params", str(ROOT / "params.yaml"), "--out",
                           str(tmp_path / "model.pt"), "--experiment", "mean_spectrum-chunked"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": store})
    lines = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    assert lines[-1].startswith("interrupted: train@mean_spectrum-chunked; nothing written; the MLflow run ") and \
        lines[-1].endswith(" is marked KILLED")
    assert list(tmp_path.glob("*model.pt*")) == []  # nor a temporary file
    runs = mlflow.MlflowClient(store).search_runs([mlflow.MlflowClient(store).get_experiment_by_name("ctrl-c")
                                                   .experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
