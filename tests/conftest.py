import copy
from pathlib import Path

import pytest
import yaml

from tests.synthetic import default_set, make_records, zip_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory) -> Path:
    """An extracted synthetic records folder (48 records, all four classes)."""
    directory = tmp_path_factory.mktemp("synthetic") / "records"
    make_records(directory, *default_set())
    return directory


@pytest.fixture(scope="session")
def archive_path(records_dir, tmp_path_factory) -> Path:
    return zip_records(records_dir, tmp_path_factory.mktemp("archive") / "training2017.zip")


@pytest.fixture
def small_params() -> dict:
    """The project's params.yaml, scaled to the synthetic recordings."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["spectrogram"].update(min_length=1000, max_length=3000, batch_size=7)
    raw["chunk"]["size"] = 8
    return raw
