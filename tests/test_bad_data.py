"""Bad data in the stages: flat recordings, classes with no recording, folds that empty a class, a
zip bomb. Each stops the stage that finds it with one line naming what is wrong."""
import zipfile

import numpy as np
import pytest

from ecgpipe.core.errors import ArchiveError, ParamsError, RecordError
from ecgpipe.data.archive import verify_archive
from ecgpipe.data.records import load_recordings
from ecgpipe.params import parse_params
from ecgpipe.pipeline.split import run_split
from tests.synthetic import make_records, write_record, zip_records


@pytest.fixture
def flat_records_dir(tmp_path):
    directory = tmp_path / "records"
    make_records(directory, ["N", "A", "N", "A", "N"], [2000] * 5)
    write_record(directory, "A00002", np.zeros(2000, dtype=np.int16))  # an A recording, all zero
    write_record(directory, "A00003", np.full(2000, 7, dtype=np.int16))  # a lead off at a constant level
    return directory


def test_flat_recordings_are_refused_naming_them(flat_records_dir):
    with pytest.raises(RecordError, match=r"2 flat recording\(s\), every sample equal \(a lead off\?\): A00002, A00003; "
                                          r"expected a signal\. Remove them from REFERENCE\.csv, or set "
                                          r"spectrogram\.flat_records: drop"):
        load_recordings(flat_records_dir, ["N", "A"], 1000, 3000)


def test_flat_recordings_are_dropped_when_params_say_so(flat_records_dir, caplog):
    recordings = load_recordings(flat_records_dir, ["N", "A"], 1000, 3000, flat_records="drop")
    assert recordings.record_ids == ["A00001", "A00004", "A00005"]
    assert "left out 2 flat recording(s) (spectrogram.flat_records: drop): A00002, A00003" in caplog.text


def test_a_class_without_recordings_stops_the_spectrogram_stage(tmp_path):
    """An archive with no AF recording once registered a champion with F1(A) 0."""
    directory = tmp_path / "records"
    make_records(directory, ["N", "N", "O", "N"], [2000] * 4)
    with pytest.raises(RecordError, match=r"no recording of class A \(with >= 1000 samples\) in REFERENCE\.csv; "
                                          r"expected every class of spectrogram\.classes \['N', 'A'\]"):
        load_recordings(directory, ["N", "A"], 1000, 3000)


def test_folds_that_leave_a_class_out_of_validation_are_refused(prepared, small_params, tmp_path):
    """split.folds: 60 on 39 recordings once gave a fold with no validation recording, exit 0."""
    for fold in (59, 0):  # fold 0 of 60 has every class, but folds past the smallest class's count cannot
        small_params["split"].update(folds=60, fold=fold)
        with pytest.raises(ParamsError, match=r"params: split.folds: expected at most \d+ folds \(class [NA] has \d+ "
                                              r"recordings outside the test split, and every fold needs one\), got 60"):
            run_split(parse_params(small_params).split, prepared["spectrogram"], tmp_path / "split.json")
        assert not (tmp_path / "split.json").exists()
    small_params["split"].update(folds=2, fold=1)  # few folds: every class in every split
    run_split(parse_params(small_params).split, prepared["spectrogram"], tmp_path / "split.json")


def test_a_zip_bomb_entry_is_refused_before_extraction(records_dir, tmp_path):
    archive = zip_records(records_dir, tmp_path / "training2017.zip")
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("training2017/bomb.mat", b"\0" * (8 << 20))  # 8 MiB of zeros: about 8 kB compressed
    with pytest.raises(ArchiveError, match=r"entry 'training2017/bomb\.mat' inflates to 8,388,608 bytes from [\d,]+; "
                                           r"expected at most 4,194,304 bytes and a ratio of 50:1"):
        verify_archive(archive)
