"""The fetch command against a local HTTP server on 127.0.0.1 (never the internet)."""

import hashlib
import http.server
import io
import threading
import zipfile

import h5py
import numpy as np
import pytest
from PIL import Image

from affcons_lib import cli
from affcons_lib.data import fetch as F

PAYLOAD = bytes(range(256)) * 64  # 16 KiB fixture


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path == "/ok.bin":
            self._send(PAYLOAD)
        elif self.path == "/truncated.bin":
            # announce the full length, send half, then close the connection
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/archive.zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("images/a.txt", "hello")
            self._send(buf.getvalue())
        else:
            self.send_error(404)

    def _send(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_and_is_atomic(server, tmp_path):
    out = F.download(f"{server}/ok.bin", tmp_path / "ok.bin", sha256=SHA, size=len(PAYLOAD), quiet=True)
    assert out.read_bytes() == PAYLOAD
    assert list(tmp_path.iterdir()) == [out]


def test_truncated_download_leaves_nothing(server, tmp_path):
    with pytest.raises(F.FetchError, match="truncated.bin"):
        F.download(f"{server}/truncated.bin", tmp_path / "t.bin", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(F.FetchError, match="SHA-256 mismatch"):
        F.download(f"{server}/ok.bin", tmp_path / "c.bin", sha256="0" * 64, quiet=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(F.FetchError, match="expected 3 bytes"):
        F.download(f"{server}/ok.bin", tmp_path / "c.bin", size=3, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_http_error_names_url(server, tmp_path):
    with pytest.raises(F.FetchError, match="missing.bin.*404"):
        F.download(f"{server}/missing.bin", tmp_path / "m.bin", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_fetch_source_with_unzip(server, tmp_path):
    sources = {"demo": F.Source("demo", "d", "h", "l", "1 KB",
                                files=(F.RemoteFile(f"{server}/ok.bin", "demo/ok.bin", sha256=SHA),
                                       F.RemoteFile(f"{server}/archive.zip", "demo/archive.zip", unzip=True)))}
    out = F.fetch("demo", tmp_path, sources=sources, quiet=True)
    assert (tmp_path / "demo" / "ok.bin").read_bytes() == PAYLOAD
    assert (tmp_path / "demo" / "images" / "a.txt").read_text() == "hello"
    assert not (tmp_path / "demo" / "archive.zip").exists()
    assert out == tmp_path / "demo"


def test_fetch_unknown_and_manual(tmp_path):
    with pytest.raises(KeyError, match="known: .*bbbc039"):
        F.fetch("nope", tmp_path)
    with pytest.raises(F.FetchError, match="cvppp: cannot be fetched automatically"):
        F.fetch("cvppp", tmp_path)


def test_registry_lists_the_papers_datasets():
    assert {"fibsem", "dsb2018", "bbbc039", "cremi-c", "ac3ac4", "cvppp"} <= set(F.SOURCES)
    assert cli.main(["fetch", "--list"]) == 0


def test_neuroproof_conversion(tmp_path):
    src = tmp_path / "np"
    (src / "grayscale_maps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (3, 5, 6)).astype(np.uint8)
    for i, sl in enumerate(raw):
        Image.fromarray(sl).save(src / "grayscale_maps" / f"iso.{2600 + i}.png")
    stack = rng.integers(1, 5, (3, 5, 6)).astype(np.uint32)
    with h5py.File(src / "groundtruth.h5", "w") as f:
        f["stack"] = stack
        f["transforms"] = np.array([[1, 10], [2, 10], [3, 20]], dtype=np.uint64)  # 4 -> no body
    out = F.neuroproof_to_cremi(src, tmp_path / "out.h5")
    from affcons_lib.data import read_cremi

    r, lab = read_cremi(out)
    np.testing.assert_array_equal(r, raw)
    want = np.select([stack <= 2, stack == 3], [10, 20], 0)
    np.testing.assert_array_equal(lab, want)
    assert not (tmp_path / "out.h5.part").exists()


def test_isbi_pngs_become_the_challenge_tiffs(tmp_path):
    """The fetch step's conversion: 30 + 30 PNGs -> train-volume.tif / train-labels.tif,
    read back by the project's ISBI 2012 reader."""
    from PIL import Image

    from affcons_lib.data import read_isbi2012
    from affcons_lib.data.fetch import FetchError, isbi_pngs_to_tiffs

    rng = np.random.default_rng(0)
    for kind in ("image", "label"):
        (tmp_path / "png" / kind).mkdir(parents=True)
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "png" / "image" / f"{i}.png")
        label = np.full((16, 16), 250, np.uint8)  # a grey near white: the conversion makes it 255
        label[:, 8] = 3
        Image.fromarray(label).save(tmp_path / "png" / "label" / f"{i}.png")
    out = isbi_pngs_to_tiffs(tmp_path / "png", tmp_path / "isbi2012")
    raw, labels = read_isbi2012(out)
    assert raw.shape == labels.shape == (30, 16, 16)
    assert (labels[:, :, 8] == 0).all() and len(np.unique(labels[0])) == 3  # two cells and the membrane
    (tmp_path / "png" / "label" / "29.png").unlink()
    with pytest.raises(FetchError, match="expected the 30 ISBI 2012 sections"):
        isbi_pngs_to_tiffs(tmp_path / "png", tmp_path / "again")
