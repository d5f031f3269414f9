"""Names of the records every store keeps under a name: weekly reports and tombstone archives
(``<prefix>-YYYY-MM-DD[-N]``), the original system's tombstone archives, and memory snapshots.
Shared by both backends (PostgreSQL keeps the same names in its ``name`` columns); where the files
live is the file store's layout (``files.layout``).

Memory snapshot names, oldest layout first:

- ``memory_<local %Y%m%dT%H%M%S>.json``: the original system (local time, one per second);
- ``memory_active-<UTC %Y%m%dT%H%M%SZ>-<8 hex>.json``: a random token, no order within a second;
- ``memory_active-<UTC %Y%m%dT%H%M%SZ>-<10 digits>.json``: a sequence number that grows with each
  snapshot of the agent (kept in the memory file as ``snapshot_seq``), so the many snapshots of
  one second keep their order.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

#: ``weekly-YYYY-MM-DD[-N]``: a weekly report (its ``.json`` and ``.html`` files).
REPORT_NAME = re.compile(r"weekly-(\d{4}-\d{2}-\d{2})(?:-(\d+))?")
#: ``tombstones-YYYY-MM-DD[-N].json``: tombstones moved out of a list past their grace period.
TOMBSTONE_ARCHIVE_NAME = re.compile(r"tombstones-(\d{4}-\d{2}-\d{2})(?:-(\d+))?\.json")
#: The original system's tombstone archives in ``memory_archive/`` (a bare JSON list of
#: tombstones, named by local day). Data: listed, pruned and moved by ``store export/import``.
ORIGINAL_TOMBSTONE_ARCHIVE_NAME = re.compile(r"tombstones_archive_(\d{8})\.json")
#: Digits of a memory snapshot's sequence number.
SEQ_DIGITS = 10
#: ``memory_active-<UTC stamp>Z[-<token or sequence number>].json``.
SNAPSHOT_NAME = re.compile(r"memory_active-(\d{8}T\d{6})Z(?:-([0-9a-f]+))?\.json")
#: The original system's ``memory_<local stamp>.json``.
ORIGINAL_SNAPSHOT_NAME = re.compile(r"memory_(\d{8}T\d{6})\.json")


def dated_name(prefix: str, day: date, n: int) -> str:
    """``<prefix>-YYYY-MM-DD`` for the first of a day, ``…-2``, ``…-3`` for the next ones."""
    return f"{prefix}-{day.isoformat()}" + (f"-{n}" if n > 1 else "")


def parse_dated(pattern: re.Pattern[str], name: str) -> tuple[date, int] | None:
    """The day and number within the day of a dated name (``REPORT_NAME``,
    ``TOMBSTONE_ARCHIVE_NAME``), or None when ``name`` is not one."""
    match = pattern.fullmatch(name)
    if match is None:
        return None
    try:
        return date.fromisoformat(match.group(1)), int(match.group(2) or 1)
    except ValueError:
        return None  # weekly-2026-13-45: not ours


def original_tombstone_archive_day(name: str) -> date | None:
    """The day of the original system's ``tombstones_archive_<local %Y%m%d>.json`` (None for
    any other name)."""
    match = ORIGINAL_TOMBSTONE_ARCHIVE_NAME.fullmatch(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def snapshot_time(name: str) -> datetime | None:
    """When the memory snapshot named ``name`` was taken, in UTC (any of the layouts above);
    None for any other name."""
    if match := SNAPSHOT_NAME.fullmatch(name):
        stamp, local = match.group(1), False
    elif match := ORIGINAL_SNAPSHOT_NAME.fullmatch(name):
        stamp, local = match.group(1), True
    else:
        return None
    try:
        naive = datetime.strptime(stamp, "%Y%m%dT%H%M%S")
    except ValueError:
        return None
    # The original system wrote the local time of the machine that took the snapshot.
    return naive.astimezone(UTC) if local else naive.replace(tzinfo=UTC)
