"""Downloading one image file safely: through pooch's cache, with a size limit, a User-Agent,
a SHA-256 and an image check, and messages that say what to do.

pooch (the fetcher of scikit-image and SciPy) downloads into a temporary file in the cache
folder, checks the hash and renames the file into place, retrying a download that broke off;
nstlib's downloader (`_Downloader`, the HTTP part) adds what pooch's does not: the size limit,
the User-Agent, the image check and the messages. Several kernels fetching the same painting at
once each write their own temporary file and rename it, so the cache always holds a whole file.
`nstlib.data` knows which images there are and where each comes from; this module fetches one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from PIL import Image, UnidentifiedImageError

from . import __version__
from ._io import describe_os_error
from .images import MAX_PIXELS

#: Seconds to wait for a connection or for the next bytes of a download.
DEFAULT_TIMEOUT = 30.0
#: Wikimedia refuses requests without a descriptive User-Agent.
USER_AGENT = f"nstlib/{__version__} (neural style transfer course; educational use) Python-urllib"
_CHUNK = 64 * 1024
#: Environment variable naming the download cache folder.
CACHE_ENV = "NSTLIB_DATA_CACHE"


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


def _sha256_file(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
