"""The course's images: bundled photos and textures, and paintings downloaded on first use.

Names ("keys") come from two lists in the repository's data/ folder:

- data/bundled.json: images shipped in data/ (scikit-image photos and textures, images the
  project draws itself). Always available.
- data/paintings.json: famous public-domain paintings and the paper's Tuebingen photo. They are
  downloaded once into a cache folder, with a progress bar, refused when larger than the
  entry's ``max_bytes``, checked against ``sha256`` when one is given, checked to decode as an
  image, and written atomically (a failed download leaves nothing behind).

The cache is pooch's (the fetcher of scikit-image and SciPy): the manifest is its registry (file
name -> SHA-256), and pooch downloads into a temporary file in the cache folder, checks the
hash, and renames the file into place, retrying a download that broke off. nstlib's own
downloader (`download`'s HTTP part) does what pooch's does not: the size limit, the
User-Agent, the image check and the messages. So several kernels that fetch the same painting at
once each write their own temporary file and rename it: the cache always holds a whole file. A
cached file that is damaged (a wrong SHA-256, or one that does not decode: a download cut off
by an older tool, a disk error) is detected, removed and fetched again.

Where a painting comes from, first match wins:

1. ``$NSTLIB_IMAGE_DIR/<file>``: a local mirror folder (a JupyterHub's shared copy, or the
   test images of CI). ``<file>`` is the entry's file name, e.g. ``starry_night.jpg``,
   ``tubingen.jpg``, ``the_scream.jpg``, ``shipwreck.jpg``; .jpg/.jpeg/.png/.webp are accepted.
2. The cache folder: ``$NSTLIB_DATA_CACHE``, else ``$XDG_CACHE_HOME/nstlib/images``, else
   ``~/.cache/nstlib/images`` (``%LOCALAPPDATA%\\nstlib\\images`` on Windows). Files there
   have the same names, so a cache can be filled by hand.
3. A download from the entry's URLs (or from ``base_url + "/" + file`` when ``base_url`` is
   given, e.g. a mirror web server or a test server).

Offline, `load_or_fallback` returns the entry's bundled ``fallback`` image and a note saying so.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch
from PIL import Image, UnidentifiedImageError

from . import __version__
from ._io import describe_os_error
from .images import MAX_PIXELS, Size, load_image

#: The repository's data/ folder (nstlib is installed editable, beside it).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
#: Environment variable naming a local mirror folder of the downloadable images.
IMAGE_DIR_ENV = "NSTLIB_IMAGE_DIR"
#: Environment variable naming the download cache folder.
CACHE_ENV = "NSTLIB_DATA_CACHE"
#: Seconds to wait for a connection or for the next bytes of a download.
DEFAULT_TIMEOUT = 30.0
#: Wikimedia refuses requests without a descriptive User-Agent.
USER_AGENT = f"nstlib/{__version__} (neural style transfer course; educational use) Python-urllib"

_MIRROR_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_CHUNK = 64 * 1024
_REQUIRED_DOWNLOAD_FIELDS = ("key", "title", "author", "year", "role", "licence", "page", "url",
                             "alt_urls", "file", "sha256", "max_bytes", "fallback")
_REQUIRED_BUNDLED_FIELDS = ("key", "file", "role", "title", "author", "licence", "source")


class DownloadError(RuntimeError):
    """A course image could not be downloaded, or what came was not the expected image.

    `reasons` lists one line per URL tried (for a single download: the message itself).
    """

    def __init__(self, message: str, reasons: Optional[list[str]] = None, *, unreachable: bool = False,
                 local: bool = False) -> None:
        super().__init__(message)
        self.reasons = list(reasons) if reasons else [message]
        self.unreachable = unreachable  # no connection at all (offline, DNS, refused, timeout)
        self.local = local  # this machine's side failed (the cache folder: full, read-only, ...)


@dataclass(frozen=True)
class ImageInfo:
    """What the course knows about one image name."""

    key: str
    title: str
    author: str
    licence: str
    kind: str  # "bundled" (shipped in data/) or "download" (fetched once into the cache)
    role: str  # "content", "style" or "texture"
    file: str
    year: str = ""
    source: str = ""  # where it comes from: a web page for downloads, a short note for bundled
    fallback: Optional[str] = None  # bundled key used offline (downloads only)

    @property
    def credit(self) -> str:
        """One line to print under an image: title, author, year, licence."""
        year = f", {self.year}" if self.year else ""
        return f"{self.title} ({self.author}{year}). {self.licence}"

    def __str__(self) -> str:
        where = "bundled" if self.kind == "bundled" else f"download, offline -> {self.fallback}"
        return f"{self.key:16s} {self.role:8s} [{where}] {self.title}, {self.author}"


# -- catalogue -----------------------------------------------------------------------------

def list_images(kind: Optional[str] = None) -> list[ImageInfo]:
    """Every image name the course knows: bundled ones first, then downloadable ones.

    kind: None for all, "bundled" or "download".
    `print(*list_images(), sep="\\n")` shows a table; `.credit` gives a credit line.
    """
    if kind not in (None, "bundled", "download"):
        raise ValueError(f"kind must be None, 'bundled' or 'download', got {kind!r}.")
    out = []
    if kind in (None, "bundled"):
        out += [_bundled_info(e) for e in _bundled().values()]
    if kind in (None, "download"):
        out += [_download_info(e) for e in _downloads().values()]
    return out


def info(name: str) -> ImageInfo:
    """The `ImageInfo` of one image name (see `list_images`)."""
    if name in _bundled():
        return _bundled_info(_bundled()[name])
    return _download_info(_entry(name))


def cache_dir() -> Path:
    """The folder downloads are cached in ($NSTLIB_DATA_CACHE or a per-user cache folder)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "nstlib" / "images"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nstlib" / "images"


# -- getting a file ------------------------------------------------------------------------

def path(
    name: str,
    *,
    base_url: Optional[str] = None,
    cache: Optional[os.PathLike | str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
    retries: int = 1,
) -> Path:
    """Path of the image file called `name`, downloading it once if needed.

    name: a key from `list_images()`, e.g. "chelsea" (bundled) or "starry_night" (download).
    base_url: download from ``base_url/<file>`` instead of the manifest's URLs (a mirror).
    cache: the cache folder (default: `cache_dir()`).
    timeout: seconds to wait for a connection or for the next bytes.
    progress: show a tqdm progress bar while downloading.
    retries: how many more times to try a download that broke off (the connection closed early).
    A cached file that is damaged (wrong SHA-256, or not a whole image) is fetched again.
    Raises DownloadError (with what to do) when a download fails.
    """
    if name in _bundled():
        return _bundled_path(name)
    entry = _entry(name)
    mirrored = _from_mirror(entry)
    if mirrored is not None:
        return mirrored
    folder = Path(cache).expanduser() if cache is not None else cache_dir()
    target = folder / entry["file"]
    damaged = _cached_problem(target, entry["sha256"]) if target.is_file() else None
    if target.is_file() and damaged is None:
        return target
    if base_url is not None:
        urls = [base_url.rstrip("/") + "/" + urllib.parse.quote(entry["file"])]
    else:
        urls = [entry["url"], *entry["alt_urls"]]
    errors = []
    for url in urls:
        try:
            return download(url, target, max_bytes=entry["max_bytes"], sha256=entry["sha256"],
                            timeout=timeout, progress=progress, what=f"{entry['title']!r} ({name})",
                            retries=retries)
        except DownloadError as e:
            errors.append(str(e))
            if e.unreachable or e.local:
                break  # offline, or the cache cannot be written: the other URLs would fail alike
    if damaged is not None:
        errors.insert(0, f"the cached file {target} is damaged ({damaged}) and was not replaced")
    raise DownloadError(_failure_message(entry, errors), errors)


def load(name: str, size: Size = None, **kwargs) -> torch.Tensor:
    """Image `name` as a tensor (1, 3, H, W) in [0, 1]; downloads it once if needed.

    size: None, an int (longest side) or (H, W), as in `nstlib.images.load_image`.
    kwargs: base_url, cache, timeout, progress, as in `path`.
    """
    return load_image(path(name, **kwargs), size)


def load_or_fallback(name: str, size: Size = None, **kwargs) -> tuple[torch.Tensor, str]:
    """(image (1, 3, H, W), note): image `name`, or its bundled fallback if it cannot be had.

    The note is one line for the notebook to print: a credit line, or, after a failure, which
    bundled image was used instead, why, and how to get the real one.
    Unknown names raise ValueError; only download and decode failures fall back.
    """
    entry_info = info(name)  # unknown names fail here, loudly: a typo must not fall back
    try:
        return load(name, size, **kwargs), entry_info.credit
    except (DownloadError, OSError, ValueError) as e:
        if entry_info.fallback is None:
            raise
        fb = info(entry_info.fallback)
        image = load_image(_bundled_path(fb.key), size)
        reasons = e.reasons if isinstance(e, DownloadError) else [str(e)]
        reason = reasons[0].rstrip(".") + "."
        if len(reasons) > 1:
            reason += f" ({len(reasons) - 1} other URL(s) failed too.)"
        note = (
            f"Could not get {entry_info.title} ({name}): {reason} "
            f"Using the bundled fallback image '{fb.key}' ({fb.title}; {fb.licence}) instead. "
            f"To use the real image, run again when online, or save it as "
            f"${IMAGE_DIR_ENV}/{entry_info.file} (source: {entry_info.source})."
        )
        return image, note


def download(
    url: str,
    target: os.PathLike | str,
    *,
    max_bytes: int,
    sha256: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
    what: Optional[str] = None,
    retries: int = 0,
) -> Path:
    """Download `url` to `target` atomically (through pooch) and check that it is an image.

    Refuses bodies larger than `max_bytes` (by Content-Length, and again while streaming),
    short bodies (fewer bytes than Content-Length), a wrong `sha256` and anything Pillow
    cannot decode or that has more than `nstlib.images.MAX_PIXELS` pixels. The bytes go to a
    temporary file in the target's folder that pooch renames only when every check passed, so
    a failure leaves nothing behind. A target that is already there and passes the checks is
    kept (cached); a damaged one is replaced. retries: more tries after a download that broke
    off. Returns the target path; raises DownloadError.
    """
    import logging

    import pooch

    target = Path(target)
    what = what or target.name
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"cannot download {what}: only http:// and https:// URLs are supported, got {url!r}.")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}.")
    if target.is_file():
        problem = _cached_problem(target, sha256)
        if problem is None:
            return target
        try:
            target.unlink()
        except FileNotFoundError:
            pass  # another kernel replaced it meanwhile
        except OSError as e:
            raise DownloadError(
                f"the cached file {target} is damaged ({problem}) and cannot be removed: {describe_os_error(e)}. "
                f"Delete it (or ask who runs the shared cache), or set {CACHE_ENV} to a folder of your own.",
                local=True,
            ) from None
    registry = pooch.create(
        path=target.parent, base_url="", registry={target.name: f"sha256:{sha256.lower()}" if sha256 else None},
        urls={target.name: url}, retry_if_failed=max(0, int(retries)),
    )
    fetch = _Downloader(max_bytes=max_bytes, sha256=sha256, timeout=timeout, progress=progress, what=what)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # our progress bar says it; pooch's INFO line would repeat it
    try:
        return Path(registry.fetch(target.name, downloader=fetch))
    except DownloadError:
        raise
    except OSError as e:  # the cache folder cannot be created or written (pooch's own check, or the move)
        cause = e.__cause__ if isinstance(e.__cause__, OSError) else e
        raise DownloadError(
            f"cannot write {what} into the cache folder {target.parent}: {describe_os_error(cause)}. "
            f"Nothing was saved. Set {CACHE_ENV} to a writable folder.",
            local=True,
        ) from None
    finally:
        logger.setLevel(level)


class _BrokenOff(DownloadError, ValueError):
    """A download that stopped early: pooch retries on ValueError (retry_if_failed)."""


class _Downloader:
    """pooch's downloader for nstlib: urllib with a size limit, a User-Agent, the image check."""

    def __init__(self, *, max_bytes: int, sha256: Optional[str], timeout: float, progress: bool, what: str) -> None:
        self.max_bytes, self.sha256, self.timeout, self.progress, self.what = max_bytes, sha256, timeout, progress, what

    def __call__(self, url: str, output_file: str, pooch_obj: object = None) -> None:
        tmp = Path(output_file)  # pooch's temporary file in the cache folder, renamed when all passed
        registry = getattr(pooch_obj, "registry", None)
        name = next(iter(registry)) if registry else tmp.name
        try:
            with open(tmp, "wb") as out:
                digest = _fetch(url, out, max_bytes=self.max_bytes, timeout=self.timeout,
                                progress=self.progress, label=name, what=self.what)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # readable by the other users of a shared cache
        except OSError as e:
            raise DownloadError(
                f"cannot save {self.what} into the cache folder {tmp.parent}: {describe_os_error(e)}. "
                f"Nothing was saved; free some space or set {CACHE_ENV} to another folder.",
                local=True,
            ) from None
        if self.sha256 is not None and digest != self.sha256.lower():
            raise DownloadError(
                f"{self.what} from {url} has SHA-256 {digest}, expected {self.sha256.lower()}: the file "
                f"changed on the server or was corrupted on the way. Nothing was saved."
            )
        _check_image(tmp, url, self.what)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _cached_problem(file: Path, sha256: Optional[str]) -> Optional[str]:
    """Why a cached image cannot be used (a wrong SHA-256, or it does not decode), or None."""
    try:
        if sha256 is not None:
            digest = _sha256_file(file)
            return None if digest == sha256.lower() else f"SHA-256 {digest[:12]}..., expected {sha256.lower()[:12]}..."
        with Image.open(file) as img:
            img.load()
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        size = file.stat().st_size if file.exists() else 0
        return f"{size:,} bytes that do not decode as an image: {type(e).__name__}: {e}; a download cut off?"


# -- helpers -------------------------------------------------------------------------------

def _fetch(url: str, out, *, max_bytes: int, timeout: float, progress: bool, label: str, what: str) -> str:
    """Stream `url` into the open file `out`; return the body's SHA-256 hex digest."""
    from tqdm.auto import tqdm  # imported here: no import-time cost for users who never download

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length_header = response.headers.get("Content-Length")
            expected = int(length_header) if length_header and length_header.isdigit() else None
            if expected is not None and expected > max_bytes:
                raise DownloadError(
                    f"refused to download {what} from {url}: the server announces {expected:,} bytes, "
                    f"more than the limit of {max_bytes:,} bytes for this image."
                )
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {label}", disable=not progress, leave=False) as bar:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > max_bytes:
                        raise DownloadError(
                            f"stopped downloading {what} from {url}: more than {max_bytes:,} bytes "
                            f"came, the limit for this image. Nothing was saved."
                        )
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
            if expected is not None and received != expected:
                raise _BrokenOff(
                    f"the download of {what} from {url} broke off after {received:,} of {expected:,} "
                    f"bytes (the connection closed early). Nothing was saved; try again."
                )
    except urllib.error.HTTPError as e:
        hint = ""
        if e.code == 404:
            hint = " The file may have been renamed on the server; check the image's page."
        elif e.code in (403, 429):
            hint = " The server refused or rate-limited the request; wait a minute and try again."
        elif e.code >= 500:
            hint = " The server has a problem; try again later."
        raise DownloadError(f"could not download {what}: {url} answered HTTP {e.code} {e.reason}.{hint}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"could not download {what} from {url}: {_describe_reason(e.reason, timeout)}",
                            unreachable=True) from None
    except (socket.timeout, TimeoutError) as e:
        raise DownloadError(f"could not download {what} from {url}: {_describe_reason(e, timeout)}",
                            unreachable=True) from None
    except (http.client.HTTPException, ConnectionError) as e:
        raise _BrokenOff(
            f"the download of {what} from {url} failed after {received:,} bytes: "
            f"{type(e).__name__}: {e}. Nothing was saved; try again."
        ) from None
    return digest.hexdigest()


def _describe_reason(reason: object, timeout: float) -> str:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s (timed out). Is this machine offline?"
    if isinstance(reason, socket.gaierror):
        return f"the server's name could not be resolved ({reason}). This machine seems to be offline."
    if isinstance(reason, ConnectionRefusedError):
        return "the connection was refused. Is the server (or a proxy) down?"
    return f"{reason}. Check the internet connection (and any proxy settings)."


def _check_image(file: Path, url: str, what: str) -> None:
    """Raise DownloadError unless `file` decodes as an image of at most MAX_PIXELS pixels."""
    try:
        with Image.open(file) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise DownloadError(
                    f"{what} from {url} is {w}x{h} pixels, more than nstlib's limit of {MAX_PIXELS:,}. "
                    f"Nothing was saved; use a smaller version of the image."
                )
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        head = file.read_bytes()[:64].lstrip().lower()
        looks = " It looks like a web page, not an image." if head.startswith((b"<!doctype", b"<html", b"<?xml")) else ""
        raise DownloadError(
            f"what {url} sent for {what} is not an image Pillow can decode ({type(e).__name__}: {e}).{looks} "
            f"Nothing was saved."
        ) from None


def _failure_message(entry: dict, errors: list[str]) -> str:
    tried = "\n".join(f"  - {e}" for e in errors)
    mirror = os.environ.get(IMAGE_DIR_ENV)
    mirror_note = ""
    if mirror and not Path(mirror).is_dir():
        mirror_note = f"\n(${IMAGE_DIR_ENV} is set to {mirror}, which is not a folder.)"
    return (
        f"could not get {entry['title']!r} ({entry['key']}).\n{tried}\n"
        f"What to do: connect to the internet and try again; or download it by hand from "
        f"{entry['page']} and save it as {entry['file']} in a folder named by ${IMAGE_DIR_ENV}; "
        f"or use nstlib.data.load_or_fallback({entry['key']!r}), which falls back to the bundled "
        f"image {entry['fallback']!r}.{mirror_note}"
    )


def _from_mirror(entry: dict) -> Optional[Path]:
    folder = os.environ.get(IMAGE_DIR_ENV)
    if not folder or not Path(folder).is_dir():
        return None
    stem = Path(entry["file"]).stem
    for candidate in [entry["file"], *(stem + s for s in _MIRROR_SUFFIXES)]:
        p = Path(folder) / candidate
        if p.is_file():
            return p
    return None


def _sha256_file(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bundled_path(name: str) -> Path:
    p = DATA_DIR / _bundled()[name]["file"]
    if not p.is_file():
        raise FileNotFoundError(
            f"the bundled image {name!r} should be at {p}, but is not. nstlib expects the "
            f"repository's data/ folder beside the nstlib package (an editable install: pip install -e .)."
        )
    return p


def _entry(name: str) -> dict:
    if not isinstance(name, str):
        raise TypeError(f"an image name must be a string such as 'starry_night', got {type(name).__name__}.")
    downloads = _downloads()
    if name in downloads:
        return downloads[name]
    known = [*_bundled(), *downloads]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"no course image called {name!r}.{hint} Known names: {', '.join(known)}. "
        f"For your own file, use nstlib.images.load_image(path)."
    )


@lru_cache(maxsize=None)
def _bundled() -> dict[str, dict]:
    return _read_list(DATA_DIR / "bundled.json", _REQUIRED_BUNDLED_FIELDS)


@lru_cache(maxsize=None)
def _downloads() -> dict[str, dict]:
    entries = _read_list(DATA_DIR / "paintings.json", _REQUIRED_DOWNLOAD_FIELDS)
    for e in entries.values():
        if e["fallback"] not in _bundled():
            raise ValueError(f"data/paintings.json: {e['key']!r} falls back to {e['fallback']!r}, which is not bundled.")
    return entries


def _read_list(file: Path, required: tuple[str, ...]) -> dict[str, dict]:
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} is missing. nstlib expects the repository's data/ folder beside the nstlib "
            f"package (an editable install: pip install -e .)."
        )
    entries = json.loads(file.read_text(encoding="utf-8"))["images"]
    out = {}
    for e in entries:
        missing = [k for k in required if k not in e]
        if missing:
            raise ValueError(f"{file}: entry {e.get('key', '?')!r} lacks {', '.join(missing)}.")
        out[e["key"]] = e
    return out


def _bundled_info(e: dict) -> ImageInfo:
    return ImageInfo(key=e["key"], title=e["title"], author=e["author"], licence=e["licence"],
                     kind="bundled", role=e["role"], file=e["file"], source=e["source"])


def _download_info(e: dict) -> ImageInfo:
    return ImageInfo(key=e["key"], title=e["title"], author=e["author"], licence=e["licence"],
                     kind="download", role=e["role"], file=e["file"], year=e["year"],
                     source=e["page"], fallback=e["fallback"])
