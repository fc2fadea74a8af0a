"""Faults: a full disk, a read-only folder, permission denied, a killed process, Ctrl-C while
saving, damaged caches, two processes on one file. Each must end with one clear line (the file
and the cause in words), the previous file intact and no partial or temporary file left.

A real full or read-only file system is a tiny tmpfs mounted inside the test (needs root, as CI
runs; skipped with the reason otherwise). As root, permission bits do not stop a write, so
"permission denied" is an injected error; every tmpfs case also has an injected twin that runs
everywhere, so that the same code is covered without root.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import nstlib._io as nio
import nstlib.data as data
from nstlib import weights as W
from nstlib._io import WriteError, atomic_group, atomic_write
from nstlib.images import load_image, save_image
from nstlib.result import StyleResult

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


# -- helpers ---------------------------------------------------------------------------------

def noise(h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def leftovers(folder: Path) -> list[str]:
    """Temporary files of a write (ours: .NAME.XXXX.tmp; pooch's: tmpXXXX) left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".partial")) or p.name.startswith("tmp"))


def result_of(image: torch.Tensor) -> StyleResult:
    import numpy as np
    return StyleResult(image=image, history={"total": np.array([[3.0], [2.0]])}, settings={"steps": 1},
                       wall_time=0.1, steps_done=1)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a folder on a fresh tmpfs of that many bytes; ro(folder) remounts it read-only."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root); the injected-error twin covers this code")
    mounted = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(folder)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(folder)
        return folder

    def read_only(folder: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)

    mount.read_only = read_only
    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Fill the file system of `folder` to the last byte."""
    try:
        with open(folder / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC


@pytest.fixture
def fail_open(monkeypatch):
    """fail_open(errno_, when=lambda path: True): os.open of a temporary file raises that error."""
    real = os.open

    def install(code: int, when=lambda p: True) -> None:
        def fake(path, flags, *args, **kwargs):
            if str(path).endswith(".tmp") and when(str(path)):
                raise OSError(code, os.strerror(code), str(path))
            return real(path, flags, *args, **kwargs)
        monkeypatch.setattr(nio.os, "open", fake)

    return install


# -- the image and its JSON ------------------------------------------------------------------

def test_full_disk_real_tmpfs_keeps_the_previous_image(tmpfs):
    folder = tmpfs(256 * 1024)
    out = folder / "out.png"
    save_image(noise(16, 16), out)
    before = out.read_bytes()
    fill(folder)
    with pytest.raises(WriteError) as err:
        save_image(noise(256, 256, seed=1), out)  # ~200 kB of noise: cannot fit
    msg = str(err.value)
    assert msg == f"cannot write {out}: the disk is full (no space left on device); nothing was written; the previous out.png is unchanged."
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert out.read_bytes() == before
    assert leftovers(folder) == []


def test_full_disk_injected_while_writing(tmp_path, monkeypatch):
    out = tmp_path / "out.png"
    save_image(noise(), out)
    before = out.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(nio.os, "fsync", no_space)
    with pytest.raises(WriteError, match=r"cannot write .*out\.png: the disk is full .*previous out\.png is unchanged"):
        save_image(noise(seed=2), out)
    assert out.read_bytes() == before and leftovers(tmp_path) == []


def test_read_only_real_tmpfs(tmpfs):
    folder = tmpfs(1 << 20)
    out = folder / "out.png"
    result_of(noise()).save(out)
    png, js = out.read_bytes(), out.with_suffix(".json").read_bytes()
    tmpfs.read_only(folder)
    with pytest.raises(WriteError, match="the folder is on a read-only file system; nothing was written"):
        result_of(noise(seed=3)).save(out)
    assert out.read_bytes() == png and out.with_suffix(".json").read_bytes() == js
    assert leftovers(folder) == []


@pytest.mark.parametrize("code, words", [
    (errno.EROFS, "the folder is on a read-only file system"),
    (errno.EACCES, "permission denied"),
    (errno.EDQUOT, "the disk quota is exceeded"),
    (errno.EIO, "an input/output error"),
])
def test_injected_errors_are_said_in_words(tmp_path, fail_open, code, words):
    out = tmp_path / "out.png"
    save_image(noise(), out)
    before = out.read_bytes()
    fail_open(code)
    with pytest.raises(WriteError) as err:
        save_image(noise(seed=1), out)
    assert str(err.value) == f"cannot write {out}: {words}" + str(err.value).split(words, 1)[1]
    assert "previous out.png is unchanged" in str(err.value) and "\n" not in str(err.value)
    assert out.read_bytes() == before and leftovers(tmp_path) == []


def test_new_file_that_cannot_be_written_says_nothing_was_written(tmp_path, fail_open):
    fail_open(errno.EACCES)
    with pytest.raises(WriteError, match=r"cannot write .*new\.png: permission denied; nothing was written\.$"):
        save_image(noise(), tmp_path / "new.png")
    assert list(tmp_path.iterdir()) == []


def test_image_and_json_are_kept_together_when_the_json_fails(tmp_path, fail_open):
    out = tmp_path / "run.png"
    result_of(noise()).save(out)
    png, js = out.read_bytes(), out.with_suffix(".json").read_bytes()
    fail_open(errno.ENOSPC, when=lambda p: p.endswith(".json." + p.rsplit(".", 2)[-2] + ".tmp"))
    with pytest.raises(WriteError, match=r"run\.json: the disk is full"):
        result_of(noise(seed=5)).save(out)
    assert out.read_bytes() == png, "the new PNG must not replace the old one when its JSON failed"
    assert out.with_suffix(".json").read_bytes() == js and leftovers(tmp_path) == []


def test_ctrl_c_while_saving_keeps_the_previous_files(tmp_path, monkeypatch):
    out = tmp_path / "run.png"
    result_of(noise()).save(out)
    png, js = out.read_bytes(), out.with_suffix(".json").read_bytes()
    real = json.dump

    def interrupted(obj, f, **kw):
        f.write('{"half": ')
        raise KeyboardInterrupt
    monkeypatch.setattr(json, "dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        result_of(noise(seed=6)).save(out)
    monkeypatch.setattr(json, "dump", real)
    assert out.read_bytes() == png and out.with_suffix(".json").read_bytes() == js
    assert leftovers(tmp_path) == []


def test_real_sigint_while_saving_a_big_file(tmp_path):
    """A real Ctrl-C (SIGINT) in the middle of writing: the old file stays, no temporary file."""
    out = tmp_path / "big.json"
    out.write_text('{"old": 1}')
    before = out.read_bytes()
    code = textwrap.dedent(f"""
        import os, signal, sys
        import nstlib._io as nio
        real = nio.os.fsync
        def slow_fsync(fd):  # the bytes are written: now Ctrl-C arrives
            os.kill(os.getpid(), signal.SIGINT)
            real(fd)
        nio.os.fsync = slow_fsync
        try:
            with nio.atomic_write({str(out)!r}, "w") as f:
                f.write("[" + "1, " * 500000 + "1]")
        except KeyboardInterrupt:
            sys.exit(42)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 42, r.stderr
    assert out.read_bytes() == before and leftovers(tmp_path) == []


def test_killed_during_a_write_never_leaves_a_partial_target(tmp_path):
    """SIGKILL in the middle of a write: the target is the old file; the stale temporary file
    of the killed write is removed by the next write in that folder once it is old."""
    out = tmp_path / "out.json"
    out.write_text('{"old": true}')
    code = textwrap.dedent(f"""
        import sys, time
        from nstlib._io import atomic_write
        with atomic_write({str(out)!r}, "w") as f:
            f.write('{{"new": ')
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.kill()
    p.wait(10)
    assert json.loads(out.read_text()) == {"old": True}
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and stale[0].startswith(".out.json.")
    os.utime(tmp_path / stale[0], (time.time() - 2 * nio.STALE_TMP_S,) * 2)
    with atomic_write(out, "w") as f:
        f.write('{"newer": true}')
    assert json.loads(out.read_text()) == {"newer": True} and leftovers(tmp_path) == []


def test_killed_during_a_run_keeps_the_previous_output(tmp_path):
    """The command line killed (SIGKILL) mid-run: the earlier result and its JSON stay whole."""
    out = tmp_path / "out.png"
    result_of(noise()).save(out)
    png, js = out.read_bytes(), out.with_suffix(".json").read_bytes()
    content, style = REPO / "data" / "chelsea.jpg", REPO / "data" / "swirls.jpg"
    env = dict(os.environ, NSTLIB_WEIGHTS="random:vgg16:0", NSTLIB_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "nstlib", "stylize", str(content), str(style), "-o", str(out),
                          "--size", "48", "--steps", "100000", "--save-every", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(REPO))
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("out_step*.png")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, p.stdout.read()
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert out.read_bytes() == png and out.with_suffix(".json").read_bytes() == js
    for step in tmp_path.glob("out_step*.png"):  # every snapshot written so far is a whole image
        assert load_image(step).shape[1] == 3
    assert [n for n in leftovers(tmp_path) if not n.startswith(".out_step")] == []


def test_two_processes_writing_the_same_output(tmp_path):
    """Two writers, 15 saves each, one file; a reader meanwhile: every read is a whole image."""
    out = tmp_path / "same.png"
    save_image(noise(32, 32), out)
    code = textwrap.dedent(f"""
        import sys, torch
        from nstlib.result import StyleResult
        import numpy as np
        colour = float(sys.argv[1])
        r = StyleResult(image=torch.full((1, 3, 96, 96), colour), history={{"total": np.ones((1, 1))}},
                        settings={{"colour": colour}}, wall_time=0.0, steps_done=0)
        for _ in range(15):
            r.save({str(out)!r})
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code, c], env=env) for c in ("0.0", "1.0")]
    reads = 0
    while any(p.poll() is None for p in procs):
        load_image(out)  # never a partial PNG
        reads += 1
    assert all(p.returncode == 0 for p in procs)
    final = load_image(out)
    colour = json.loads(out.with_suffix(".json").read_text())["settings"]["colour"]
    assert float(final.mean()) in (0.0, 1.0) and reads > 0
    assert leftovers(tmp_path) == [], "each writer's temporary files are its own and are renamed"
    assert colour in (0.0, 1.0)


def test_command_line_full_disk_is_one_line(tmpfs, capsys):
    from nstlib.cli import main
    folder = tmpfs(128 * 1024)
    out = folder / "out.png"
    save_image(noise(8, 8), out)
    before = out.read_bytes()
    fill(folder)
    code = main(["stylize", str(REPO / "data" / "chelsea.jpg"), str(REPO / "data" / "swirls.jpg"), "-o", str(out),
                 "--size", "64", "--steps", "2", "--weights", "random:vgg16:0", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith(f"nstlib: error: cannot write {out}: the disk is full")
    assert "previous out.png is unchanged" in err[-1]
    assert out.read_bytes() == before and leftovers(folder) == []


# -- the panels --------------------------------------------------------------------------------

def test_tuning_panel_save_on_a_full_disk(tmp_path, fail_open):
    from nstlib.widgets import TuningPanel
    from panel_tools import WAIT

    panel = TuningPanel("chelsea", "swirls", size=32, steps=2, weights="random:vgg16:0", preview_every_s=0.0,
                        plot_every_s=0.0)
    assert panel.run() and panel.wait(WAIT)
    out = tmp_path / "saved.png"
    panel.save(out)
    png, js = out.read_bytes(), out.with_suffix(".json").read_bytes()
    fail_open(errno.ENOSPC, when=lambda p: ".json." in p)
    panel.save_dir.value = str(tmp_path)
    panel.save_button.click()
    assert "Cannot save: cannot write" in panel.notice and "the disk is full" in panel.notice
    with pytest.raises(WriteError, match="saved.json: the disk is full"):
        panel.save(out)
    assert out.read_bytes() == png and out.with_suffix(".json").read_bytes() == js
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["saved.json", "saved.png"]


def test_explorer_slide_on_a_read_only_folder(tmp_path, fail_open):
    from nstlib.widgets import LayerExplorer

    ex = LayerExplorer(noise(48, 48), "relu1_1", size=48, weights="random:vgg16:0", device="cpu",
                       preview_every_s=0.0, job_size=32)
    out = tmp_path / "slide.png"
    ex.save(out)
    saved = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(saved) == {"slide.png", "slide.json", "slide.image.png"}
    ex.set_channel(3)
    fail_open(errno.EROFS, when=lambda p: "image.png" in p)  # the slide's image copy fails
    with pytest.raises(WriteError, match="slide.image.png: the folder is on a read-only file system"):
        ex.save(out)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == saved
    ex.save_button.click()
    assert "Cannot save" in ex.notice


def test_folder_that_cannot_be_made_is_one_line(tmpfs):
    from nstlib._io import ensure_folder
    folder = tmpfs(64 * 1024)
    tmpfs.read_only(folder)
    with pytest.raises(WriteError, match=r"cannot write .*a\.png: the folder is on a read-only file system"):
        ensure_folder(folder / "sub", folder / "sub" / "a.png")


# -- the lecture pages -----------------------------------------------------------------------

def test_lecture_index_on_a_full_disk_is_reported_not_raised(tmp_path, monkeypatch, capsys, fail_open):
    import lectures_html as lh

    rec = lh.LectureRecorder(tmp_path)
    monkeypatch.setattr(lh, "index_page", lambda lectures, info: "<html>new</html>")
    (tmp_path / "index.html").write_text("<html>old</html>")
    fail_open(errno.ENOSPC)
    rec.write_index()
    assert (tmp_path / "index.html").read_text() == "<html>old</html>"
    line = capsys.readouterr().err.strip()
    assert line == f"{lh.OPTION}: cannot write {tmp_path / 'index.html'}: the disk is full (no space left on device); " \
                   f"nothing was written; the previous index.html is unchanged."
    assert rec.index_error and leftovers(tmp_path) == []


def test_lecture_page_on_a_read_only_folder_keeps_the_old_pair(tmp_path, monkeypatch, capsys, fail_open):
    import nbformat
    import lectures_html as lh

    rec = lh.LectureRecorder(tmp_path)
    rec.notebooks = {Path("x/lec.ipynb"): []}  # a notebook without code cells
    monkeypatch.setattr(lh, "lecture_page", lambda executed, name, folder, site=None: "<html>page</html>")
    (tmp_path / "lec.html").write_text("old page")
    (tmp_path / "lec.ipynb").write_text("old nb")
    fail_open(errno.EROFS, when=lambda p: p.endswith(".html." + p.rsplit(".", 2)[-2] + ".tmp"))
    monkeypatch.setattr(rec, "write_index", lambda: None)
    rec.write_lecture(Path("x/lec.ipynb"), nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T")]))
    lec = rec.lectures[Path("x/lec.ipynb")]
    assert "lec.html: the folder is on a read-only file system" in lec.error and lec.status == lh.FAILED
    assert (tmp_path / "lec.html").read_text() == "old page" and (tmp_path / "lec.ipynb").read_text() == "old nb"
    assert leftovers(tmp_path) == []


# -- damaged caches: images ------------------------------------------------------------------

GOOD = io.BytesIO()
Image.new("RGB", (40, 30), (10, 200, 30)).save(GOOD, "JPEG")
GOOD = GOOD.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits += 1
        slow = self.path.startswith("/slow")
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(GOOD)))
        self.end_headers()
        for i in range(0, len(GOOD), 256):
            self.wfile.write(GOOD[i:i + 256])
            if slow:
                time.sleep(0.01)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.hits = 0
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.delenv(data.IMAGE_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    return tmp_path / "cache"


def test_truncated_cached_image_is_fetched_again(server, cache):
    base, httpd = server
    cache.mkdir()
    (cache / "starry_night.jpg").write_bytes(GOOD[: len(GOOD) // 2])
    hits = httpd.hits
    p = data.path("starry_night", base_url=base, timeout=2, progress=False)
    assert p.read_bytes() == GOOD and httpd.hits == hits + 1
    assert leftovers(cache) == []


def test_truncated_cached_image_offline_falls_back_and_says_why(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache.mkdir()
    (cache / "the_scream.jpg").write_bytes(GOOD[:300])
    with pytest.raises(data.DownloadError, match=r"the cached file .*the_scream\.jpg is damaged"):
        data.path("the_scream", base_url=f"http://127.0.0.1:{port}", timeout=2, progress=False)
    assert not (cache / "the_scream.jpg").exists(), "the damaged file is removed, so it is fetched when online"
    image, note = data.load_or_fallback("the_scream", 32, base_url=f"http://127.0.0.1:{port}", timeout=2, progress=False)
    assert image.shape[1] == 3 and "refused" in note and "fallback" in note


def test_cached_image_with_a_wrong_hash_is_replaced(server, cache, monkeypatch):
    base, _ = server
    entry = dict(data._downloads()["great_wave"], sha256=hashlib.sha256(GOOD).hexdigest())
    monkeypatch.setitem(data._downloads(), "great_wave", entry)
    cache.mkdir()
    Image.new("RGB", (5, 5)).save(cache / "great_wave.jpg")  # a whole image, but not this one
    assert data.path("great_wave", base_url=base, timeout=2, progress=False).read_bytes() == GOOD


def test_damaged_image_in_a_read_only_cache_is_refused_clearly(cache, fail_open, monkeypatch):
    cache.mkdir()
    (cache / "shipwreck.jpg").write_bytes(b"\xff\xd8 not really")

    def cannot(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))
    monkeypatch.setattr(Path, "unlink", cannot)
    with pytest.raises(data.DownloadError, match=r"damaged .* cannot be removed: the folder is on a read-only file system"):
        data.path("shipwreck", base_url="http://127.0.0.1:9", timeout=1, progress=False)


def test_download_into_a_full_cache(server, tmpfs, monkeypatch):
    base, _ = server
    folder = tmpfs(64 * 1024)
    fill(folder)
    monkeypatch.delenv(data.IMAGE_DIR_ENV, raising=False)
    with pytest.raises(data.DownloadError, match="the disk is full"):
        data.path("tubingen", base_url=base, cache=folder, timeout=2, progress=False)
    assert leftovers(folder) == [] and not (folder / "tubingen.jpg").exists()


def test_two_processes_fetch_the_same_painting(server, cache):
    base, httpd = server
    code = ("import nstlib.data as d, sys; "
            f"p = d.path('composition_vii', base_url={base + '/slow'!r}, timeout=5, progress=False); print(p)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] == str(cache / "composition_vii.jpg")
    assert (cache / "composition_vii.jpg").read_bytes() == GOOD and leftovers(cache) == []


# -- damaged caches: weights -----------------------------------------------------------------

def _features_only(arch: str = "vgg19") -> dict[str, torch.Tensor]:
    return {f"features.{k}": v for k, v in W.random_state_dict(arch, 1).items()}


@pytest.fixture
def torch_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    return tmp_path / "th"


def test_truncated_checkpoint_offline_is_refused_with_the_file_named(torch_home, monkeypatch):
    url, cached = W.torchvision_checkpoint("vgg19")
    cached.parent.mkdir(parents=True)
    buf = io.BytesIO()
    torch.save(_features_only(), buf)
    cached.write_bytes(buf.getvalue()[: buf.tell() // 3])

    def offline(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    from nstlib.vgg import load_vgg
    with pytest.raises(W.WeightsUnavailableError) as err:
        load_vgg()
    msg = str(err.value)
    assert f"the cached weights file {cached} is damaged" in msg and "cut off" in msg
    assert "Delete that file" in msg and "How to get them" in msg


def test_truncated_checkpoint_is_fetched_again(torch_home, monkeypatch):
    url, cached = W.torchvision_checkpoint("vgg19")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 half a zip")
    good = _features_only()
    calls = []

    def fetch(u, dst, hash_prefix=None, progress=True):
        calls.append((u, hash_prefix))
        tmp = dst + ".partial"
        torch.save(good, tmp)
        os.replace(tmp, dst)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fetch)
    from nstlib.vgg import load_vgg
    net = load_vgg()
    assert calls == [(url, "dcbb9e9d")]
    assert torch.equal(net.features[0].weight, good["features.0.weight"])


def test_truncated_weights_file_names_the_file(tmp_path):
    path = tmp_path / "vgg19-mine.pth"
    buf = io.BytesIO()
    torch.save(_features_only(), buf)
    path.write_bytes(buf.getvalue()[:5000])
    from nstlib.vgg import load_vgg
    with pytest.raises(ValueError, match=rf"{path}.*not a PyTorch weights file"):
        load_vgg(str(path))


# -- the atomic group itself ---------------------------------------------------------------------

def test_group_renames_nothing_when_any_file_fails(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_group():
            with atomic_write(a, "w") as f:
                f.write("new a")
            assert a.read_text() == "old a", "inside a group nothing is renamed before the end"
            raise RuntimeError("boom")
    assert a.read_text() == "old a" and not b.exists() and leftovers(tmp_path) == []
    with atomic_group():
        with atomic_write(a, "w") as f:
            f.write("new a ü")
        with atomic_write(b, "w") as f:
            f.write("new b")
    assert a.read_text(encoding="utf-8") == "new a ü" and b.read_text() == "new b"
