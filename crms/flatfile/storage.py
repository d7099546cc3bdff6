"""The file system side: an exclusive lock per file, and writes that replace a file whole.

The lock is fcntl.flock on a sidecar `<file>.lock` (POSIX only). Locking the data file itself
would not do: os.replace swaps it for a new inode, so a second writer could lock the old one.
The sidecar is never deleted, for the same reason.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

from crms.base import ConnectorError

LOCK_POLL = 0.02  # seconds between tries while another process holds the lock
PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


def lock_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.lock")


@contextmanager
def locked(path: Path, *, timeout: float) -> Iterator[None]:
    """Hold the file's lock for the block; raises ConnectorError(lock_timeout) after `timeout` s."""
    with open(lock_path(path), "a") as handle:  # "a": created when missing, never truncated
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConnectorError(
                        f"{path.name} stayed locked by another writer for {timeout:g} s", code="lock_timeout"
                    ) from None
                time.sleep(LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomically(path: Path, write: Callable[[TextIO], None], *, encoding: str) -> None:
    """Write a temp file beside `path`, fsync it, then os.replace: readers see the old file or the new, whole."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
    try:
        with open(fd, "w", encoding=encoding.removesuffix("-sig"), newline="") as stream:
            with suppress(FileNotFoundError):
                os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))  # the replacement keeps the file's permissions
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def io_error(exc: OSError, path: Path) -> ConnectorError:
    if exc.errno in PERMANENT_ERRNOS:
        return ConnectorError(f"{path}: {exc.strerror}", code="permission_denied", permanent=True)
    return ConnectorError(f"{path}: {exc.strerror or exc}", code="io_error")
