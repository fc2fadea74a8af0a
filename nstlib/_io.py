"""Atomic file writes: write beside the target, then rename.

An interrupted save (Ctrl-C, a full disk, a crash) never leaves half a file where a good one
was, and readers never see a partial file. Every file nstlib writes goes through `atomic_write`
(images, their JSON, the panels' saves, the explorer's slides, figures); files that belong
together (an image and its JSON) are written as one `atomic_group`: all or none.

On an OS error the write raises `WriteError`, an OSError whose message is one line naming the
file and the cause in words ("the disk is full", "the folder is on a read-only file system",
"permission denied"), and saying that the previous file is unchanged. The temporary file is
removed. A process killed outright (SIGKILL, power loss) can leave a hidden temporary file
(``.NAME.XXXXXXXX.tmp``) beside the target, never a partial target; `atomic_write` removes such
leftovers older than an hour when it next writes in that folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import secrets
import time
from pathlib import Path
from typing import IO, Iterator, Optional

#: Temporary files of writes that were killed, older than this (seconds), are removed.
STALE_TMP_S = 3600.0

_CAUSES = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied (operation not permitted)",
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "the name is a folder",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EIO: "an input/output error (a failing disk or a dropped network drive)",
    errno.EFBIG: "the file is larger than the file system allows",
    errno.EMFILE: "too many open files in this process",
}
if hasattr(errno, "EDQUOT"):
    _CAUSES[errno.EDQUOT] = "the disk quota is exceeded (your share of the disk is full)"


def describe_os_error(error: OSError) -> str:
    """The cause of an OS error in words: 'the disk is full (no space left on device)', ..."""
    cause = _CAUSES.get(error.errno or -1)
    if cause is None:
        cause = (error.strerror or str(error) or type(error).__name__).rstrip(".")
        cause = cause[:1].lower() + cause[1:]
    return cause


class WriteError(OSError):
    """A file could not be written. str() is one line: the file, the cause, what was kept."""

    def __init__(self, path: os.PathLike | str, cause: OSError, *, kept: Optional[bool] = None) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path = Path(path)
        self.cause = cause
        if kept is None:
            kept = self.path.exists()
        tail = (f"nothing was written; the previous {self.path.name} is unchanged" if kept
                else "nothing was written")
        self.message = f"cannot write {self.path}: {describe_os_error(cause)}; {tail}."

    def __str__(self) -> str:
        return self.message


def ensure_folder(path: os.PathLike | str, for_file: Optional[os.PathLike | str] = None) -> Path:
    """mkdir -p `path`; an OS error becomes a WriteError naming `for_file` (or the folder)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(for_file if for_file is not None else path, e) from None
    return path


class _Group:
    """Temporary files written so far in an `atomic_group`, renamed together at its end."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []  # (temporary, target)


_GROUP: contextvars.ContextVar[Optional[_Group]] = contextvars.ContextVar("nstlib_atomic_group", default=None)


@contextlib.contextmanager
def atomic_group() -> Iterator[None]:
    """Every `atomic_write` inside is kept as a temporary file and renamed only when all succeeded.

    A failure (an OS error, Ctrl-C, any exception) inside removes every temporary file: the
    targets keep their previous contents, all of them. Nested groups join the outermost one.
    """
    if _GROUP.get() is not None:
        yield
        return
    group = _Group()
    token = _GROUP.set(group)
    try:
        yield
        done = 0
        try:
            for tmp, target in group.pending:
                os.replace(tmp, target)
                done += 1
        except OSError as e:
            raise WriteError(group.pending[done][1], e) from None
    finally:
        _GROUP.reset(token)
        for tmp, _ in group.pending:
            _unlink_quietly(tmp)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, encoding: Optional[str] = None) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; rename it to `path` on success.

    The file is created with mode 0o666 minus the umask (as open() would), not the private
    0o600 that tempfile.mkstemp uses, so that saved images stay readable on a shared hub.
    Text modes write UTF-8 unless `encoding` says otherwise. The data is flushed to the disk
    (fsync) before the rename. Inside an `atomic_group`, the rename waits for the group's end.
    An OS error raises `WriteError` (one line: the file, the cause, the previous file kept).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist.")
    if path.is_dir():
        raise ValueError(f"cannot write to {path}: it is a folder.")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    _remove_stale(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise WriteError(path, e) from None
    group = _GROUP.get()
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if group is None:
            os.replace(tmp, path)
        else:
            group.pending.append((tmp, path))
    except OSError as e:
        _unlink_quietly(tmp)
        if isinstance(e, WriteError) or e.errno is None:
            raise
        raise WriteError(path, e) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _remove_stale(path: Path) -> None:
    """Remove `.NAME.XXXXXXXX.tmp` files of killed writes of this target, older than STALE_TMP_S."""
    try:
        now = time.time()
        for old in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
            if len(old.name) == len(path.name) + 14 and now - old.stat().st_mtime > STALE_TMP_S:
                old.unlink()
    except OSError:
        pass


def glob_escape(name: str) -> str:
    """`name` with glob's special characters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
