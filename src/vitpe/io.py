"""JSON reads that fail with one line naming the file, and atomic writes: a crash or a kill never
leaves a half-written file at the final path.

Snakemake and DVC treat an existing output as finished, so every result is written to a temporary
file in the same directory and renamed into place (rename is atomic on POSIX filesystems). The
published file gets the mode a plain ``open`` would give (0666 less the umask), not mkstemp's 0600,
so teammates on a shared filesystem can read results. A temporary file a killed writer left behind
is removed by the next write of the same target (one writer per target: Snakemake runs one job per
output, and only the main process of a distributed run writes).
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from vitpe.errors import DataError, OutputError


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set and restore."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _blocking_file(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) that is not a folder, if any."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def check_creatable(folder: str | os.PathLike, what: str = "output folder") -> None:
    """OutputError of one line if a file stands where ``folder`` or one of its parents should be: a
    check before long work, which creates nothing."""
    blocker = _blocking_file(Path(folder))
    if blocker is not None:
        raise OutputError(f"{folder}: cannot create the {what} ({blocker} is a file, expected a folder)")


def make_dirs(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """``mkdir -p folder``, or an OutputError of one line naming the folder and why it cannot exist."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        check_creatable(folder, what)  # a file in the way is named as such
        raise OutputError(f"{folder}: cannot create the {what} ({exc.strerror or type(exc).__name__})") from None
    return folder


#: errors of a write that say nothing about the program: the target's file system refused it
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}

_RANDOM = "?" * 8  # the random part of tempfile.mkstemp's names


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files earlier (killed) writes of ``path`` left next to it; return them."""
    path = Path(path)
    prefix = glob.escape(f".{path.name}.") + _RANDOM + ".tmp"
    stale = [tmp for extension in {"", path.suffix}
             for tmp in path.parent.glob(prefix + glob.escape(extension))]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_extension: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it to ``path`` only if the block succeeds.

    ``keep_extension`` ends the temporary name with ``path``'s extension, for writers that pick the
    format from it (matplotlib's savefig).
    """
    path = Path(path)
    make_dirs(path.parent)
    kept = "the previous file is kept" if path.exists() else "nothing written"
    try:
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + (path.suffix if keep_extension else ""),
                                   dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {path.parent} ({exc.strerror}); {kept}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        if path.is_dir():
            raise OutputError(f"{path}: is a folder, expected a file path for the output; nothing written")
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        raise OutputError(f"{path}: write failed ({exc.strerror}); {kept}") from None
    finally:
        tmp_path.unlink(missing_ok=True)


def publish_folder(source: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Replace folder ``dest`` by a copy of ``source`` (nothing when ``source`` does not exist): copied
    beside ``dest`` first, so a kill leaves the old folder or a temporary one, never a half-copied
    ``dest``; the temporary copies a kill left behind are removed first."""
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        return
    make_dirs(dest.parent)
    for stale in dest.parent.glob(glob.escape(f".{dest.name}.") + _RANDOM + ".tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        os.chmod(tmp, 0o777 & ~current_umask())
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    except OSError as exc:
        raise OutputError(f"{dest}: cannot publish {source} ({exc.strerror})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def all_or_none(paths: Iterable[str | os.PathLike]) -> Iterator[None]:
    """Outputs written together: if the block fails, remove every one of ``paths`` (stale ones too), so
    none passes for a finished output while another is missing; the error propagates."""
    try:
        yield
    except BaseException:
        for path in map(Path, paths):
            with contextlib.suppress(OSError):  # a path that cannot exist (under a file) is no leftover
                if not path.is_dir():
                    path.unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike, what: str, require_object: bool = False) -> Any:
    """The JSON document at ``path``, or a DataError of one line naming the file and ``what`` it should
    hold (e.g. "metrics file") when it is missing, unreadable, not JSON or (``require_object``) not an
    object."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc.__class__.__name__
        raise DataError(f"{path}: {what} is not readable ({reason})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected the {what}") from None
    if require_object and not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object ({what}), found {type(doc).__name__}")
    return doc


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON atomically (stable bytes for DVC and git)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
