"""The order of an agent's memory snapshots (``memory_archive/``), newest last.

Names, oldest layout first:

- ``memory_<local %Y%m%dT%H%M%S>.json``: the original system (local time, one per second);
- ``memory_active-<UTC %Y%m%dT%H%M%SZ>-<8 hex>.json``: a random token, no order within a second;
- ``memory_active-<UTC %Y%m%dT%H%M%SZ>-<10 digits>.json``: a sequence number that grows with each
  snapshot of the agent (kept in the memory file as ``snapshot_seq``), so the many snapshots of
  one second keep their order.

Snapshots sort by their time, then their sequence number (names without one first), then the
file's modification time (a snapshot is a hard link to the memory file it keeps: its mtime is
when that version was written).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rayvault.learning._time import compact_ts

SEQ_DIGITS = 10
_NEW = re.compile(r"memory_active-(\d{8}T\d{6})Z(?:-([0-9a-f]+))?\.json")
_ORIGINAL = re.compile(r"memory_(\d{8}T\d{6})\.json")


def snapshot_key(path: Path) -> tuple[datetime, int, int, str] | None:
    """The sort key of a snapshot file, or None when the name is not a snapshot's."""
    name = path.name
    seq = -1
    if match := _NEW.fullmatch(name):
        try:
            when = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            return None
        tail = match.group(2) or ""
        if len(tail) == SEQ_DIGITS and tail.isdigit():
            seq = int(tail)
    elif match := _ORIGINAL.fullmatch(name):
        try:  # the original system wrote local time
            when = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").astimezone(UTC)
        except ValueError:
            return None
    else:
        return None
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
            match = _NEW.fullmatch(p.name)
            tail = match.group(2) if match else None
            if tail and len(tail) == SEQ_DIGITS and tail.isdigit():
                found = max(found, int(tail))
    return found


def next_snapshot_name(archive: Path, now: datetime, last: Any) -> tuple[str, int]:
    """The name of the next snapshot and its sequence number (``last``: the memory file's
    ``snapshot_seq``; the archive is scanned when it has none)."""
    if isinstance(last, int) and not isinstance(last, bool) and last >= 0:
        seq = last + 1
    else:
        seq = max_seq(archive) + 1
    return f"memory_active-{compact_ts(now)}-{seq:0{SEQ_DIGITS}d}.json", seq
