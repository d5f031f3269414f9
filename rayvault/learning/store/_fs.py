"""File primitives every file-backed write goes through.

- Whole-file writes are atomic: a unique temp file in the same folder, then ``os.replace``; with
  ``RAYVAULT_FSYNC=1`` the data and the folder entry are fsynced, so a power cut leaves either the
  old or the new file.
- Read-modify-write cycles hold an inter-process lock (``<file>.lock``, ``flock`` via filelock).
- A file that does not parse raises :class:`CorruptFileError` naming it, and is never rewritten:
  the old system read such files as empty and overwrote them, losing everything in them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock, Timeout

from rayvault.learning.exceptions import CorruptFileError, StoreError

TEMP_MARKER = ".tmp-"
LOCK_SUFFIX = ".lock"
#: How long a writer waits for another process's lock before giving up, in seconds.
LOCK_TIMEOUT = 60.0


def fsync_enabled() -> bool:
    """Durable writes requested with ``RAYVAULT_FSYNC=1``."""
    return os.environ.get("RAYVAULT_FSYNC", "").strip().lower() in {"1", "true", "yes", "on"}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    return path.with_name(f"{path.name}{TEMP_MARKER}{secrets.token_hex(6)}")


def is_temp_file(path: Path) -> bool:
    return TEMP_MARKER in path.name


def atomic_write(path: Path, data: bytes, *, fsync: bool | None = None) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new bytes, never a mix."""
    durable = fsync_enabled() if fsync is None else fsync
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        with tmp.open("xb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes, *, fsync: bool | None = None) -> bool:
    """Write a new file that must not exist yet; False (nothing written) if it does.

    Used for dated files (snapshots, notes) that must never overwrite one another.
    """
    durable = fsync_enabled() if fsync is None else fsync
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        with tmp.open("xb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        try:
            # A hard link fails if the name is taken: an atomic create-if-absent of full content.
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if durable:
        fsync_dir(path.parent)
    return True


def read_json(path: Path) -> Any | None:
    """Parse a JSON file; None when it does not exist; :class:`CorruptFileError` when it is bad."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CorruptFileError(path, f"cannot be read ({e.strerror or e})") from e
    return parse_json(data, path)


def parse_json(data: bytes, path: Path) -> Any:
    """Parse bytes read from ``path``; :class:`CorruptFileError` naming it when they are bad."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        what = "is empty" if not data.strip() else f"is not valid JSON ({e})"
        raise CorruptFileError(path, what) from e


def dump_json(value: Any) -> bytes:
    """Pretty, stable JSON for whole files people may read."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def lock_path_for(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


@contextlib.contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the inter-process lock of ``path`` (a ``.lock`` file beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A singleton per path makes the lock re-entrant within a thread: a second flock on a new
    # descriptor from the same process would otherwise wait for itself.
    lock = FileLock(lock_path_for(path), timeout=timeout, is_singleton=True)
    try:
        lock.acquire()
    except Timeout as e:
        raise StoreError(
            f"timed out after {timeout:.0f}s waiting for the lock on {path}",
            hint="another process holds it; if none is running, "
            "`rayvault-learn doctor` finds stale locks",
        ) from e
    try:
        yield
    finally:
        lock.release()
