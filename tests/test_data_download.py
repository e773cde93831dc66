"""Downloads against a local HTTP server on 127.0.0.1 (no other address is ever contacted)."""
import hashlib
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aevb.data import DataError, DATASETS, load
from aevb.data import download as dl
from aevb.data.registry import Spec

PAYLOAD = os.urandom(300_000)
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves `files` by path; records each request's path and Range header. Options:
    `ranges` (honour Range with 206), `cut` (first full response stops after that many
    bytes), `delay` (seconds before answering)."""

    def __init__(self, files):
        self.files, self.ranges, self.cut, self.delay = files, True, None, 0.0
        self.log, self.sent = [], 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.log.append((self.path, rng))
                time.sleep(outer.delay)
                if outer.delay:
                    return
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and outer.ranges:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if outer.cut is not None:  # announce everything, send a part, hang up
                    chunk, outer.cut = chunk[:outer.cut], None
                    self.close_connection = True
                outer.sent += len(chunk)  # before writing: the client may finish first
                try:
                    self.wfile.write(chunk)
                except OSError:  # the client gave up (the timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads, self.httpd.block_on_close = True, False
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server({"/a/file.bin": PAYLOAD})
    yield s
    s.close()


def fetch(urls, directory, checksum=MD5, **kw):
    return dl.fetch(urls, "file.bin", checksum, directory, progress=False, timeout=5, **kw)


def test_checksum_ok_md5_and_sha256(server, tmp_path):
    for checksum in (MD5, "sha256:" + SHA256, SHA256):
        d = tmp_path / checksum[:8]
        p = fetch([server.url + "/a/file.bin"], d, checksum)
        assert p == d / "file.bin" and p.read_bytes() == PAYLOAD
        assert sorted(x.name for x in d.iterdir()) == ["file.bin", "file.bin.lock"]


def test_checksum_wrong_leaves_no_file(server, tmp_path):
    with pytest.raises(DataError, match="checksum mismatch") as e:
        fetch([server.url + "/a/file.bin"], tmp_path, "0" * 32)
    assert "file.bin" in str(e.value) and server.url in str(e.value)
    assert not (tmp_path / "file.bin").exists() and not (tmp_path / "file.bin.part").exists()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_gives_one_clear_error(tmp_path):
    urls = [f"http://127.0.0.1:{free_port()}/x/file.bin", f"http://127.0.0.1:{free_port()}/y/file.bin"]
    with pytest.raises(DataError) as e:
        fetch(urls, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "could not download file.bin" in msg
    assert all(u in msg for u in urls) and "refused" in msg.lower()
    assert str(tmp_path / "file.bin") in msg and "offline" in msg and MD5 in msg
    assert not (tmp_path / "file.bin").exists()


def test_mirrors_tried_in_order(server, tmp_path):
    p = fetch([server.url + "/missing/file.bin", server.url + "/a/file.bin"], tmp_path)
    assert p.read_bytes() == PAYLOAD
    assert [path for path, _ in server.log] == ["/missing/file.bin", "/a/file.bin"]


def test_timeout(server, tmp_path):
    server.delay = 1.0
    with pytest.raises(DataError, match="timed out"):
        dl.fetch([server.url + "/a/file.bin"], "file.bin", MD5, tmp_path, timeout=0.2,
                 progress=False)


def test_interrupted_download_is_resumed_with_range(server, tmp_path):
    server.cut = 100_000
    p = fetch([server.url + "/a/file.bin"], tmp_path)
    assert p.read_bytes() == PAYLOAD
    assert server.log == [("/a/file.bin", None), ("/a/file.bin", "bytes=100000-")]
    assert server.sent == len(PAYLOAD)  # nothing sent twice


def test_part_from_earlier_run_is_resumed(server, tmp_path):
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:123_456])
    assert fetch([server.url + "/a/file.bin"], tmp_path).read_bytes() == PAYLOAD
    assert server.log == [("/a/file.bin", "bytes=123456-")]
    assert server.sent == len(PAYLOAD) - 123_456


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    server.ranges = False
    (tmp_path / "file.bin.part").write_bytes(b"stale bytes of another file")
    assert fetch([server.url + "/a/file.bin"], tmp_path).read_bytes() == PAYLOAD
    assert server.sent == len(PAYLOAD)


def test_stale_part_resumed_to_wrong_file_is_refetched_whole(server, tmp_path):
    (tmp_path / "file.bin.part").write_bytes(b"x" * 1000)  # not a prefix of the payload
    assert fetch([server.url + "/a/file.bin"], tmp_path).read_bytes() == PAYLOAD
    assert server.log == [("/a/file.bin", "bytes=1000-"), ("/a/file.bin", None)]


def test_cached_file_not_downloaded_again_but_corrupt_one_is(server, tmp_path):
    url = [server.url + "/a/file.bin"]
    fetch(url, tmp_path)
    mtime = (tmp_path / "file.bin").stat().st_mtime_ns
    fetch(url, tmp_path)
    assert len(server.log) == 1 and (tmp_path / "file.bin").stat().st_mtime_ns == mtime
    (tmp_path / "file.bin").write_bytes(PAYLOAD[:10])  # damaged by hand
    assert fetch(url, tmp_path).read_bytes() == PAYLOAD and len(server.log) == 2


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_DATA", str(tmp_path))
    assert dl.cache_dir() == tmp_path
    monkeypatch.delenv("AEVB_DATA")
    assert dl.cache_dir() == Path.home() / ".cache" / "aevb"


def test_parse_checksum():
    assert dl.parse_checksum("MD5:ABC") == ("md5", "abc")
    assert dl.parse_checksum("a" * 64) == ("sha256", "a" * 64)
    with pytest.raises(ValueError):
        dl.parse_checksum("crc32:1234")


MNIST = Path("/work/shared/data/mnist")


@pytest.mark.skipif(not MNIST.is_dir(), reason="needs the shared MNIST files")
def test_load_downloads_a_registered_dataset_into_the_cache(monkeypatch, tmp_path):
    """load() of a registry dataset with a (loopback) mirror: download, verify, read."""
    spec = DATASETS["mnist-offline"]
    files = {f"/m/{f}": (MNIST / f).read_bytes() for f in spec.files}
    s = Server(files)
    try:
        monkeypatch.setitem(DATASETS, "mnist-offline", Spec(spec.description, spec.read,
                                                            spec.files, [s.url + "/m/"]))
        monkeypatch.setenv("AEVB_DATA", str(tmp_path))
        ds = load("mnist-offline", progress=False)
        assert ds.shape == (1, 28, 28) and (len(ds.train), len(ds.test)) == (10_000, 5_000)
        assert ds.train.y[:5].tolist() == [7, 2, 1, 0, 4]  # the first official test labels
        assert sorted(p.name for p in (tmp_path / "mnist-offline").glob("*.gz")) == sorted(spec.files)
        load("mnist-offline", progress=False)  # the second load reads the cache
        assert len(s.log) == 4
    finally:
        s.close()


def test_missing_files_with_downloads_off(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_DATA", str(tmp_path))
    with pytest.raises(DataError, match="downloads are off") as e:
        load("mnist", download=False)
    assert str(tmp_path / "mnist") in str(e.value) and "--data-dir" in str(e.value)
