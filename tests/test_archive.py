import http.server
import threading
import zipfile

import pytest

from ecgpipe.core.errors import ArchiveError
from ecgpipe.data.archive import ARCHIVE_ENV, extract_records, fetch, obtain_archive, sha256_of, verify_archive
from tests.synthetic import make_records, zip_records


def test_verify_and_extract(archive_path, tmp_path):
    summary = verify_archive(archive_path, sha256_of(archive_path))
    assert summary.prefix == "training2017/" and len(summary.labels) == 48
    assert set(summary.labels.values()) == {"N", "A", "O", "~"}
    count = extract_records(summary, tmp_path / "records")
    files = sorted(p.name for p in (tmp_path / "records").iterdir())
    assert count == 97 == len(files)  # 48 x (.mat, .hea) + REFERENCE.csv
    assert "A00001.mat" in files and "REFERENCE.csv" in files


def test_local_archive_from_environment(archive_path, tmp_path, monkeypatch):
    monkeypatch.setenv(ARCHIVE_ENV, str(archive_path))
    assert obtain_archive("https://example.invalid/training2017.zip", tmp_path) == (archive_path, False)
    monkeypatch.setenv(ARCHIVE_ENV, str(tmp_path / "nope.zip"))
    with pytest.raises(ArchiveError, match=r"ECGPIPE_ARCHIVE=.*nope.zip: no such file"):
        obtain_archive("https://example.invalid/training2017.zip", tmp_path)


def test_truncated_zip(archive_path, tmp_path):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive_path.read_bytes()[: archive_path.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=r"cut.zip: not a readable zip archive .*truncated download"):
        verify_archive(cut)


def test_crc_failure(archive_path, tmp_path):
    data = bytearray(archive_path.read_bytes())
    with zipfile.ZipFile(archive_path) as zf:
        info = zf.getinfo("training2017/A00002.mat")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 5
    data[start] ^= 0xFF  # flip bits inside the compressed data
    bad = tmp_path / "bitrot.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"bitrot.zip: entry 'training2017/A00002.mat' is corrupt"):
        verify_archive(bad)


def test_zip_slip_refused(records_dir, tmp_path):
    evil = zip_records(records_dir, tmp_path / "evil.zip", extra={"training2017/../../evil.sh": b"rm -rf ~"})
    with pytest.raises(ArchiveError, match=r"refusing entry 'training2017/\.\./\.\./evil\.sh'"):
        verify_archive(evil)
    absolute = zip_records(records_dir, tmp_path / "abs.zip", extra={"/etc/cron.d/x": b"x"})
    with pytest.raises(ArchiveError, match="refusing entry '/etc/cron.d/x'"):
        verify_archive(absolute)


def test_missing_reference_and_missing_record(tmp_path):
    src = tmp_path / "src"
    make_records(src, ["N", "A"], [1200, 1200])
    (src / "REFERENCE.csv").unlink()
    with pytest.raises(ArchiveError, match="expected exactly one REFERENCE.csv, found 0"):
        verify_archive(zip_records(src, tmp_path / "noref.zip"))
    make_records(src, ["N", "A"], [1200, 1200])
    (src / "A00002.mat").unlink()
    with pytest.raises(ArchiveError, match="record A00002 is listed in REFERENCE.csv but training2017/A00002.mat is missing"):
        verify_archive(zip_records(src, tmp_path / "norec.zip"))


def test_unknown_label(tmp_path):
    src = tmp_path / "src"
    make_records(src, ["N", "A"], [1200, 1200])
    (src / "REFERENCE.csv").write_text("A00001,N\r\nA00002,X\r\n")
    with pytest.raises(Exception, match=r"REFERENCE.csv: line 2: record A00002 has label 'X', expected one of \['N', 'A', 'O', '~'\]"):
        verify_archive(zip_records(src, tmp_path / "label.zip"))


def test_sha256_mismatch(archive_path):
    with pytest.raises(ArchiveError, match="params download.sha256 expects 0000"):
        verify_archive(archive_path, "0" * 64)


def test_extraction_failure_leaves_nothing(archive_path, tmp_path, monkeypatch):
    summary = verify_archive(archive_path)
    out = tmp_path / "records"
    import shutil as shutil_module

    calls = {"n": 0}
    real = shutil_module.copyfileobj

    def failing_copy(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(shutil_module, "copyfileobj", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        extract_records(summary, out)
    assert list(tmp_path.iterdir()) == []  # no output folder and no temporary left


class _FlakyRangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file; the first request breaks off half-way, later ones honour Range."""

    payload = b""
    requests: list = []

    def do_GET(self):  # noqa: N802
        rng = self.headers.get("Range")
        self.requests.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = self.payload[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if len(self.requests) == 1:
            self.wfile.write(body[: len(body) // 2])  # then the connection drops
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_fetch_retries_and_resumes(archive_path, tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    handler = type("Handler", (_FlakyRangeHandler,), {"payload": archive_path.read_bytes(), "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/training2017.zip"
        path = fetch(url, tmp_path / "training2017.zip", retries=2, timeout_s=10)
    finally:
        server.shutdown()
    assert path.read_bytes() == archive_path.read_bytes()
    half = len(handler.payload) // 2
    assert handler.requests == [None, f"bytes={half}-"]  # the second request resumed
    assert not (tmp_path / "training2017.zip.part").exists()


def test_no_network_fails_fast_with_advice(tmp_path, monkeypatch):
    monkeypatch.delenv(ARCHIVE_ENV, raising=False)
    sleeps = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    # a closed port on this machine: refused at once, as with no network
    with pytest.raises(ArchiveError, match=r"cannot reach .* ECGPIPE_ARCHIVE=/path/to/training2017.zip"):
        obtain_archive("http://127.0.0.1:9/training2017.zip", tmp_path)
    assert sleeps == []  # no retries when there is no network at all


def test_a_users_archive_is_never_deleted(archive_path, tmp_path, monkeypatch):
    from ecgpipe.params import DownloadParams
    from ecgpipe.pipeline.download import run_download

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    mine = downloads / "training2017.zip"  # the user's own file, where our downloads go
    mine.write_bytes(archive_path.read_bytes())
    monkeypatch.setenv(ARCHIVE_ENV, str(mine))
    params = DownloadParams(url="https://example.invalid/training2017.zip", sha256="0" * 64)
    with pytest.raises(ArchiveError, match="params download.sha256 expects 0000"):
        run_download(params, tmp_path / "records", downloads)
    assert mine.read_bytes() == archive_path.read_bytes()
    # our own download that fails the check is removed, so that the next run fetches it afresh
    monkeypatch.delenv(ARCHIVE_ENV)
    with pytest.raises(ArchiveError, match="params download.sha256 expects 0000"):
        run_download(params, tmp_path / "records", downloads)
    assert not mine.exists() and not (tmp_path / "records").exists()


def test_archive_variable_naming_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(ARCHIVE_ENV, str(tmp_path))
    with pytest.raises(ArchiveError, match=rf"^{ARCHIVE_ENV}={tmp_path}: is a folder; expected the archive file"):
        obtain_archive("https://example.invalid/training2017.zip", tmp_path / "downloads")


def _archive_with_reference(tmp_path, reference: bytes):
    src = tmp_path / "src"
    make_records(src, ["N", "A"], [1200, 1200])
    (src / "REFERENCE.csv").write_bytes(reference)
    return zip_records(src, tmp_path / "archive.zip")


def test_reference_with_byte_order_mark_is_read(tmp_path):
    summary = verify_archive(_archive_with_reference(tmp_path, b"\xef\xbb\xbfA00001,N\r\nA00002,A\r\n"))
    assert summary.labels == {"A00001": "N", "A00002": "A"}


def test_reference_not_utf8_is_one_line(tmp_path):
    archive = _archive_with_reference(tmp_path, b"A00001,N\r\nA00002,A\xff\r\n")
    with pytest.raises(Exception, match=r"REFERENCE.csv: not UTF-8 text \(byte 0xff at offset 18\)") as info:
        verify_archive(archive)
    assert "\n" not in str(info.value)
    from ecgpipe.core.errors import RecordError
    from ecgpipe.data.records import read_reference

    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "REFERENCE.csv").write_bytes(b"A00001,N\xfe\n")
    with pytest.raises(RecordError, match=r"REFERENCE.csv: not UTF-8 text \(byte 0xfe at offset 8\)"):
        read_reference(folder)


def test_record_id_with_a_path_is_refused(tmp_path):
    archive = _archive_with_reference(tmp_path, b"A00001,N\r\n../A00002,A\r\n")
    with pytest.raises(Exception, match=r"line 2: record id '../A00002' is not a plain file name"):
        verify_archive(archive)
