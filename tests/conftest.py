"""Hermetic tests: every test gets its own data root under ``tmp_path``, a scrubbed environment
(no ``RAYVAULT_*`` variables from the developer's shell), fresh policies and stores, and the real
clock unless it fixes one.

Stores: a test that uses the ``store`` fixture, or sits in a module marked ``both_stores``, runs
twice — on the file store and on PostgreSQL (``RAYVAULT_TEST_PG_DSN``; skipped with the reason
when it is not set or not reachable). On PostgreSQL the test gets a schema of its own, dropped
after it, and ``RAYVAULT_STORE`` points at it, so domain calls without ``store=`` use it too.
A test about the file layout's bytes is marked ``files_only("why")`` and runs on files only.

Markers mean what they say: every test that reaches PostgreSQL is marked ``postgres`` (added here
to the PostgreSQL runs of ``store``/``both_stores`` tests and to every test using ``pg_schemas``),
and a test that starts a process is marked ``slow`` — it fails when it is not (see
``processes_need_slow``). ``-m "not postgres and not slow"`` is the quick in-process set.

Hypothesis: the ``ci`` profile (no deadline, derandomised, no example database) is loaded when
``CI`` is set or ``HYPOTHESIS_PROFILE=ci``; ``HYPOTHESIS_PROFILE`` names any registered profile.
"""

from __future__ import annotations

import multiprocessing.process
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from rayvault.learning import testing
from rayvault.learning.store import FileStore, Store, open_store, reset_store

#: ``pytester`` runs small test suites in-process (tests/test_markers.py checks the marker rules).
pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
#: The real data the tests use, in the repository (``tests/data``, see its README); another copy
#: with the same layout can be given in ``RAYVAULT_SHARED_DATA``.
SHARED_DATA = Path(os.environ.get("RAYVAULT_SHARED_DATA") or Path(__file__).parent / "data")
#: Read before the hermetic fixture scrubs RAYVAULT_* from the environment.
PG_DSN = os.environ.get("RAYVAULT_TEST_PG_DSN", "").strip()
_pg_checked: list[str | None] = []

#: Hypothesis under CI, on loaded machines: a slow example is not a failure, and every run tries
#: the same examples (a failure found once is found again by the next run).
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev")
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "").strip() or ("ci" if os.environ.get("CI") else "dev")
)


def pg_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here (None when they can); checked once per process."""
    if not _pg_checked:
        _pg_checked.append(_check_pg())
    return _pg_checked[0]


def _check_pg() -> str | None:
    if not PG_DSN:
        return (
            "RAYVAULT_TEST_PG_DSN is not set: PostgreSQL store tests skipped "
            "(set it to a server, e.g. postgresql://root@127.0.0.1:5432/test)"
        )
    try:
        import psycopg

        from rayvault.learning.store.postgres import display_url
    except ImportError as e:
        return f"psycopg is not installed ({e}): pip install -e '.[postgres]'"
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (
            f"PostgreSQL at {display_url(PG_DSN)} (RAYVAULT_TEST_PG_DSN) is not reachable: {reason}"
        )
    return None


class PgSchemas:
    """Schemas with unique names for one test, all dropped at its end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def new_url(self) -> str:
        from rayvault.learning.store.postgres import with_schema

        name = f"rv_test_{uuid.uuid4().hex[:16]}"
        self.names.append(name)
        return with_schema(PG_DSN, name)

    def drop_all(self) -> None:
        if not self.names:
            return
        import psycopg
        from psycopg import sql

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for name in self.names:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )
        self.names.clear()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run tests that use ``store``, or are marked ``both_stores``, on both stores."""
    if "backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("files_only"):
        return
    on_both = {"store", "store_factory"} & set(metafunc.fixturenames)
    if on_both or metafunc.definition.get_closest_marker("both_stores"):
        metafunc.parametrize(
            "backend",
            ["file", pytest.param("postgres", marks=pytest.mark.postgres)],
            indirect=True,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``postgres`` every test that reaches PostgreSQL: the PostgreSQL runs of ``store`` /
    ``both_stores`` tests (their parameter already carries it) and tests using ``pg_schemas``."""
    for item in items:
        if item.get_closest_marker("postgres"):
            continue
        callspec = getattr(item, "callspec", None)
        on_pg = callspec is not None and callspec.params.get("backend") == "postgres"
        if on_pg or "pg_schemas" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(autouse=True)
def processes_need_slow(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that starts a process (``subprocess``, ``multiprocessing``, ``os.fork``)
    without the ``slow`` marker, so ``-m "not slow"`` really leaves every process test out."""
    started: list[str] = []
    popen_execute = subprocess.Popen._execute_child  # type: ignore[attr-defined]
    process_start = multiprocessing.process.BaseProcess.start
    fork = os.fork

    def execute(self: subprocess.Popen[bytes], args: object, *rest: object) -> object:
        started.append(f"subprocess {args!r}"[:120])
        return popen_execute(self, args, *rest)

    def start(self: multiprocessing.process.BaseProcess) -> None:
        started.append(f"multiprocessing {self.name}")
        process_start(self)

    def forked() -> int:
        started.append("os.fork()")
        return fork()

    subprocess.Popen._execute_child = execute  # type: ignore[attr-defined]
    multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign]
    os.fork = forked
    try:
        yield
    finally:
        subprocess.Popen._execute_child = popen_execute  # type: ignore[attr-defined]
        multiprocessing.process.BaseProcess.start = process_start  # type: ignore[method-assign]
        os.fork = fork
    if started and request.node.get_closest_marker("slow") is None:
        pytest.fail(
            f"{request.node.nodeid} starts a process ({started[0]}) but is not marked slow: "
            "add @pytest.mark.slow",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test's data root ``tmp_path/root``, isolated by :func:`rayvault.learning.testing.isolated`
    (``RAYVAULT_ROOT`` names it, no other ``RAYVAULT_*`` variable, fresh policies, stores and
    clock), with the working directory in ``tmp_path``."""
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    with testing.isolated(root, keep=("RAYVAULT_SHARED_DATA",)):
        # Writes are flushed by default; the suite's are not (a flush per write would load the
        # shared disk for nothing a test checks): the tests of durability turn it back on.
        os.environ["RAYVAULT_FSYNC"] = "0"
        yield root


@pytest.fixture
def root(hermetic: Path) -> Path:
    """The test's data root (also ``RAYVAULT_ROOT``)."""
    return hermetic


@pytest.fixture
def pg_schemas(hermetic: Path) -> Iterator[PgSchemas]:
    """Fresh PostgreSQL schemas on demand (``.new_url()``), dropped after the test; skips the
    test when PostgreSQL is not available."""
    reason = pg_unavailable()
    if reason:
        pytest.skip(reason)
    schemas = PgSchemas()
    yield schemas
    reset_store()
    schemas.drop_all()


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest, hermetic: Path) -> Iterator[str | None]:
    """The store of this test: None for the file store (the default), else the URL of a
    PostgreSQL schema of its own, also set as ``RAYVAULT_STORE``."""
    if getattr(request, "param", "file") == "file":
        yield None
        return
    reason = pg_unavailable()
    if reason:
        pytest.skip(reason)
    schemas = PgSchemas()
    url = schemas.new_url()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYVAULT_STORE", url)
        reset_store()
        try:
            yield url
        finally:
            reset_store()
            schemas.drop_all()


@pytest.fixture
def store(root: Path, backend: str | None) -> Iterator[Store]:
    """The test's store: the file store, then (a second run) PostgreSQL."""
    s = open_store(root, backend)
    yield s
    s.close()


@pytest.fixture
def store_factory(root: Path, backend: str | None) -> Iterator[Callable[[], Store]]:
    """Opens a new store on the test's data at each call (the file store, then, a second run,
    PostgreSQL), all closed after the test: what tests/test_store_contract.py runs on."""
    opened: list[Store] = []

    def make() -> Store:
        opened.append(open_store(root, backend))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def file_store(root: Path) -> Iterator[FileStore]:
    """The file store of the test's root, for tests about the file layout."""
    s = FileStore(root)
    yield s
    s.close()


#: The fixed clock of the ``clock`` fixture (``.now``, ``.set(…)``, ``.advance(days=…)``).
Clock = testing.FixedClock


@pytest.fixture
def clock() -> Iterator[Clock]:
    """A fixed clock at 2026-02-19 12:00 UTC, read by the library during the test."""
    with testing.fixed_clock(datetime(2026, 2, 19, 12, 0, 0, tzinfo=UTC)) as fixed:
        yield fixed


@pytest.fixture
def shared_data() -> Path:
    """The real skill-graph notes and SOUL files in ``tests/data`` (read-only: copy them)."""
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"test data not found at {SHARED_DATA} (RAYVAULT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def souls(root: Path, shared_data: Path) -> Path:
    """The real SOUL files copied into the data root's ``agents/`` folder."""
    shutil.copytree(shared_data / "agents", root / "agents", dirs_exist_ok=True)
    return root / "agents"


def event_kwargs(**overrides: object) -> dict[str, object]:
    """The spec's example event, with overrides."""
    base: dict[str, object] = {
        "run_id": "v042-run-001",
        "severity": "FAIL",
        "component": "assets",
        "symptom": "Image hallucination in Product Background",
        "root_cause": "Changed reference angle from 3/4 to top-down",
        "fix_applied": "Reverted to original 3/4 angle",
        "verification": "Re-generated, product shape correct",
        "video_id": "v042",
        "agent": "dzine_producer",
    }
    base.update(overrides)
    return base


def rules_worked(store: Store | None = None) -> None:
    """Give every active rule as many successful attempts as its ``applied_count``: the evidence
    the promotion scan counts since issue 14 (it counted ``applied_count`` before), for tests
    written against the old scan."""
    from rayvault.learning import get_store, record_attempt

    store = store or get_store()
    for agent in store.list_agents():
        for rule in store.load_memory(agent).rules:
            for n in range(rule.applied_count):
                record_attempt(
                    agent,
                    [rule.rule_id],
                    outcome="succeeded",
                    run_id="run-worked",
                    video_id="v-worked",
                    stage=rule.component,
                    attempt=n + 1,
                    store=store,
                )
