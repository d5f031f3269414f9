"""File primitives every file-backed write goes through.

- Whole-file writes are atomic: a unique temp file in the same folder, then ``os.replace``; with
  ``RAYVAULT_FSYNC=1`` the data and the folder entry are fsynced, so a power cut leaves either the
  old or the new file.
- Read-modify-write cycles hold an inter-process lock (``flock`` on ``<file>.lock``).
- A file that does not parse raises :class:`CorruptFileError` naming it, and is never rewritten:
  the old system read such files as empty and overwrote them, losing everything in them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

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


def os_error(path: Path, error: OSError, doing: str = "write") -> StoreError:
    """An operating-system error on a data file (a file where a folder should be, a folder where
    a file should be, no permission, …) as a :class:`StoreError` naming the path at fault."""
    where = error.filename if error.filename else path
    return StoreError(
        f"cannot {doing} {where}: {error.strerror or error}",
        hint="check the data root's layout (a file where a folder belongs, or the reverse) "
        "and its permissions",
    )


def _create(path: Path) -> BinaryIO:
    """Open a new file for writing, creating its folder on first use."""
    try:
        try:
            return path.open("xb")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("xb")
    except OSError as e:
        raise os_error(path, e) from e


def atomic_write(path: Path, data: bytes, *, fsync: bool | None = None) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new bytes, never a mix."""
    durable = fsync_enabled() if fsync is None else fsync
    tmp = temp_path_for(path)
    try:
        with _create(tmp) as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise os_error(path, e) from e
    except BaseException:
        with contextlib.suppress(OSError):  # never created, or its folder is not one
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes, *, fsync: bool | None = None) -> bool:
    """Write a new file that must not exist yet; False (nothing written) if it does.

    Used for dated files (snapshots, notes) that must never overwrite one another.
    """
    durable = fsync_enabled() if fsync is None else fsync
    tmp = temp_path_for(path)
    try:
        with _create(tmp) as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        try:
            # A hard link fails if the name is taken: an atomic create-if-absent of full content.
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:
            raise os_error(path, e) from e
    finally:
        with contextlib.suppress(OSError):  # never created, or its folder is not one
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
def locked(path: Path, timeout: float = LOCK_TIMEOUT, *, remove: bool = False) -> Iterator[None]:
    """Hold the inter-process lock of ``path``: ``flock`` on a ``.lock`` file beside it.

    A plain ``flock`` rather than the filelock package: filelock 4 measured 110-290 µs per
    acquire here (fork tracking, ownership checks) against 4 µs, and ``create_event`` takes four
    locks; its p50 budget is 3 ms. Not re-entrant: no code path takes the same lock twice.

    Lock files may be removed (``remove=True`` on release, for named one-off locks; the doctor,
    for lock files left behind), so after ``flock`` succeeds the lock file must still be the one
    at the path: a process that opened a file which was unlinked before it got the lock would
    otherwise hold a lock nobody else can see, and two writers would run at once.
    """
    lock_file = lock_path_for(path)
    deadline = time.monotonic() + timeout
    while True:
        fd = _open_lock(lock_file, path)
        try:
            _acquire(fd, path, deadline, timeout)
        except BaseException:
            os.close(fd)
            raise
        if _is_current(fd, lock_file):
            break
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    try:
        yield
    finally:
        try:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_file)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _open_lock(lock_file: Path, path: Path) -> int:
    try:
        try:
            return os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise os_error(lock_file, e, "lock") from e


def _is_current(fd: int, lock_file: Path) -> bool:
    """True when the open lock file ``fd`` is still the file at ``lock_file``."""
    try:
        st = os.stat(lock_file)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (held.st_ino, held.st_dev)


def _acquire(fd: int, path: Path, deadline: float, timeout: float) -> None:
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"timed out after {timeout:.0f}s waiting for the lock on {path}",
                    hint="another process holds it; if none is running, "
                    "`rayvault-learn doctor` finds stale locks",
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.02)


def lock_file_held(lock_file: Path) -> bool:
    """True when some process holds the lock file ``lock_file`` right now."""
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def remove_lock_file(lock_file: Path) -> bool:
    """Remove a lock file nobody holds; False (nothing removed) when a process holds it or it
    was replaced meanwhile.

    The file is unlinked while this process holds its lock, so a writer that opened it just
    before sees it is gone once it gets the lock, and takes a new one (see :func:`locked`).
    """
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not _is_current(fd, lock_file):
            return False  # replaced meanwhile by a new lock file, which may be in use
        os.unlink(lock_file)
        return True
    finally:
        os.close(fd)  # closing releases the lock
