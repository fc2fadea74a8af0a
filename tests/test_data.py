"""nstlib.data: the bundled images, the paintings manifest, and downloads.

Downloads are tested against a real HTTP server on 127.0.0.1 (a thread, an ephemeral port)
that serves good, broken, oversized and non-image answers; nothing leaves the loopback
interface and every timeout is short.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import torch
from PIL import Image

import nstlib.data as data
from nstlib.images import load_image

DATA = data.DATA_DIR
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
TIMEOUT = 2.0  # seconds; the server is local, so anything slower is a failure


def _jpeg_bytes(w: int = 40, h: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 60)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


GOOD = _jpeg_bytes()
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes on the first path segment; the rest (a file name) is ignored."""

    server_version = "nstlib-test"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        route = self.path.strip("/").split("/", 1)[0]
        self.server.hits.append((route, self.headers.get("User-Agent", "")))
        if route == "good":
            self._send(200, GOOD, "image/jpeg")
        elif route == "truncated":  # announces more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(GOOD) + 5000))
            self.end_headers()
            self.wfile.write(GOOD[: len(GOOD) // 2])
            self.close_connection = True
        elif route == "e500":
            self.send_error(500, "Internal Server Error")
        elif route == "e404":
            self.send_error(404, "Not Found")
        elif route == "html":
            self._send(200, b"<!DOCTYPE html><html><body>Please log in</body></html>", "text/html")
        elif route == "announced_big":  # Content-Length alone must be enough to refuse
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(50_000_000))
            self.end_headers()
            self.wfile.write(GOOD)
            self.close_connection = True
        elif route == "streamed_big":  # no Content-Length: only counting the bytes catches it
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write(GOOD * 20)
            self.close_connection = True
        elif route == "slow":
            time.sleep(TIMEOUT / 4 * 3)  # longer than the short client timeouts used below
            self._send(200, GOOD, "image/jpeg")
        else:
            self.send_error(404, "No such route")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that give up early (timeouts, refused sizes) break the pipe on purpose


@pytest.fixture(scope="module")
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def base(server) -> str:
    server.hits.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


# The mirror folder the test command sets (the paper's images), read before the fixture hides it.
PAPER_IMAGES = os.environ.get("NSTLIB_IMAGE_DIR")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No mirror folder, a fresh cache, and no proxy between us and 127.0.0.1."""
    monkeypatch.delenv(data.IMAGE_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


def _cache_files(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- downloads -----------------------------------------------------------------------------

def test_download_once_then_cached(base, server, tmp_path):
    p = data.path("starry_night", base_url=f"{base}/good", timeout=TIMEOUT, progress=False)
    assert p == tmp_path / "cache" / "starry_night.jpg"
    assert p.read_bytes() == GOOD
    assert len(server.hits) == 1
    assert server.hits[0][1].startswith("nstlib/"), "Wikimedia needs a descriptive User-Agent"
    again = data.load("starry_night", 20, base_url=f"{base}/good", timeout=TIMEOUT, progress=False)
    assert len(server.hits) == 1, "the second call must come from the cache, not the server"
    assert again.shape == (1, 3, 15, 20)
    assert _cache_files(tmp_path) == ["starry_night.jpg"]  # no temp files left beside it


def test_download_with_matching_sha256(base, tmp_path):
    out = data.download(f"{base}/good/x.jpg", tmp_path / "cache" / "x.jpg", max_bytes=10_000,
                        sha256=GOOD_SHA.upper(), timeout=TIMEOUT, progress=True)
    assert out.read_bytes() == GOOD


@pytest.mark.parametrize(
    "route, max_bytes, sha256, expected",
    [
        ("truncated", 100_000, None, r"broke off after \d[\d,]* of [\d,]+ bytes"),
        ("e500", 100_000, None, r"answered HTTP 500"),
        ("e404", 100_000, None, r"answered HTTP 404.*renamed"),
        ("html", 100_000, None, r"not an image.*web page"),
        ("announced_big", 1_000_000, None, r"announces 50,000,000 bytes.*limit of 1,000,000"),
        ("streamed_big", len(GOOD) * 5, None, r"more than [\d,]+ bytes came"),
        ("good", 100_000, "0" * 64, r"SHA-256 .* expected 0{64}"),
    ],
)
def test_failed_download_is_clear_and_leaves_nothing(base, tmp_path, route, max_bytes, sha256, expected):
    url = f"{base}/{route}/painting.jpg"
    with pytest.raises(data.DownloadError, match=expected) as info:
        data.download(url, tmp_path / "cache" / "painting.jpg", max_bytes=max_bytes, sha256=sha256,
                      timeout=TIMEOUT, progress=False, what="the test painting")
    message = str(info.value)
    assert url in message and "the test painting" in message
    assert _cache_files(tmp_path) == [], "a failed download must leave no file in the cache"


def test_timeout_is_reported(base, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(data.DownloadError, match="timed out"):
        data.download(f"{base}/slow/x.jpg", tmp_path / "cache" / "x.jpg", max_bytes=10_000,
                      timeout=TIMEOUT / 4, progress=False)
    assert time.monotonic() - t0 < TIMEOUT
    assert _cache_files(tmp_path) == []


def test_unreachable_server_says_what_to_do(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(data.DownloadError) as info:
        data.path("the_scream", base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT, progress=False)
    message = str(info.value)
    assert "refused" in message and "The Scream" in message
    assert data.IMAGE_DIR_ENV in message and "load_or_fallback" in message and "commons.wikimedia.org" in message
    assert _cache_files(tmp_path) == []


def test_manifest_urls_tried_in_order(monkeypatch, base, server, tmp_path):
    entry = dict(data._downloads()["great_wave"])
    entry.update(url=f"{base}/e404/a.jpg", alt_urls=[f"{base}/good/b.jpg"])
    monkeypatch.setitem(data._downloads(), "great_wave", entry)
    p = data.path("great_wave", timeout=TIMEOUT, progress=False)
    assert p.read_bytes() == GOOD
    assert [route for route, _ in server.hits] == ["e404", "good"]


def test_offline_does_not_wait_for_every_url(monkeypatch, base, server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = dict(data._downloads()["great_wave"])
    entry.update(url=f"http://127.0.0.1:{port}/a.jpg", alt_urls=[f"{base}/good/b.jpg"])
    monkeypatch.setitem(data._downloads(), "great_wave", entry)
    with pytest.raises(data.DownloadError, match="refused"):
        data.path("great_wave", timeout=TIMEOUT, progress=False)
    assert server.hits == [], "after a connection failure the other URLs (same host) are not tried"


def test_load_or_fallback_when_the_server_fails(base, tmp_path):
    image, note = data.load_or_fallback("starry_night", 64, base_url=f"{base}/e500", timeout=TIMEOUT, progress=False)
    fallback = load_image(DATA / "swirls.jpg", 64)
    assert torch.equal(image, fallback)
    assert "HTTP 500" in note and "fallback" in note and "'swirls'" in note and "starry_night.jpg" in note
    assert _cache_files(tmp_path) == []


def test_load_or_fallback_success_gives_a_credit(base):
    image, note = data.load_or_fallback("tubingen", base_url=f"{base}/good", timeout=TIMEOUT, progress=False)
    assert image.shape == (1, 3, 30, 40)
    assert "Andreas Praefcke" in note and "CC BY 3.0" in note


def test_load_or_fallback_does_not_hide_typos():
    with pytest.raises(ValueError, match="Did you mean 'starry_night'"):
        data.load_or_fallback("stary_night")


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="http"):
        data.download("file:///etc/passwd", tmp_path / "x.jpg", max_bytes=10)
    with pytest.raises(ValueError, match="max_bytes"):
        data.download("http://127.0.0.1:9/x.jpg", tmp_path / "x.jpg", max_bytes=0)
    with pytest.raises(ValueError, match="kind"):
        data.list_images("paintings")
    with pytest.raises(TypeError):
        data.path(3)


def test_local_mirror_folder_wins(monkeypatch, tmp_path, base, server):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    Image.new("RGB", (8, 6), (0, 0, 255)).save(mirror / "shipwreck.png")
    monkeypatch.setenv(data.IMAGE_DIR_ENV, str(mirror))
    assert data.path("shipwreck", base_url=f"{base}/good") == mirror / "shipwreck.png"
    assert data.load("shipwreck").shape == (1, 3, 6, 8)
    assert server.hits == [], "a mirrored image must not be downloaded"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert data.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(data.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if data.os.name != "nt":
        assert data.cache_dir() == tmp_path / "xdg" / "nstlib" / "images"


def test_paper_images_through_the_mirror_setting(monkeypatch):
    """With the test images of CI (NSTLIB_IMAGE_DIR) as mirror, the paper's keys resolve offline."""
    folder = PAPER_IMAGES
    if not folder or not Path(folder).is_dir():
        pytest.skip("NSTLIB_IMAGE_DIR does not name a folder of the paper's images")
    monkeypatch.setenv(data.IMAGE_DIR_ENV, folder)
    for key in ("tubingen", "starry_night", "the_scream", "shipwreck"):
        assert data.path(key).parent == Path(folder)
        assert data.load(key, 32).shape[1] == 3


# -- bundled images, licences, manifest ----------------------------------------------------

def _image_files() -> list[Path]:
    return sorted(p for p in DATA.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def test_every_bundled_image_loads_and_has_a_licence():
    licences = (DATA / "LICENSES.md").read_text(encoding="utf-8")
    bundled = {e.file for e in data.list_images("bundled")}
    files = _image_files()
    assert len(files) >= 9
    for f in files:
        image = load_image(f)
        assert image.shape[:2] == (1, 3) and max(image.shape[-2:]) <= 512, f.name
        assert re.search(rf"^### {re.escape(f.name)}$", licences, re.M), f"{f.name} has no section in LICENSES.md"
        assert f.name in bundled, f"{f.name} is not listed in data/bundled.json"
    assert bundled == {f.name for f in files}, "bundled.json lists a file that is not in data/"
    total = sum(f.stat().st_size for f in files)
    assert total < 1_500_000, f"data/ images take {total:,} bytes; keep the repository small"


def test_bundled_names_load_by_key():
    for item in data.list_images("bundled"):
        assert data.path(item.key) == DATA / item.file
        assert item.licence and item.author and item.title
    assert data.load("gravel", 64).shape == (1, 3, 64, 64)


def test_manifest_entries_are_complete():
    raw = json.loads((DATA / "paintings.json").read_text(encoding="utf-8"))["images"]
    keys = [e["key"] for e in raw]
    assert len(keys) == len(set(keys))
    assert {"starry_night", "great_wave", "composition_vii", "the_scream", "shipwreck", "tubingen"} <= set(keys)
    bundled = {e.key for e in data.list_images("bundled")}
    assert not set(keys) & bundled, "a name cannot be both bundled and downloaded"
    for e in raw:
        for field in data._REQUIRED_DOWNLOAD_FIELDS:
            assert field in e, f"{e['key']} lacks {field}"
        assert e["fallback"] in bundled, e["key"]
        assert e["file"] == e["key"] + ".jpg"
        assert e["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", e["sha256"])
        assert isinstance(e["max_bytes"], int) and 100_000 <= e["max_bytes"] <= 50_000_000
        assert e["licence"] and e["title"] and e["author"] and e["year"]
        assert e["page"].startswith("https://commons.wikimedia.org/wiki/File:")


def test_manifest_urls_follow_the_commons_layout():
    """Commons stores File:N under /x/xy/N where xy starts md5(N): a wrong folder is a dead link."""
    for item in data._downloads().values():
        page_name = urllib.parse.unquote(item["page"].split("File:", 1)[1])
        for url in [item["url"], *item["alt_urls"]]:
            m = re.fullmatch(r"https://upload\.wikimedia\.org/wikipedia/commons/(thumb/)?(\w)/(\w\w)/([^/]+)(/(\d+)px-\4)?", url)
            assert m, url
            name = urllib.parse.unquote(m.group(4))
            digest = hashlib.md5(name.encode()).hexdigest()
            assert (m.group(2), m.group(3)) == (digest[0], digest[:2]), url
            assert name == page_name, url
            if m.group(1):  # thumbnails: only Wikimedia's standard widths are served
                assert m.group(6) in {"960", "1280", "1920"}, url


def test_list_images_has_credits():
    items = data.list_images()
    assert [i.kind for i in items].count("download") == len(data.list_images("download"))
    night = data.info("starry_night")
    assert night.fallback == "swirls" and "Vincent van Gogh" in night.credit and "Public domain" in night.credit
    assert "starry_night" in str(night)
