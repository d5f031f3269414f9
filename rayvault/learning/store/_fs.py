"""File primitives every file-backed write goes through.

- Whole-file writes are atomic: a unique temp file in the same folder, then ``os.replace``; the
  data and the folder entry are flushed before the call returns (unless ``RAYVAULT_FSYNC=0``),
  so a power cut leaves either the old or the new file.
- Read-modify-write cycles hold an inter-process lock (``flock`` on ``<file>.lock``).
- A file that does not parse raises :class:`CorruptFileError` naming it, and is never rewritten:
  the old system read such files as empty and overwrote them, losing everything in them.
- Nothing is written outside a data root (:func:`register_root`) through a symbolic link: the
  folder of every file created, replaced, appended to or locked must resolve inside the root
  (:func:`check_inside`), and files appended to or locked are opened with ``O_NOFOLLOW``. A
  root that is itself a link is fine; ``RAYVAULT_ALLOW_SYMLINKS`` names linked folders allowed on
  purpose. :class:`UnsafePathError` otherwise, before anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from rayvault.learning.exceptions import CorruptFileError, StoreError, UnsafePathError
from rayvault.learning.store._leanjson import read_bytes

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

TEMP_MARKER = ".tmp-"
LOCK_SUFFIX = ".lock"
#: How long a writer waits for another process's lock before giving up, in seconds.
LOCK_TIMEOUT = 60.0
#: Folders (relative to the data root, separated by ``:``) that may be symbolic links leading out
#: of it, for deliberate layouts (``artifacts/videos`` on another disk); ``*`` allows every link.
#: What lies under an allowed folder must still stay inside the folder's target.
ALLOW_SYMLINKS_ENV = "RAYVAULT_ALLOW_SYMLINKS"
#: ``O_NOFOLLOW``: opening a final component that is a symbolic link fails (ELOOP).
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

#: Data roots, as given (absolute, not resolved): paths under one are confined to it.
_roots: set[str] = set()
#: Folders found inside their root, with the (device, inode) they had then and the
#: ``RAYVAULT_ALLOW_SYMLINKS`` in force: a folder that is still the same directory needs no new
#: resolution (one ``stat`` instead of a ``realpath``, 4 µs against 120 µs). A folder replaced
#: by a link is another directory: checked again.
_checked: dict[str, tuple[int, int, str]] = {}
_CHECKED_MAX = 4096


def register_root(root: Path) -> None:
    """Confine every write under ``root`` (and under its resolved path) to it."""
    _roots.add(os.path.abspath(root))
    _roots.add(os.path.realpath(root))


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_inside(path: Path | str) -> None:
    """Refuse (:class:`UnsafePathError`, nothing written) a file under a data root whose folder
    resolves outside it through a symbolic link. Paths under no root are not checked."""
    _check_folder(os.path.dirname(path), path)


def check_folder(folder: Path | str) -> None:
    """:func:`check_inside` for a folder about to be written into (links, removals)."""
    _check_folder(os.fspath(folder), folder)


def _check_folder(folder: str, path: Path | str) -> None:
    known = _checked.get(folder)
    setting = os.environ.get(ALLOW_SYMLINKS_ENV, "")
    if known is not None:
        try:
            st = os.stat(folder)
        except OSError:
            pass
        else:
            if (st.st_dev, st.st_ino, setting) == known:
                return
    roots = [root for root in _roots if _under(folder, root)]
    if not roots:
        return
    real = os.path.realpath(folder)
    for root in roots:
        if _under(real, os.path.realpath(root)) or allowed_link(root, folder, real):
            continue
        where = "it" if os.fspath(path) == folder else folder
        raise UnsafePathError(
            path,
            f"{where} leads outside the data root {root} through a symbolic link "
            f"(it resolves to {real})",
        )
    try:
        st = os.stat(folder)
    except OSError:
        return  # not created yet: its existing part resolved inside; checked again next time
    if len(_checked) >= _CHECKED_MAX:
        _checked.clear()
    _checked[folder] = (st.st_dev, st.st_ino, setting)


def allowed_link(root: str, folder: str, real: str) -> bool:
    """Whether ``folder`` lies under a link ``RAYVAULT_ALLOW_SYMLINKS`` allows, and resolves
    inside that link's target."""
    setting = os.environ.get(ALLOW_SYMLINKS_ENV, "").strip()
    if not setting:
        return False
    if setting == "*":
        return True
    for item in setting.split(":"):
        entry = item.strip().strip("/")
        if not entry:
            continue
        linked = os.path.join(root, entry)
        if _under(folder, linked) and _under(real, os.path.realpath(linked)):
            return True
    return False


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a symbolic link at ``path`` itself (after
    :func:`check_inside` has vetted its folder); :class:`UnsafePathError` when it is one."""
    try:
        return os.open(path, flags | NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(path, "it is a symbolic link") from None
        raise


#: The values of ``RAYVAULT_FSYNC`` that turn durable writes off.
_FSYNC_OFF = frozenset({"0", "false", "no", "off"})


def fsync_enabled() -> bool:
    """Durable writes: on unless ``RAYVAULT_FSYNC=0`` (issue 15: ``create_event`` flushes its
    files together, 7 ms p50 against 3 ms unflushed, so the safe choice is the default)."""
    return os.environ.get("RAYVAULT_FSYNC", "").strip().lower() not in _FSYNC_OFF


class _Group:
    """The files and folders written durably inside :func:`durable_group`, flushed at its end."""

    __slots__ = ("files", "folders")

    def __init__(self) -> None:
        self.files: dict[str, None] = {}
        self.folders: dict[str, None] = {}


_group: ContextVar[_Group | None] = ContextVar("rayvault_durable_group", default=None)


@contextlib.contextmanager
def durable_group(anchor: Path) -> Iterator[None]:
    """Group commit: the durable writes made inside the block are not flushed one by one but
    together when it ends, before the caller returns (``create_event`` touches five files in
    three folders: ten flushes one by one, 20 ms p50 here; one flush of them all, 3 ms). A
    block that raises flushes what it wrote too. ``anchor``: a folder on the data root's
    filesystem. Nested blocks join the outer one."""
    if _group.get() is not None or not fsync_enabled():
        yield
        return
    group = _Group()
    token = _group.set(group)
    try:
        yield
    finally:
        _group.reset(token)
        if group.files or group.folders:
            flush_now(anchor, list(group.files), list(group.folders))


def barrier(anchor: Path) -> None:
    """Inside :func:`durable_group`: flush what the group wrote so far, now, so that it is
    durable before anything written next (a write that must not outlive an earlier one).
    Outside a group every durable write is flushed as it is made: nothing to do."""
    group = _group.get()
    if group is None or not (group.files or group.folders):
        return
    flush_now(anchor, list(group.files), list(group.folders))
    group.files.clear()
    group.folders.clear()


def flush_now(anchor: Path, files: list[str], folders: list[str]) -> None:
    """Make ``files`` and the entries of ``folders`` durable: one ``syncfs`` of the filesystem
    holding ``anchor`` where Linux offers it (one journal commit for them all), else an
    ``fsync`` of each file, then of each folder."""
    if _syncfs(anchor):
        return
    for path in (*files, *folders):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # replaced or removed since: what replaced it was flushed on its own
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _syncfs(anchor: Path) -> bool:
    """``syncfs(2)`` on the filesystem of ``anchor``; False where it is not available."""
    call = _syncfs_call()
    if call is None:
        return False
    try:
        fd = os.open(anchor, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if call(fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}", str(anchor))
    finally:
        os.close(fd)
    return True


@functools.cache
def _syncfs_call() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here: 1.6 ms of import the gate's cold start does not need

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return call


def sync_file(fd: int, path: Path | str) -> None:
    """``fsync`` the file open as ``fd`` (at ``path`` once the write is done), or, inside
    :func:`durable_group`, leave it to the group's flush."""
    group = _group.get()
    if group is None:
        os.fsync(fd)
    else:
        group.files[os.fspath(path)] = None


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` durable (now, or with the group's flush)."""
    group = _group.get()
    if group is not None:
        group.folders[os.fspath(path)] = None
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    return path.with_name(f"{path.name}{TEMP_MARKER}{os.urandom(6).hex()}")


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


def atomic_write(
    path: Path, data: bytes, *, fsync: bool | None = None, replace_durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new bytes, never a mix.

    Durable writes flush the new file before it replaces the old one, and then the folder, so
    the replacement itself survives a power cut. ``replace_durable=False`` skips that last flush
    for a write whose loss is harmless: after a power cut the folder holds the old file or the
    new one, each whole (the new one was flushed before the rename), so only this write may be
    lost."""
    durable = fsync_enabled() if fsync is None else fsync
    check_inside(path)
    tmp = temp_path_for(path)
    try:
        with _create(tmp) as fh:
            fh.write(data)
            if durable:
                fh.flush()
                sync_file(fh.fileno(), path)
        try:  # replaces a link at ``path`` itself, never writes through it
            os.replace(tmp, path)
        except OSError as e:
            raise os_error(path, e) from e
    except BaseException:
        with contextlib.suppress(OSError):  # never created, or its folder is not one
            tmp.unlink()
        raise
    if durable and replace_durable:
        fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes, *, fsync: bool | None = None) -> bool:
    """Write a new file that must not exist yet; False (nothing written) if it does.

    Used for dated files (snapshots, notes) that must never overwrite one another.
    """
    durable = fsync_enabled() if fsync is None else fsync
    check_inside(path)
    tmp = temp_path_for(path)
    try:
        with _create(tmp) as fh:
            fh.write(data)
            if durable:
                fh.flush()
                sync_file(fh.fileno(), path)
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
    data = read_bytes(path)
    return None if data is None else parse_json(data, path)


def parse_json(data: bytes, path: Path) -> Any:
    """Parse bytes read from ``path``; :class:`CorruptFileError` naming it when they are bad."""
    import orjson  # here: a cold gate reads its files with ``_leanjson``

    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        what = "is empty" if not data.strip() else f"is not valid JSON ({e})"
        raise CorruptFileError(path, what) from e


def dump_json(value: Any) -> bytes:
    """Pretty, stable JSON for whole files people may read."""
    import orjson

    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def lock_path_for(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


@contextlib.contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT, *, remove: bool = False) -> Iterator[int]:
    """Hold the inter-process lock of ``path``: ``flock`` on a ``.lock`` file beside it.

    A plain ``flock`` rather than the filelock package: filelock 4 measured 110-290 µs per
    acquire here (fork tracking, ownership checks) against 4 µs, and ``create_event`` takes four
    locks; its p50 budget is 3 ms. Not re-entrant: no code path takes the same lock twice.

    Lock files may be removed (``remove=True`` on release, for named one-off locks; the doctor,
    for lock files left behind), so after ``flock`` succeeds the lock file must still be the one
    at the path: a process that opened a file which was unlinked before it got the lock would
    otherwise hold a lock nobody else can see, and two writers would run at once.

    Yields the lock file's descriptor: a holder may note in it what it is in the middle of, so
    the next holder can finish the work of one that was killed (see ``FileStore``).
    """
    lock_file = lock_path_for(path)
    check_inside(lock_file)
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
        yield fd
    finally:
        try:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_file)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _open_lock(lock_file: Path, path: Path) -> int:
    # O_NOFOLLOW: a (dangling) link in place of the lock file would create its target.
    try:
        try:
            return open_nofollow(lock_file, os.O_RDWR | os.O_CREAT)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            return open_nofollow(lock_file, os.O_RDWR | os.O_CREAT)
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
        fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC | NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.ELOOP:
            return False  # a link is never used as a lock (see _open_lock)
        raise
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
        fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC | NOFOLLOW)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno == errno.ELOOP:
            return False  # a link, not a lock file of ours: left for a person to look at
        raise
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
