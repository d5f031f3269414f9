"""What both backends share about records: validation of stored data (a shape error is a
:class:`CorruptFileError` naming where it was read), the row → :class:`Pattern` /
:class:`ErrorPattern` decoders of the shared queries (``_sql``), and the documents both write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rayvault.learning._constants import SEVERITIES
from rayvault.learning._time import format_ts, from_micros
from rayvault.learning.exceptions import CorruptFileError

if TYPE_CHECKING:  # pydantic and the records load on first use: the gate's process needs neither
    from pydantic import BaseModel, ValidationError

    from rayvault.learning.models import (
        ErrorEntry,
        ErrorPattern,
        Pattern,
        Tombstone,
        TombstoneFile,
    )

M = TypeVar("M", bound="BaseModel")


def validate_record(model: type[M], raw: Any, path: Path, what: str) -> M:
    """Validate data read from ``path``; a shape error is a :class:`CorruptFileError`."""
    from pydantic import ValidationError

    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise _shape_error(e, path, what) from e


def validate_json_record(model: type[M], data: bytes, path: Path, what: str) -> M:
    """:func:`validate_record` for JSON bytes (parsed by pydantic: a quarter faster)."""
    from pydantic import ValidationError

    try:
        return model.model_validate_json(data)
    except ValidationError as e:
        raise _shape_error(e, path, what) from e


def _shape_error(error: ValidationError, path: Path, what: str) -> CorruptFileError:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return CorruptFileError(
        path, f"{what} does not match the expected shape: {where}: {first['msg']}"
    )


def with_added(base: TombstoneFile, added: Sequence[Tombstone]) -> TombstoneFile:
    """An agent's whole tombstone list: ``base`` (the stored document, in the original system's
    shape) followed by the tombstones appended since it was last written (a log, rows), but
    those whose rule is tombstoned already. Rule ids are unique, so a rule tombstoned twice is
    what a crash leaves: a log still there after the sweep folded it in, or a rule evicted
    again after a writer died between appending its tombstone and writing the memory without
    it. The first tombstone stands. ``updated`` is the later of the document's and the last
    append's."""
    if not added:
        return base
    held = {t.rule_id for t in base.tombstones}
    whole = list(base.tombstones)
    for tombstone in added:
        if tombstone.rule_id not in held:
            held.add(tombstone.rule_id)
            whole.append(tombstone)
    last = max(t.tombstoned_at for t in added)
    updated = last if base.updated is None or last > base.updated else base.updated
    return base.model_copy(update={"tombstones": whole, "updated": updated, "count": len(whole)})


def tombstone_archive_document(
    agent: str, now: datetime, older_than: datetime, due: Sequence[Tombstone]
) -> dict[str, Any]:
    """The content of a tombstone archive (``tombstones-YYYY-MM-DD[-N].json``)."""
    return {
        "agent": agent,
        "archived_at": format_ts(now),
        "older_than": format_ts(older_than),
        "tombstones": [t.model_dump(mode="json") for t in due],
        "count": len(due),
    }


def split_list(value: str | None) -> list[str]:
    """A comma-joined aggregate of the queries, sorted (empty for NULL)."""
    return sorted(value.split(",")) if value else []


def pattern_from_row(row: Sequence[Any], pattern: str) -> Pattern:
    """A row of ``_sql.pattern_sql`` (either dialect) and its sample's pattern text."""
    from rayvault.learning.models import Pattern

    fp, count, open_count, recent, first, last, _sample, videos, n_videos = row[:9]
    components, agents, severity_counts = row[9], row[10], row[11:]
    return Pattern(
        fingerprint=fp,
        stage=fp.split(":", 1)[0] if ":" in fp else "",
        pattern=pattern,
        count=count,
        open_count=open_count,
        recent_count=recent,
        severities={s: int(n) for s, n in zip(SEVERITIES, severity_counts, strict=True) if n},
        components=split_list(components),
        agents=split_list(agents),
        videos=split_list(videos),
        video_count=n_videos,
        first_seen=from_micros(first),
        last_seen=from_micros(last),
    )


def error_pattern_from_row(
    row: Sequence[Any], sample: ErrorEntry, videos: Iterable[str], stages: Iterable[str]
) -> ErrorPattern:
    """A row of ``_sql.ERROR_PATTERNS_SQL`` (fingerprint, count, unresolved, first, last,
    example id, video count), its example entry, the videos listed (the most recent few) and
    the stages of its entries."""
    from rayvault.learning.models import ErrorPattern

    fp, count, unresolved, first, last, example, video_count = row[:7]
    return ErrorPattern(
        fingerprint=fp,
        pattern=sample.pattern or sample.error[:200],
        stage=fp.split(":", 1)[0],
        count=count,
        unresolved=unresolved,
        videos=sorted(videos),
        video_count=video_count,
        stages=sorted(stages),
        first_seen=from_micros(first),
        last_seen=from_micros(last),
        example_id=example,
    )
