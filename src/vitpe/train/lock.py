"""One live process per output folder: an exclusive, non-blocking ``fcntl.flock`` on a lock file.

The kernel drops a flock when its holder dies, however it dies (kill -9 included), so a lock is never
stale and nothing has to be cleaned up by hand. The holder writes its pid into the file so that a
refused process can name it. The file is removed on release; a process that opened it just before
the removal would then hold a lock on a file no longer at ``path``, so after locking we check that
``path`` still is the file we locked, and retry otherwise.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from vitpe.errors import InUse
from vitpe.io import make_dirs

LOCK_NAME = "trainer.lock"  # in an output folder's state/: held by its live trainer or transfer (rank 0)


def holder_pid(path: Path) -> str:
    """The pid written by the process holding ``path`` ('unknown' while it has not written it yet)."""
    try:
        return Path(path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _acquire(path: Path, what: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InUse(f"{what} is in use by another live process (pid {holder_pid(path)}, lock {path}); "
                        "wait for it to finish or stop it") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # we locked a file its holder had just removed: try the one at `path` now


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str, enabled: bool = True) -> Iterator[int | None]:
    """Hold an exclusive flock on ``path`` (its folder is created) for the ``with`` block; ``InUse``
    (one line naming ``what`` and the holder's pid) if a live process holds it. ``enabled=False``
    (e.g. every rank but 0 under torchrun) takes nothing. Yields the lock's file descriptor."""
    if not enabled:
        yield None
        return
    path = Path(path)
    make_dirs(path.parent)
    fd = _acquire(path, what)
    try:
        yield fd
    finally:
        with contextlib.suppress(FileNotFoundError):  # the folder may be gone already (a finished run)
            os.unlink(path)  # while still locked, so no one can lock the old file meanwhile
        os.close(fd)
