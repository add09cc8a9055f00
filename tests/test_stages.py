"""The data stages' functions on synthetic records: outputs, data card, and clean failures."""
import shutil
import subprocess
import sys

import pytest
import scipy.io
import torch
import yaml

from ecgpipe.core.errors import RecordError
from ecgpipe.core.io import load_tensors, read_json
from ecgpipe.params import parse_params
from ecgpipe.pipeline.balance import run_balance
from ecgpipe.pipeline.chunk import run_chunk
from ecgpipe.pipeline.signals import run_signals
from ecgpipe.pipeline.spectrogram import run_spectrogram
from ecgpipe.pipeline.split import run_split
from ecgpipe.pipeline.stage import RESTORE_HINT
from tests.conftest import ROOT


def _run_all(params, records_dir, tmp_path):
    spec = tmp_path / "spectrogram"
    card = run_spectrogram(params.spectrogram, records_dir, spec, tmp_path / "metrics" / "spectrogram.json")
    split = run_split(params.split, spec, tmp_path / "split.json")
    balance = run_balance(params.balance, spec, tmp_path / "split.json", tmp_path / "balance.json")
    chunks = run_chunk(params.chunk, spec, tmp_path / "split.json", tmp_path / "balance.json",
                       tmp_path / "chunks", tmp_path / "metrics" / "chunk.json")
    run_signals(records_dir, spec, tmp_path / "signals.pt")
    return card, split, balance, chunks


@pytest.mark.parametrize("classes", [["N", "A"], ["N", "A", "O", "~"]])
def test_stages_on_synthetic_records(records_dir, tmp_path, small_params, classes):
    small_params["spectrogram"]["classes"] = classes
    params = parse_params(small_params)
    card, split, balance, chunks = _run_all(params, records_dir, tmp_path)

    reference = dict(line.split(",") for line in (records_dir / "REFERENCE.csv").read_text().split())
    lengths = {p.stem: len(scipy.io.loadmat(p)["val"][0]) for p in records_dir.glob("*.mat")}
    kept = sorted(r for r, label in reference.items() if label in classes and lengths[r] >= 1000)
    assert card["n_records"] == len(kept) == sum(card["class_counts"].values())
    assert list(card["class_counts"]) == classes
    assert card["n_bins"] == 17
    assert card["windows"]["min"] == (min(lengths[r] for r in kept) - 32) // 28
    assert abs(card["mean"]) < 1e-3 and abs(card["std"] - 1) < 0.02
    assert read_json(tmp_path / "metrics" / "spectrogram.json") == card

    tensors = load_tensors(tmp_path / "spectrogram" / "spectra.pt")
    assert tensors["spectra"].shape == (len(kept), (3000 - 4) // 28, 17)
    assert tensors["spectra"].dtype == torch.float32
    assert sorted(split["train"] + split["val"]) == kept and not split["test"]
    assert len(split["train"]) == int(0.8 * len(kept))

    for name in ("train", "val"):
        part = chunks[name]
        assert part["records"]["total"] == len(split[name])
        assert len(balance[name]) == part["balanced_records"]["total"]
        assert len(set(part["balanced_chunks"][c] for c in classes if part["chunks"][c])) == 1
        saved = load_tensors(tmp_path / "chunks" / f"{name}.pt")
        assert saved["chunks"].shape == (part["chunks"]["total"], 8, 17)
        # each chunk is the spectrogram of its recording at its start window
        for i in (0, len(saved["chunks"]) - 1):
            row, start = saved["records"][i], saved["starts"][i]
            assert torch.equal(saved["chunks"][i], tensors["spectra"][row, start : start + 8])
            assert start + 8 <= tensors["windows"][row]
        assert len(saved["balanced"]) == part["balanced_chunks"]["total"]


def test_corrupt_mat_names_the_record_and_writes_nothing(records_dir, tmp_path, small_params):
    broken = tmp_path / "records"
    shutil.copytree(records_dir, broken)
    (broken / "A00002.mat").write_bytes(b"\x00\x01garbage" * 10)
    out = tmp_path / "out"
    with pytest.raises(RecordError, match=r"A00002.mat: not a readable MATLAB record"):
        run_spectrogram(parse_params(small_params).spectrogram, broken, out, out / "metrics.json")
    assert not out.exists()


def test_missing_record_file_and_reference(records_dir, tmp_path, small_params):
    params = parse_params(small_params).spectrogram
    broken = tmp_path / "records"
    shutil.copytree(records_dir, broken)
    (broken / "A00001.mat").unlink()
    with pytest.raises(RecordError, match=r"A00001.mat: record file missing"):
        run_spectrogram(params, broken, tmp_path / "out", tmp_path / "m.json")
    (broken / "REFERENCE.csv").unlink()
    with pytest.raises(RecordError, match=r"REFERENCE.csv: missing"):
        run_spectrogram(params, broken, tmp_path / "out", tmp_path / "m.json")
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()


def test_stage_script_rejects_invalid_params(tmp_path, small_params):
    small_params["chunk"]["size"] = -40
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(small_params))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "chunk.py"), "--params", str(bad), "--spectrogram", "x",
         "--split", "x", "--balance", "x", "--out", str(tmp_path / "chunks"), "--metrics", str(tmp_path / "m.json")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {bad}: params: chunk.size: expected a positive number of windows, got -40 "
        f"({RESTORE_HINT})"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_data_stages_write_the_same_bytes_twice(archive_path, tmp_path, small_params, monkeypatch):
    """Same archive, params and code: every output of the data stages is byte-identical."""
    import hashlib

    from ecgpipe.data.archive import ARCHIVE_ENV
    from ecgpipe.pipeline.download import run_download

    monkeypatch.setenv(ARCHIVE_ENV, str(archive_path))
    params = parse_params(small_params)
    digests = []
    for run in ("first", "second"):
        out = tmp_path / run
        run_download(params.download, out / "records", out / "downloads")
        _run_all(params, out / "records", out)
        digests.append({p.relative_to(out).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
                        for p in sorted(out.rglob("*")) if p.is_file()})
    assert digests[0] == digests[1]
    assert {"spectrogram/spectra.pt", "spectrogram/records.csv", "spectrogram/preprocessing.json", "split.json",
            "balance.json", "chunks/train.pt", "chunks/val.pt", "signals.pt", "metrics/spectrogram.json",
            "metrics/chunk.json"} <= set(digests[0])
