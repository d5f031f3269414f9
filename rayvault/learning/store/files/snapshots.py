"""The order of an agent's memory snapshots (``memory_archive/``), newest last (their names:
``store._names``).

Snapshots sort by their time, then their sequence number (names without one first), then the
file's modification time (a snapshot is a hard link to the memory file it keeps: its mtime is
when that version was written).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from rayvault.learning._time import compact_ts
from rayvault.learning.store._names import SEQ_DIGITS, SNAPSHOT_NAME, snapshot_time


def _seq(name: str) -> int:
    """The snapshot's sequence number (-1 for names without one)."""
    match = SNAPSHOT_NAME.fullmatch(name)
    tail = (match.group(2) or "") if match else ""
    return int(tail) if len(tail) == SEQ_DIGITS and tail.isdigit() else -1


def snapshot_key(path: Path) -> tuple[datetime, int, int, str] | None:
    """The sort key of a snapshot file, or None when the name is not a snapshot's."""
    name = path.name
    when = snapshot_time(name)
    if when is None:
        return None
    seq = _seq(name)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return when, seq, mtime, name


def ordered_snapshots(archive: Path) -> list[Path]:
    """The snapshots in ``archive``, oldest first."""
    if not archive.is_dir():
        return []
    keyed = [(key, p) for p in archive.iterdir() if (key := snapshot_key(p)) is not None]
    return [p for _, p in sorted(keyed)]


def max_seq(archive: Path) -> int:
    """The highest sequence number among the snapshots in ``archive`` (0 when none has one)."""
    found = 0
    if archive.is_dir():
        for p in archive.iterdir():
            found = max(found, _seq(p.name))
    return found


def next_snapshot_name(archive: Path, now: datetime, last: Any) -> tuple[str, int]:
    """The name of the next snapshot and its sequence number (``last``: the memory file's
    ``snapshot_seq``; the archive is scanned when it has none)."""
    if isinstance(last, int) and not isinstance(last, bool) and last >= 0:
        seq = last + 1
    else:
        seq = max_seq(archive) + 1
    return f"memory_active-{compact_ts(now)}-{seq:0{SEQ_DIGITS}d}.json", seq
