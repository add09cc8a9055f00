"""The `download` stage: the archive (or ``$ECGPIPE_ARCHIVE``), checked, its records extracted."""
from __future__ import annotations

import logging
from pathlib import Path

from ecgpipe.core.errors import ArchiveError
from ecgpipe.data.archive import extract_records, obtain_archive, verify_archive
from ecgpipe.params import DownloadParams

log = logging.getLogger(__name__)


def run_download(params: DownloadParams, records_dir: Path, download_dir: Path) -> None:
    """The `download` stage: archive from $ECGPIPE_ARCHIVE or the network, checked, extracted."""
    path, downloaded = obtain_archive(params.url, download_dir, retries=params.retries, timeout_s=params.timeout_s)
    log.info("checking %s", path)
    try:
        summary = verify_archive(path, params.sha256)
    except ArchiveError:
        if downloaded:  # our own download is bad: fetch afresh next time
            path.unlink(missing_ok=True)
        raise
    count = extract_records(summary, records_dir)
    log.info("extracted %d files of %d records into %s", count, len(summary.labels), records_dir)
