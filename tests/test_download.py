"""--download against archives served from a loopback HTTP server (never the internet)."""
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import numpy as np
import pytest
import soundfile as sf

from data_prep.__main__ import main
from data_prep.download import Archive, download, extract, fetch_archive
from data_prep.sources import get_source


class Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes) with Range support; ``drop_after`` closes the first
    response of a file after that many bytes; ``ranges`` false ignores Range headers."""

    def __init__(self, files, drop_after=None, ranges=True):
        self.files, self.drop_after, self.ranges = files, drop_after, ranges
        self.requests = []
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, name):
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        data = server.files.get(self.path.lstrip("/"))
        server.requests.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if server.ranges and self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.drop_after is not None and len(server.requests) == 1:
            self.wfile.write(body[:server.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def serve():
    servers = []

    def start(files, **kw):
        servers.append(Server(files, **kw))
        return servers[-1]
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def esc50_zip() -> bytes:
    """A two-clip ESC-50 in GitHub's archive layout (ESC-50-master/...)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        rows = ["filename,fold,target,category,esc10,src_file,take"]
        for i, cat in enumerate(("dog", "rain")):
            wav = io.BytesIO()
            sf.write(wav, np.random.default_rng(i).uniform(-.5, .5, 2205).astype(np.float32), 44100,
                     format="WAV", subtype="PCM_16")
            zf.writestr(f"ESC-50-master/audio/1-{i}-A-{i}.wav", wav.getvalue())
            rows.append(f"1-{i}-A-{i}.wav,{i + 1},{i},{cat},False,{i},A")
        zf.writestr("ESC-50-master/meta/esc50.csv", "\n".join(rows) + "\n")
    return buf.getvalue()


def test_download_resumes_with_range_after_a_dropped_connection(serve, tmp_path):
    data = bytes(np.random.default_rng(0).integers(0, 256, 300_000, np.uint8))
    server = serve({"big.bin": data}, drop_after=100_000)
    out = download(server.url("big.bin"), tmp_path / "big.bin",
                   sha256=hashlib.sha256(data).hexdigest(), quiet=True)
    assert out.read_bytes() == data
    assert server.requests[1] == ("/big.bin", "bytes=100000-")


def test_download_resumes_a_partial_file_from_an_earlier_run(serve, tmp_path):
    data = b"0123456789" * 1000
    (tmp_path / "f.bin.part").write_bytes(data[:4000])
    server = serve({"f.bin": data})
    download(server.url("f.bin"), tmp_path / "f.bin", md5=hashlib.md5(data).hexdigest(), quiet=True)
    assert (tmp_path / "f.bin").read_bytes() == data and server.requests == [("/f.bin", "bytes=4000-")]


def test_server_without_ranges_restarts_and_checksum_mismatch_fails(serve, tmp_path):
    data = b"abc" * 5000
    (tmp_path / "f.bin.part").write_bytes(b"zzz")
    server = serve({"f.bin": data}, ranges=False)
    download(server.url("f.bin"), tmp_path / "f.bin", quiet=True)
    assert (tmp_path / "f.bin").read_bytes() == data
    with pytest.raises(ValueError, match="checksum mismatch"):
        download(server.url("f.bin"), tmp_path / "g.bin", sha256="0" * 64, quiet=True)
    assert not (tmp_path / "g.bin").exists()
    with pytest.raises(OSError, match="HTTP 404"):
        download(server.url("missing"), tmp_path / "m.bin", quiet=True, retries=1)


def test_extract_refuses_members_outside_the_root(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    (tmp_path / "bad.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(ValueError):
        extract(tmp_path / "bad.tar.gz", tmp_path / "root")
    assert not (tmp_path / "evil.txt").exists()


def test_fetch_archive_extracts_once(serve, tmp_path):
    payload = esc50_zip()
    server = serve({"esc.zip": payload})
    archive = Archive(server.url("esc.zip"), "esc.zip", sha256=hashlib.sha256(payload).hexdigest(),
                      expect="ESC-50-master/meta/esc50.csv")
    fetch_archive(archive, tmp_path, quiet=True)
    fetch_archive(archive, tmp_path, quiet=True)
    assert len(server.requests) == 1 and (tmp_path / "ESC-50-master" / "audio").is_dir()
    assert not (tmp_path / ".downloads" / "esc.zip").exists()


def test_cli_download_then_prepare(serve, tmp_path, monkeypatch):
    payload = esc50_zip()
    server = serve({"master.zip": payload})
    source = get_source("esc50")
    monkeypatch.setattr(type(source), "download",
                        [Archive(server.url("master.zip"), "ESC-50-master.zip",
                                 expect="ESC-50-master/meta/esc50.csv")])
    argv = ["esc50", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "cache"), "--download",
            "--quiet", "--workers", "1", "--sample-rate", "8000", "--n-fft", "256", "--hop-length", "128",
            "--n-mels", "16"]
    assert main(argv) == 0
    assert (tmp_path / "cache" / "meta.json").exists()


def test_gtzan_download_says_where_to_get_it(capsys, tmp_path):
    assert main(["gtzan", "--root", str(tmp_path), "--out", str(tmp_path / "c"), "--download"]) == 1
    err = capsys.readouterr().err
    assert "cannot be downloaded automatically" in err and "Kaggle" in err
