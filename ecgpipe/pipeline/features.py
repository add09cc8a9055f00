"""The `features` stage: the rhythm features of every recording of the archive (one table for every
task: a recording's features depend on its samples only), which the ensembles' tree models read."""
from __future__ import annotations

from pathlib import Path

from ecgpipe.data.records import read_reference, read_signal
from ecgpipe.ensemble.rhythm import feature_rows, write_features


def run_features(records_dir: Path, out_path: Path) -> dict:
    """The `features` stage: ``out_path`` (a CSV) with one row per recording of REFERENCE.csv."""
    records = sorted(read_reference(records_dir))
    rows = feature_rows([read_signal(Path(records_dir) / f"{record}.mat") for record in records])
    write_features(out_path, records, rows)
    return {"records": len(records)}
