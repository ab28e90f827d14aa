"""Files that are never half-written, and one lock for one writer.

A file is written to a temporary name in the same folder, flushed to disk and moved over the final
name with ``os.replace`` (atomic on POSIX), then the folder is flushed too, so a process killed
mid-write (or a power loss) leaves either the old file or the new one, never a truncated one; the
result gets the permissions an ordinary ``open`` would give (``0666`` less the umask). A killed
writer can leave its temporary file behind: ``remove_temporaries`` clears them the next time the
folder's owner starts.

JSON has no numbers for NaN and infinity, which a diverged run's metrics hold: ``dumps_json``
writes them as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (so that strict parsers,
``jq`` or JavaScript, read every file of the suite) and ``loads_json`` turns those strings back
into floats.

``exclusive_lock`` is the one lock of the suite (data generation, image caches, runs, reproduction
folders): an ``flock`` on a file, released by the kernel when its holder dies, so a crash never
leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "dumps_json",
    "exclusive_lock",
    "loads_json",
    "remove_temporaries",
    "writable_folder",
]

_TMP_SUFFIX = ".tmp"


def _umask() -> int:
    """The process's umask, read without setting it where the kernel reports it (Linux): setting it,
    even for an instant, would give a file that another thread creates meanwhile the wrong mode."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries to disk, so that a rename into it survives a power loss (where the
    system lets a folder be opened and synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], object], binary: bool = True) -> None:
    """Write ``path`` atomically: ``write(file_object)`` fills a temporary file that replaces it.

    Args:
        path: final file name; its folder is created if missing.
        write: callable receiving an open file object.
        binary: open the temporary file in binary (True) or text mode.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder: cannot write a file in its place")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private (0600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write a text file."""
    atomic_write(path, lambda f: f.write(text), binary=False)


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _strict(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {key: _strict(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(value) for value in obj]
    return obj


def _restored(obj: Any) -> Any:
    if isinstance(obj, str):
        return _NON_FINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {key: _restored(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_restored(value) for value in obj]
    return obj


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """``json.dumps(obj)`` as strict JSON: NaN and infinities as the strings ``"NaN"``, ``"Infinity"``
    and ``"-Infinity"``."""
    return json.dumps(_strict(obj), indent=indent, allow_nan=False)


def loads_json(text: str) -> Any:
    """``json.loads(text)`` with the strings of ``dumps_json`` (and bare ``NaN``, ``Infinity``, as
    files written before it hold) read back as floats.

    Raises:
        json.JSONDecodeError: ``text`` is not JSON.
    """
    return _restored(json.loads(text))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented strict JSON (``dumps_json``)."""
    atomic_write_text(path, dumps_json(obj, indent=2) + "\n")


def remove_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed ``atomic_write`` calls left in ``folder``.

    Only call this while holding the folder's lock: another writer's temporary file is in use.

    Returns:
        The files removed.
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for path in folder.glob(f".*{_TMP_SUFFIX}"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


@contextmanager
def exclusive_lock(path: str | os.PathLike[str], wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    Args:
        path: the lock file.
        wait: block until the lock is free; with False, do not wait.

    Yields:
        Whether the lock is held (always True with ``wait``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def writable_folder(path: str | os.PathLike[str], name: str) -> Path:
    """``path`` as a folder that exists and can be written, else ``ValueError`` naming ``name``.

    Args:
        path: the folder (created, with its parents, if missing).
        name: what to call it in the message, e.g. ``"--out"``.
    """
    text = os.fspath(path)
    if not text.strip():
        raise ValueError(f"{name} must name a folder, got an empty path")
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name} {text!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except (NotADirectoryError, FileExistsError):
        raise ValueError(f"{name} {text!r} lies under a file, not a folder") from None
    except PermissionError:
        raise ValueError(f"{name} {text!r} is not writable") from None
    except OSError as err:
        raise ValueError(f"{name} {text!r} cannot be written ({err.strerror})") from None
    return folder
