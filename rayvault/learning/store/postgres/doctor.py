"""The PostgreSQL store's self-check (``rayvault-learn doctor [--repair]`` on PostgreSQL).

What is checked, and what a repair does:

- the schema: every migration of this version applied (``schema-outdated``, when the store was
  opened without upgrading it: repaired by applying them, as ``store upgrade`` does; migrations a
  store applied when it first connected for this run are reported as ``schema-upgraded``, info);
  migrations recorded by a newer version (``schema-newer``); tables, columns and triggers of the
  applied migrations present (``schema-object-missing``: someone changed the schema by hand;
  reported only);
- every version of every event and error-log entry has its record's shape and its own key
  (``event-version-invalid``, ``error-version-invalid``: reported only, the text is the only copy
  of that version);
- the ``events`` and ``errors`` tables (the latest version of each record with its indexed
  columns) agree with the versions: no row missing or extra, none out of date, indexed columns
  as computed from the text (``events-table-inconsistent``, ``errors-table-inconsistent``:
  repaired by rewriting those rows from their latest version; a row whose record has no version
  at all is first added to the versions, so nothing is lost);
- the ``fingerprint`` column of those tables is the record's pattern key with the recorded merges
  followed (part of the indexed columns above); the pattern tables agree with the merges: a merged
  cluster names its target, signatures name live clusters (``patterns-inconsistent``: repaired
  from ``pattern_merges``, the record of what was merged);
- ``fp_counts`` (the gate's failure counts) and the error log's pattern aggregates
  (``error_patterns`` and its per-video and per-stage rows) equal a recount
  (``failure-counts-wrong``: repaired by recounting, with writers held off for that moment);
- agent memories, tombstone lists, memory snapshots, gate states, weekly reports and tombstone
  archives have their shapes (``memory-corrupt``, ``tombstones-corrupt``, ``snapshot-corrupt``,
  ``gate-state-corrupt``, ``report-corrupt``, ``tombstone-archive-corrupt``), SOUL snapshots match
  their hash (``soul-snapshot-mismatch``): reported only, as with files.

Documents are ``json`` columns: the server refuses text that does not parse, so the check is their
shape. A writer that crashes leaves nothing behind (the server rolls its transaction back), so
there are no temp or lock files to look for. Everything is read in one ``REPEATABLE READ``
snapshot; repairs run afterwards, each in its own transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from psycopg import errors as pg_errors
from pydantic import BaseModel, ValidationError

from rayvault.learning.exceptions import ConfigError
from rayvault.learning.models import (
    AgentMemory,
    ErrorEntry,
    Finding,
    FindingLevel,
    GateState,
    LearningEvent,
    Tombstone,
    TombstoneFile,
    WeeklyReport,
)
from rayvault.learning.store._names import original_tombstone_archive_day
from rayvault.learning.store._original import OriginalTombstoneArchive
from rayvault.learning.store._sql import (
    ERROR_AGGREGATE_COLUMNS,
    ERROR_COLUMNS,
    RESOLVED_EVENT_COLUMNS,
    error_aggregate_recounts,
    error_row,
    resolved_event_row,
)
from rayvault.learning.store.postgres import schema as schema_sql
from rayvault.learning.store.postgres.patterns import APPLY_MERGES
from rayvault.policies import Policies

if TYPE_CHECKING:
    import psycopg

    from rayvault.learning.store.base import ProgressCallback
    from rayvault.learning.store.postgres.store import PostgresStore

    Conn = psycopg.Connection[Any]

#: Invalid versions reported one by one per table before summing up the rest in one finding.
MAX_ELEMENT_FINDINGS = 20
#: Keys named in a summary finding.
SAMPLES = 3
_MISSING_OBJECT = (pg_errors.UndefinedTable, pg_errors.UndefinedColumn)


@dataclass(frozen=True)
class _Log:
    """One versioned record kind: its versions table, latest-version table, key and columns."""

    versions: str
    table: str
    key: str
    columns: tuple[str, ...]
    row: Callable[[dict[str, Any], Mapping[str, str]], tuple[Any, ...]]
    model: type[BaseModel]
    what: str
    code: str


EVENTS = _Log(
    "event_versions",
    "events",
    "event_id",
    RESOLVED_EVENT_COLUMNS,
    resolved_event_row,
    LearningEvent,
    "an event",
    "event-version-invalid",
)
ERRORS = _Log(
    "error_versions",
    "errors",
    "id",
    ERROR_COLUMNS,
    error_row,
    ErrorEntry,
    "an error-log entry",
    "error-version-invalid",
)


class PostgresDoctor:
    """One check (and optional repair) run over a PostgreSQL store."""

    def __init__(
        self, store: PostgresStore, *, repair: bool, progress: ProgressCallback | None = None
    ) -> None:
        self.store = store
        self.schema = store.schema
        self.repair = repair
        self.progress = progress
        self.findings: list[Finding] = []
        self._alias_map: Mapping[str, str] | None = None
        #: source → target of every recorded merge (read in the check's snapshot).
        self._merges: dict[str, str] = {}

    def _aliases(self) -> Mapping[str, str]:
        """The alias map that keys records stored without a fingerprint (the defaults when the
        policies cannot be read: that is reported elsewhere); resolved once per run."""
        if self._alias_map is None:
            try:
                self._alias_map = self.store.policies.LEARNING_STAGE_ALIASES
            except ConfigError:
                self._alias_map = Policies().LEARNING_STAGE_ALIASES
        return self._alias_map

    def run(self) -> list[Finding]:
        store = self.store
        first_use = not store.is_connected()
        if store.auto_migrate and first_use:
            store.open_pool()  # a first use creates or upgrades the schema, as any command does
        with store.connect() as conn:
            if not self._check_schema(conn, upgraded=store.applied_on_open if first_use else []):
                return self.findings
            stale: list[tuple[_Log, Finding, list[str]]] = []
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                self._merges = self._guarded(conn, _merge_map) or {}
                for log in (EVENTS, ERRORS):
                    self._guarded(conn, self._check_versions, log)
                    found = self._guarded(conn, self._check_latest, log)
                    if found is not None:
                        stale.append((log, *found))
                self._guarded(conn, self._check_agents)
                self._guarded(conn, self._check_documents)
                patterns = self._guarded(conn, self._check_patterns)
            if self.repair:
                if patterns is not None:
                    self._repair_patterns(conn, patterns)
                for log, finding, keys in stale:
                    self._repair_latest(conn, log, finding, keys)
            # After the repairs above, which change what is counted.
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                wrong = self._guarded(conn, self._check_counts)
            if wrong is not None and self.repair:
                self._repair_counts(conn, wrong)
        return self.findings

    # -- helpers ----------------------------------------------------------------------------------
    def _where(self, table: str, key: str | None = None, column: str | None = None) -> str:
        return str(self.store.location(table, key, column))

    def _add(
        self,
        code: str,
        path: str,
        message: str,
        *,
        level: FindingLevel = "error",
        repairable: bool = False,
    ) -> Finding:
        finding = Finding(code=code, path=path, message=message, level=level, repairable=repairable)
        self.findings.append(finding)
        return finding

    @staticmethod
    def _repaired(finding: Finding, action: str) -> None:
        finding.repaired = True
        finding.action = action

    def _tick(self, what: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(what, done, total)

    @staticmethod
    def _guarded(conn: Conn, check: Callable[..., Any], *args: Any) -> Any:
        """Run ``check(conn, *args)`` in a savepoint; a table or column that is not there
        (reported with the schema) skips it, and the snapshot stays usable for the next."""
        try:
            with conn.transaction():
                return check(conn, *args)
        except _MISSING_OBJECT:
            return None

    @staticmethod
    def _problem(model: type[BaseModel], text: str) -> str | None:
        """None when the JSON ``text`` has the shape of ``model``, else what is wrong."""
        try:
            model.model_validate_json(text)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            return f"{where}: {first['msg']}"
        return None

    @staticmethod
    def _stream(conn: Conn, name: str, query: str, params: Any = None) -> Iterator[Any]:
        with conn.cursor(name=f"rayvault_doctor_{name}") as cur:
            cur.itersize = 2000
            cur.execute(query, params)
            yield from cur

    # -- the schema -------------------------------------------------------------------------------
    def _check_schema(self, conn: Conn, *, upgraded: list[str]) -> bool:
        """Whether the schema can be checked further (``upgraded``: the migrations this run's
        first use of the store applied)."""
        store = self.store
        where = self.schema
        if upgraded:
            self._add(
                "schema-upgraded",
                where,
                f"this run created or upgraded the schema on first use: applied "
                f"{', '.join(upgraded)}",
                level="info",
            )
        applied = schema_sql.applied_migrations(conn, self.schema)
        if applied is None:
            finding = self._add(
                "schema-missing",
                where,
                f"schema {self.schema!r} is not initialised: nothing is stored in it",
                level="warning",
                repairable=not store.is_read_only,
            )
            if not self.repair:
                return False
            self._repaired(finding, f"initialised: applied {', '.join(store.init_schema())}")
            applied = schema_sql.applied_migrations(conn, self.schema) or {}
        known = [m.name for m in schema_sql.MIGRATIONS]
        pending = [name for name in known if name not in applied]
        if pending:
            finding = self._add(
                "schema-outdated",
                where,
                f"migrations of this version not applied: {', '.join(pending)} (what they add "
                "is not checked)",
                repairable=not store.is_read_only,
            )
            if self.repair:
                done = store.upgrade_schema()
                self._repaired(finding, f"applied {', '.join(done) or 'nothing (done meanwhile)'}")
                applied = schema_sql.applied_migrations(conn, self.schema) or {}
        unknown = sorted(name for name in applied if name not in known)
        if unknown:
            self._add(
                "schema-newer",
                where,
                f"migrations recorded by a newer version of rayvault-learning: "
                f"{', '.join(unknown)}; this version may not read or write everything as it does",
                level="warning",
            )
        for name in known:
            if name in applied:
                for thing in schema_sql.CREATES.get(name, ()):
                    if not self._exists(conn, thing):
                        self._add(
                            "schema-object-missing",
                            f"{self.schema}.{thing.split(':')[0].split('.')[0]}",
                            f"{_describe(thing)} is missing although migration {name} is "
                            "recorded: the schema was changed by hand",
                        )
        return True

    def _exists(self, conn: Conn, thing: str) -> bool:
        if ":" in thing:
            table, trigger = thing.split(":")
            row = conn.execute(
                "SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s)",
                (trigger, f"{self.schema}.{table}"),
            ).fetchone()
        elif "." in thing:
            table, column = thing.split(".")
            row = conn.execute(
                "SELECT 1 FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s AND column_name = %s",
                (self.schema, table, column),
            ).fetchone()
        else:
            row = conn.execute("SELECT to_regclass(%s)", (f"{self.schema}.{thing}",)).fetchone()
            return bool(row and row[0])
        return row is not None

    # -- versions and latest versions -----------------------------------------------------------
    def _check_versions(self, conn: Conn, log: _Log) -> None:
        """Every version has its record's shape, and its key in the text is its key column."""
        (total,) = conn.execute(f"SELECT count(*) FROM {log.versions}").fetchone() or (0,)
        what = log.versions.replace("_", " ")
        bad = 0
        done = 0
        query = f"SELECT seq, {log.key}, data::text FROM {log.versions} ORDER BY seq"
        for seq, key, text in self._stream(conn, log.versions, query):
            done += 1
            if done % 5000 == 0:
                self._tick(what, done, total)
            problem = self._problem(log.model, text)
            if problem is None:
                named = orjson.loads(text).get(log.key)
                if named != key:
                    problem = f"its {log.key} is {named!r}, not {key!r}"
            if problem is None:
                continue
            bad += 1
            if bad <= MAX_ELEMENT_FINDINGS:
                self._add(
                    log.code,
                    self._where(log.versions, str(seq)),
                    f"version {seq} of {key} is not {log.what}: {problem}",
                )
        if bad > MAX_ELEMENT_FINDINGS:
            self._add(
                log.code,
                self._where(log.versions),
                f"{bad - MAX_ELEMENT_FINDINGS} more versions are not {log.what}",
            )
        self._tick(what, total, total)

    def _check_latest(self, conn: Conn, log: _Log) -> tuple[Finding, list[str]] | None:
        """The latest-version table against the versions; the finding and the keys to rewrite."""
        key, versions, table = log.key, log.versions, log.table
        rows = conn.execute(
            f"""
            SELECT coalesce(v.k, t.{key}), v.k IS NULL, t.{key} IS NULL
              FROM (SELECT {key} AS k, max(seq) AS last FROM {versions} GROUP BY {key}) AS v
              FULL JOIN {table} AS t ON t.{key} = v.k
              LEFT JOIN {versions} AS lv ON lv.seq = v.last
             WHERE v.k IS NULL OR t.{key} IS NULL OR t.last_seq <> v.last
                OR lv.data::text <> t.data::text
            """
        ).fetchall()
        missing = sorted(k for k, _, no_row in rows if no_row)
        extra = sorted(k for k, no_version, _ in rows if no_version)
        stale = sorted(k for k, no_version, no_row in rows if not (no_version or no_row))
        columns = []
        (total,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,)
        query = f"SELECT {', '.join(log.columns)}, data::text FROM {table}"
        for done, row in enumerate(self._stream(conn, table, query), 1):
            if done % 5000 == 0:
                self._tick(table, done, total)
            try:
                expected = self._canonical(log, log.row(orjson.loads(row[-1]), self._aliases()))
            except (KeyError, TypeError, AttributeError):
                continue  # not a record: reported with the versions
            if tuple(row[:-1]) != expected:
                columns.append(row[0])
        self._tick(table, total, total)
        columns = sorted(set(columns) - set(stale) - set(extra))  # each key named once
        parts = [
            (missing, f"missing (a version but no row): {_sample(missing)}"),
            (extra, f"not in {versions}: {_sample(extra)}"),
            (stale, f"not the latest version: {_sample(stale)}"),
            (columns, f"indexed columns that do not match the record: {_sample(columns)}"),
        ]
        problems = [f"{len(keys)} {text}" for keys, text in parts if keys]
        if not problems:
            return None
        finding = self._add(
            f"{table}-table-inconsistent",
            self._where(table),
            f"the {table} table disagrees with {versions}: " + "; ".join(problems),
            level="warning",
            repairable=not self.store.is_read_only,
        )
        return finding, sorted({*missing, *extra, *stale, *columns})

    def _repair_latest(self, conn: Conn, log: _Log, finding: Finding, keys: list[str]) -> None:
        """Rewrite the rows of ``keys`` from their latest version, with writers of the record
        kind held off; a row without any version becomes one first."""
        key, versions, table = log.key, log.versions, log.table
        with conn.transaction():
            self.store.lock_tables(conn, f"{versions}, {table}", "EXCLUSIVE")
            added = conn.execute(
                f"""
                INSERT INTO {versions} ({key}, data)
                SELECT t.{key}, t.data FROM {table} AS t
                 WHERE t.{key} = ANY(%s)
                   AND NOT EXISTS (SELECT 1 FROM {versions} AS v WHERE v.{key} = t.{key})
                 ORDER BY t.seq
                RETURNING {key}
                """,
                (keys,),
            ).fetchall()
            latest = conn.execute(
                f"""
                SELECT v.{key}, b.first, b.last, v.data::text
                  FROM (SELECT {key}, min(seq) AS first, max(seq) AS last FROM {versions}
                         WHERE {key} = ANY(%s) GROUP BY {key}) AS b
                  JOIN {versions} AS v ON v.seq = b.last
                """,
                (keys,),
            ).fetchall()
            names = ", ".join(log.columns)
            marks = ", ".join(["%s"] * (len(log.columns) + 3))
            updates = ", ".join(
                f"{c} = excluded.{c}" for c in (*log.columns[1:], "seq", "last_seq", "data")
            )
            upsert = (
                f"INSERT INTO {table} ({names}, seq, last_seq, data) VALUES ({marks}) "
                f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
            )
            rewritten, skipped = 0, []
            for record, first, last, text in latest:
                # A row first written after a later version (two writers at once) keeps its place.
                row = conn.execute(f"SELECT seq FROM {table} WHERE {key} = %s", (record,))
                kept = row.fetchone()
                try:
                    columns = log.row(orjson.loads(text), self._aliases())
                except (KeyError, TypeError, AttributeError):
                    skipped.append(record)
                    continue
                conn.execute(upsert, (*columns, kept[0] if kept else first, last, text))
                rewritten += 1
        action = f"{rewritten} rows rewritten from their latest version"
        if added:
            action += f"; {len(added)} rows without a version added to {versions} first"
        if skipped:
            finding.action = f"{action}; not repaired: {_sample(skipped)} (not a record)"
            return
        self._repaired(finding, action)

    def _canonical(self, log: _Log, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """A record's indexed columns as stored: its fingerprint with the merges followed."""
        i = log.columns.index("fingerprint")
        key = row[i]
        seen = 0
        while key in self._merges and seen <= len(self._merges):
            key, seen = self._merges[key], seen + 1
        return row if key == row[i] else (*row[:i], key, *row[i + 1 :])

    # -- failure patterns -----------------------------------------------------------------------
    def _check_patterns(self, conn: Conn) -> Finding | None:
        (merged,) = conn.execute(PATTERNS_MISMARKED).fetchone() or (0,)
        (signatures,) = conn.execute(SIGNATURES_NOT_LIVE).fetchone() or (0,)
        parts = [
            (merged, "clusters whose merged_into disagrees with pattern_merges"),
            (signatures, "signatures naming a merged cluster"),
        ]
        problems = [f"{n} {text}" for n, text in parts if n]
        if not problems:
            return None
        return self._add(
            "patterns-inconsistent",
            self._where("pattern_clusters"),
            "the failure patterns disagree with the recorded merges: " + "; ".join(problems),
            level="warning",
            repairable=not self.store.is_read_only,
        )

    def _repair_patterns(self, conn: Conn, finding: Finding) -> None:
        with conn.transaction():
            conn.execute("LOCK TABLE pattern_clusters, pattern_signatures IN EXCLUSIVE MODE")
            for statement in APPLY_MERGES:
                conn.execute(statement)
        self._repaired(finding, "merged_into and signatures set from pattern_merges")

    # -- the failure counts -----------------------------------------------------------------------
    def _check_counts(self, conn: Conn) -> Finding | None:
        kept_query = (
            "SELECT component, fingerprint, total, open FROM fp_counts "
            "WHERE total <> 0 OR open <> 0"
        )
        counts = {(c, f): (t, o) for c, f, t, o in conn.execute(schema_sql.FAILURE_RECOUNT)}
        kept = {(c, f): (t, o) for c, f, t, o in conn.execute(kept_query)}
        wrong = sorted(k for k in counts.keys() | kept.keys() if counts.get(k) != kept.get(k))
        labels = [f"{c}/{f}" for c, f in wrong]
        # The error-log pattern aggregates (``get_patterns``): the same finding, the same repair.
        for table, query in error_aggregate_recounts().items():
            counted = set(conn.execute(query))
            columns = ERROR_AGGREGATE_COLUMNS[table]
            stored = set(conn.execute(f"SELECT {columns} FROM {table}"))
            labels += sorted({f"{table}/{row[0]}" for row in counted ^ stored})
        # The event pattern aggregates and open counts (the weekly revisit's): the same again.
        labels += schema_sql.event_aggregate_labels(conn)
        if not labels:
            return None
        return self._add(
            "failure-counts-wrong",
            self._where("fp_counts"),
            f"{len(labels)} failure counts of the gate's known-failures check or of the error "
            f"log's patterns differ from a recount ({_sample(labels)})",
            level="warning",
            repairable=not self.store.is_read_only,
        )

    def _repair_counts(self, conn: Conn, finding: Finding) -> None:
        with conn.transaction():
            self.store.lock_tables(conn, "events, errors", "SHARE")  # writers wait a moment
            conn.execute("DELETE FROM fp_counts")
            conn.execute(
                "INSERT INTO fp_counts (component, fingerprint, total, open) "
                + schema_sql.FAILURE_RECOUNT
            )
            schema_sql.recount_error_patterns(conn)
            schema_sql.recount_event_patterns(conn)
        self._repaired(finding, "recounted from the events and the error log")

    # -- documents --------------------------------------------------------------------------------
    def _check_agents(self, conn: Conn) -> None:
        rows = conn.execute(
            "SELECT agent, memory::text, tombstones::text FROM agents ORDER BY agent"
        ).fetchall()
        for done, (agent, memory, tombstones) in enumerate(rows, 1):
            self._tick("agents", done, len(rows))
            problem = memory and self._problem(AgentMemory, memory)
            if problem:
                newest = conn.execute(
                    "SELECT name FROM memory_snapshots WHERE agent = %s "
                    "ORDER BY taken_at DESC, name DESC LIMIT 1",
                    (agent,),
                ).fetchone()
                restore = (
                    f"; the newest snapshot is {self._where('memory_snapshots', agent)}/{newest[0]}"
                    if newest
                    else "; there is no snapshot in memory_snapshots"
                )
                self._add(
                    "memory-corrupt",
                    self._where("agents", agent, "memory"),
                    f"the agent's memory does not have the expected shape: {problem}{restore}",
                )
            problem = tombstones and self._problem(TombstoneFile, tombstones)
            if problem:
                self._add(
                    "tombstones-corrupt",
                    self._where("agents", agent, "tombstones"),
                    f"the tombstone list does not have the expected shape: {problem}",
                )
        query = "SELECT agent, seq, data::text FROM agent_tombstones ORDER BY agent, seq"
        for agent, seq, text in self._stream(conn, "added_tombstones", query):
            problem = self._problem(Tombstone, text)
            if problem:
                self._add(
                    "tombstones-corrupt",
                    f"{self._where('agent_tombstones', agent)}/{seq}",
                    f"a tombstone added to the list does not have the expected shape: {problem}",
                )
        query = "SELECT agent, name, data::text FROM memory_snapshots ORDER BY agent, name"
        for agent, name, text in self._stream(conn, "snapshots", query):
            problem = self._problem(AgentMemory, text)
            if problem:
                self._add(
                    "snapshot-corrupt",
                    f"{self._where('memory_snapshots', agent)}/{name}",
                    f"the memory snapshot does not have the expected shape: {problem}",
                    level="warning",
                )

    def _check_documents(self, conn: Conn) -> None:
        for video_id, text in conn.execute(
            "SELECT video_id, data::text FROM gate_states ORDER BY video_id"
        ):
            problem = self._problem(GateState, text)
            if problem:
                self._add(
                    "gate-state-corrupt",
                    self._where("gate_states", video_id),
                    f"the gate state does not have the expected shape: {problem}",
                )
        for sha256, text in conn.execute("SELECT sha256, text FROM soul_snapshots ORDER BY sha256"):
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest != sha256:
                self._add(
                    "soul-snapshot-mismatch",
                    self._where("soul_snapshots", sha256),
                    f"its text has SHA-256 {digest[:12]}…, not the one it is kept under; the "
                    "gate's SOUL diffs against it will be wrong",
                    level="warning",
                )
        for name, text in conn.execute(
            "SELECT name, data::text FROM weekly_reports WHERE data IS NOT NULL ORDER BY name"
        ):
            problem = self._problem(WeeklyReport, text)
            if problem:
                self._add(
                    "report-corrupt",
                    self._where("weekly_reports", name, "data"),
                    f"the report does not have the expected shape: {problem}",
                )
        for agent, name, text in conn.execute(
            "SELECT agent, name, data::text FROM tombstone_archives ORDER BY agent, name"
        ):
            original = original_tombstone_archive_day(name) is not None
            problem = self._problem(OriginalTombstoneArchive if original else TombstoneFile, text)
            if problem:
                self._add(
                    "tombstone-archive-corrupt",
                    f"{self._where('tombstone_archives', agent)}/{name}",
                    f"the tombstone archive does not have the expected shape: {problem}",
                    level="warning",
                )


#: Clusters marked merged (or live) against what ``pattern_merges`` records.
PATTERNS_MISMARKED = """
    SELECT count(*) FROM pattern_clusters AS c LEFT JOIN pattern_merges AS m ON m.source = c.key
     WHERE c.merged_into IS DISTINCT FROM m.target
"""
SIGNATURES_NOT_LIVE = """
    SELECT count(*) FROM pattern_signatures AS s JOIN pattern_clusters AS c ON c.key = s.key
     WHERE c.merged_into IS NOT NULL
"""


def _merge_map(conn: Conn) -> dict[str, str]:
    return {s: t for s, t in conn.execute("SELECT source, target FROM pattern_merges")}


def _sample(keys: list[str]) -> str:
    shown = ", ".join(keys[:SAMPLES])
    return shown + ("…" if len(keys) > SAMPLES else "")


def _describe(thing: str) -> str:
    if ":" in thing:
        table, trigger = thing.split(":")
        return f"trigger {trigger} on {table}"
    if "." in thing:
        return f"column {thing}"
    return f"table {thing}"
