"""The course's images: bundled photos and textures, and paintings downloaded on first use.

Names ("keys") come from two lists in the repository's data/ folder:

- data/bundled.json: images shipped in data/ (scikit-image photos and textures, images the
  project draws itself). Always available.
- data/paintings.json: famous public-domain paintings and the paper's Tuebingen photo. They are
  downloaded once into a cache folder, with a progress bar, refused when larger than the
  entry's ``max_bytes``, checked against ``sha256`` when one is given, checked to decode as an
  image, and written atomically (a failed download leaves nothing behind).

The download itself (`nstlib.download`) goes through pooch's cache: a temporary file in the
cache folder, renamed into place when every check passed, so several kernels fetching the same
painting at once leave a whole file. A cached file that is damaged (a wrong SHA-256, or one
that does not decode: a download cut off by an older tool, a disk error) is detected, removed
and fetched again.

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
import json
import os
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

from .download import CACHE_ENV, DEFAULT_TIMEOUT, USER_AGENT, DownloadError, _cached_problem, download
from .images import Size, load_image

__all__ = ["CACHE_ENV", "DATA_DIR", "DEFAULT_TIMEOUT", "IMAGE_DIR_ENV", "USER_AGENT", "DownloadError", "ImageInfo",
           "cache_dir", "download", "info", "list_images", "load", "load_or_fallback", "path"]

#: The repository's data/ folder (nstlib is installed editable, beside it).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
#: Environment variable naming a local mirror folder of the downloadable images.
IMAGE_DIR_ENV = "NSTLIB_IMAGE_DIR"

_MIRROR_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_REQUIRED_DOWNLOAD_FIELDS = ("key", "title", "author", "year", "role", "licence", "page", "url",
                             "alt_urls", "file", "sha256", "max_bytes", "fallback")
_REQUIRED_BUNDLED_FIELDS = ("key", "file", "role", "title", "author", "licence", "source")


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


# -- helpers -------------------------------------------------------------------------------

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
