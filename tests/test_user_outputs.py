"""Files the user names (`predict --out`, `bench --json`) and a killed stage's leftovers: nothing the
user has is lost or replaced by something else."""
import os
import stat
import threading

import pytest

from ecgpipe.core import io as ecg_io
from tests.conftest import cli_exit_message


@pytest.fixture
def no_model(monkeypatch):
    """The refusals come before the model is loaded or a benchmark runs."""
    monkeypatch.setattr("ecgpipe.tracking.registry.load_predictor", lambda source: pytest.fail("the model was loaded"))
    monkeypatch.setattr("ecgpipe.bench.train.bench_train", lambda *a, **k: pytest.fail("the benchmark ran"))
    monkeypatch.setattr("ecgpipe.bench.data.bench_data", lambda *a, **k: pytest.fail("the benchmark ran"))


def test_out_that_is_an_input_recording_is_refused(tmp_path, no_model):
    recording = tmp_path / "rec.csv"
    recording.write_text("1\n2\n3\n")
    message = cli_exit_message(["predict", "--model", "any", "--fs", "300", "--out", str(recording), str(recording)])
    assert message == f"error: --out {recording}: is one of the inputs ({recording}); choose another file to write"
    assert recording.read_text() == "1\n2\n3\n"
    # also through another name for the same file (a hard link)
    os.link(recording, tmp_path / "same.csv")
    assert "is one of the inputs" in cli_exit_message(
        ["predict", "--model", "any", "--fs", "300", "--out", str(tmp_path / "same.csv"), str(recording)])


def test_bench_json_that_is_a_folder_is_refused_and_kept(tmp_path, no_model):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    for argv in (["bench", "train", "--json", str(folder)], ["bench", "data", "--json", str(folder)]):
        assert cli_exit_message(argv) == f"error: --json {folder}: is a folder; expected the path of a file to write"
    assert (folder / "keep.txt").read_text() == "mine"


def test_a_symlink_is_written_through(tmp_path):
    target, link = tmp_path / "real.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    ecg_io.write_user_output(ecg_io.user_output(link, "--out"), "new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]  # no temporary left


def test_a_device_is_written_in_place_not_replaced():
    devnull = ecg_io.user_output("/dev/null", "--out")
    ecg_io.write_user_output(devnull, "rows\n")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # still the device, not a regular file


def test_a_full_device_is_named_and_kept(tmp_path):
    recording = tmp_path / "r.csv"
    recording.write_text("1\n2\n")
    with pytest.raises(OSError) as info:
        ecg_io.write_user_output(ecg_io.user_output("/dev/full", "--out", [recording]), "rows\n")
    assert info.value.filename == "/dev/full" and info.value.errno == 28
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo).read()))
    reader.start()
    ecg_io.write_user_output(ecg_io.user_output(fifo, "--json"), '{"a": 1}\n')
    reader.join(timeout=10)
    assert received == ['{"a": 1}\n'] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_killed_runs_temporaries_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "records"
    out.mkdir()
    (out / "A00001.mat").write_bytes(b"old")
    leftover = tmp_path / ".records.0123abcd.tmp"  # what SIGKILL mid-extraction leaves
    leftover.mkdir()
    (leftover / "A00002.mat").write_bytes(b"half")
    stranger = tmp_path / ".records.notours.tmp"  # not of our form: not ours to delete
    stranger.mkdir()
    with ecg_io.atomic_dir(out) as tmp:
        (tmp / "A00001.mat").write_bytes(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".records.notours.tmp", "records"]
    assert (out / "A00001.mat").read_bytes() == b"new"
