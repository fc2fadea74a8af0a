"""Atomic file writes: write beside the target, then rename.

An interrupted save (Ctrl-C, a full disk, a crash) never leaves half a file where a good one
was, and readers never see a partial file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; rename it to `path` on success.

    The file is created with mode 0o666 minus the umask (as open() would), not the private
    0o600 that tempfile.mkstemp uses, so that saved images stay readable on a shared hub.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist.")
    if path.is_dir():
        raise ValueError(f"cannot write to {path}: it is a folder.")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
