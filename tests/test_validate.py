"""The API boundary: hostile and wrong input gets an InvalidInputError naming the argument, and
nothing is written; stored text is capped with a visible marker, so no record's size grows the
cost of later writes. Runs on both stores; the CLI cases run in real processes."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayvault.learning import (
    InvalidInputError,
    LearningError,
    apply_to_memory,
    create_event,
    get_event,
    list_events,
    load_active_memory,
    tombstone_rule,
    update_event,
)
from rayvault.learning._validate import cap_text, check_text
from rayvault.learning.errors import get_error, list_errors, log_error, resolve_error
from rayvault.learning.store import Store

from .conftest import event_kwargs

pytestmark = pytest.mark.both_stores

SURROGATE = "boom \udcff here"


def nothing_stored(store: Store) -> bool:
    return list_events(store=store) == [] and list_errors(store=store) == []


# -- what fuzzing the public API found ---------------------------------------------------------

FOUND: list[tuple[str, Callable[..., Any], dict[str, Any], str]] = [
    ("surrogate symptom", create_event, event_kwargs(symptom=SURROGATE), "symptom"),
    ("surrogate root cause", create_event, event_kwargs(root_cause=SURROGATE), "root_cause"),
    ("NUL in symptom", create_event, event_kwargs(symptom="a\x00b"), "symptom"),
    ("severity 0", create_event, event_kwargs(severity=0), "severity"),
    ("root cause None", create_event, event_kwargs(root_cause=None), "root_cause"),
    ("surrogate error text", log_error, {"video_id": "v1", "stage": "assets", "error": SURROGATE}, "error"),
    ("exit code 'abc'", log_error, {"video_id": "v1", "stage": "tts", "error": "x", "exit_code": "abc"}, "exit_code"),
    ("exit code 2**70", log_error, {"video_id": "v1", "stage": "tts", "error": "x", "exit_code": 2**70}, "exit_code"),
    ("surrogate in context", log_error, {"video_id": None, "stage": "tts", "error": "x", "context": {"k": SURROGATE}}, "context"),
    ("surrogate reason", tombstone_rule, {"agent": "a", "rule_id": "r", "reason": SURROGATE}, "reason"),
    ("reason 0.0005", tombstone_rule, {"agent": "a", "rule_id": "r", "reason": 0.0005}, "reason"),
    ("evidence None", tombstone_rule, {"agent": "a", "rule_id": "r", "reason": "x", "evidence_ids": None}, "evidence_ids"),
    ("evidence as text", tombstone_rule, {"agent": "a", "rule_id": "r", "reason": "x", "evidence_ids": "le-1"}, "evidence_ids"),
    ("surrogate event id", get_event, {"event_id": "le-\udc80"}, "event_id"),
    ("event id {}", get_event, {"event_id": {}}, "event_id"),
    ("limit []", list_events, {"limit": []}, "limit"),
    ("limit ''", list_events, {"limit": ""}, "limit"),
    ("limit -1", list_events, {"limit": -1}, "limit"),
    ("limit True", list_events, {"limit": True}, "limit"),
    ("event mapping", apply_to_memory, {"event": {"symptom": 1}, "agent": "a"}, "event"),
    ("resolution fix 3", resolve_error, {"error_id": "e-1", "root_cause": "x", "fix": 3}, "fix"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("function", "kwargs", "argument"),
    [pytest.param(f, k, a, id=name) for name, f, k, a in FOUND],
)
def test_what_fuzzing_found_is_refused_naming_the_argument(
    store: Store, function: Callable[..., Any], kwargs: dict[str, Any], argument: str
) -> None:
    """Each crash the fuzzing found is now an InvalidInputError that names the argument, and
    nothing is stored."""
    with pytest.raises(InvalidInputError) as caught:
        function(**kwargs, store=store)
    assert str(caught.value).startswith(argument) or f" {argument} " in str(caught.value)
    assert nothing_stored(store)


def test_a_hostile_value_is_shown_short_in_the_message(store: Store) -> None:
    """A megabyte of bad input does not become a megabyte of error message."""
    with pytest.raises(InvalidInputError) as caught:
        create_event(**event_kwargs(video_id="../" + "x" * 1_000_000), store=store)  # type: ignore[arg-type]
    assert len(str(caught.value)) < 400
    assert "1000005 characters" in str(caught.value)


def test_an_iterator_argument_is_read_once(store: Store) -> None:
    """An iterator given for a list is read once by the check and handed on as a list."""
    from rayvault.learning import init_memory

    created = init_memory(iter(["alpha", "beta"]), store=store)
    assert created == {"alpha": True, "beta": True}


def test_an_exception_with_undecodable_text_is_logged_with_replacement(store: Store) -> None:
    """Text the library derives itself (an exception's traceback) is made storable, not refused:
    a failure logger must not lose the failure."""
    entry = log_error("v1", "assets", OSError(f"cannot open {SURROGATE}\x00"), store=store)
    assert "\udcff" not in entry.error and "\x00" not in entry.error
    assert get_error(entry.id, store=store).error == entry.error


# -- every public function, fuzzed --------------------------------------------------------------

_surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    _surrogates.map(lambda s: f"ok {s}"),
    st.sampled_from(["", " ", "a\x00b", "../x", "x" * 300, "2026-02-19", "all"]),
    st.binary(max_size=6),
    st.lists(st.one_of(st.text(max_size=4), st.integers(), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=4), st.one_of(st.text(max_size=4), _surrogates), max_size=2),
    st.just(object()),
)
#: Values that get past the checks, so the fuzzing reaches the stores too.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "severity": st.sampled_from(["INFO", "WARN", "FAIL", "BLOCKER", "fail"]),
    "component": st.sampled_from(["assets", "tts", "generate-images"]),
    "stage": st.sampled_from(["assets", "tts", "render"]),
    "video_id": st.sampled_from(["v042", "v1", None]),
    "agent": st.sampled_from(["dzine_producer", "publisher"]),
    "status": st.sampled_from(["open", "verified"]),
    "scope": st.sampled_from(["all", "dzine_producer"]),
    "limit": st.integers(0, 5),
    "days": st.integers(1, 30),
    "budget": st.integers(0, 500),
    "min_count": st.integers(1, 3),
    "threshold": st.integers(1, 3),
    "exit_code": st.integers(-9, 255),
    "retries": st.integers(0, 1),
    "event": st.builds(
        lambda s: {**event_kwargs(symptom=s), "event_id": "le-20260219T120000Z-000000000001"},
        st.text(min_size=1, max_size=20),
    ),
    "error": st.one_of(st.text(min_size=1, max_size=40), st.just(ValueError("bad"))),
    "fn": st.just(lambda ctx: None),
    "date_from": st.sampled_from(["2026-02-19", "2026-02-19T12:00:00Z"]),
    "context": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    "evidence_ids": st.lists(st.sampled_from(["le-1", "le-2"]), max_size=2),
    "agents": st.lists(st.sampled_from(["alpha", "beta"]), max_size=2),
}
#: Arguments that name a place on disk get fixed values: fuzzing "/" would read the whole disk.
PATHS: dict[str, st.SearchStrategy[Any]] = {
    "notes_folder": st.sampled_from([None, "notes", "no\udcffpe", "a\x00b", 3, []]),
    "root": st.sampled_from([None, "sub", "su\udcffb", "a\x00b", 3, []]),
    "url": st.sampled_from([None, "nosuch://x", "postgresql://\udcff", "", 3]),
    # run_command: commands that are refused before anything runs (running one is a slow test).
    "command": st.sampled_from([[], [""], "true", None, 3, ["a\x00b"], ["ok \udcff"], [b"x"]]),
    "diagnose": st.sampled_from([None, "", "sh -c 'unclosed", 3, ["a\x00b"]]),
}


#: The error log's and the gate's API (documented in the README, not re-exported).
ERROR_LOG_API = (
    "log_error",
    "resolve_error",
    "promote_to_learning",
    "link_to_event",
    "get_error",
    "list_errors",
    "get_unresolved",
    "get_patterns",
    "get_lessons",
)
GATE_API = (
    "learning_gate",
    "acknowledge",
    "check_diff_policies",
    "check_diff_soul",
    "check_regressions",
    "check_known_failures",
)


def public_functions() -> list[tuple[str, Callable[..., Any]]]:
    """Every function of the API: ``rayvault.learning.__all__``, the error log and the gate."""
    import rayvault.learning as api
    from rayvault.learning import errors, gate

    found = {
        name: getattr(api, name)
        for name in api.__all__
        if inspect.isfunction(getattr(api, name)) and name[0].islower()
    }
    for module, names in ((errors, ERROR_LOG_API), (gate, GATE_API)):
        for name in names:
            found[f"{module.__name__.rsplit('.', 1)[1]}.{name}"] = getattr(module, name)
    return sorted(found.items())


#: Pure functions, total over all text, that check their own types.
TOTAL = {"fingerprint"}


def test_every_public_function_is_checked() -> None:
    """The fuzzing below covers the whole API: every public function that stores or reads
    checks its arguments at the boundary."""
    unchecked = [n for n, f in public_functions() if not hasattr(f, "__wrapped__")]
    assert unchecked == sorted(TOTAL)
    assert len(public_functions()) >= 40


def _strategy(name: str) -> st.SearchStrategy[Any]:
    if name in PATHS:
        return PATHS[name]
    if name in PLAUSIBLE:
        return st.one_of(PLAUSIBLE[name], HOSTILE)
    return st.one_of(st.text(min_size=1, max_size=20), HOSTILE)


@pytest.fixture
def seeded(store: Store) -> Iterator[Store]:
    """A store with an event, a rule and an error, so ids that exist can be hit too."""
    create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    log_error("v042", "assets", "Timeout after 30s", store=store)
    yield store


@pytest.mark.parametrize(
    ("name", "function"), [pytest.param(n, f, id=n) for n, f in public_functions()]
)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_public_function_returns_or_raises_a_learning_error(
    seeded: Store, name: str, function: Callable[..., Any], data: st.DataObject
) -> None:
    """Whatever the arguments, a public function returns or raises LearningError: never a
    TypeError, a UnicodeEncodeError, a pydantic or a database error."""
    signature = inspect.signature(function)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.name == "store":
            kwargs["store"] = seeded
            continue
        if param.kind is param.VAR_POSITIONAL:
            args.extend(data.draw(st.lists(HOSTILE, max_size=2), label=param.name))
            continue
        if param.kind is param.VAR_KEYWORD:
            continue
        if param.default is not param.empty and data.draw(st.booleans(), label="omit"):
            continue
        value = data.draw(_strategy(param.name), label=param.name)
        if param.kind is param.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[param.name] = value
    try:
        result = function(*args, **kwargs)
    except LearningError:
        return
    close = getattr(result, "close", None)
    if isinstance(result, Store) and result is not seeded and callable(close):
        close()


# -- text that cannot be stored: the CLI, in real processes -------------------------------------


def cli(*args: str | bytes, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": ""}
    return subprocess.run(
        [sys.executable, "-m", "rayvault.cli", *args],
        input=stdin,
        capture_output=True,
        check=False,
        env=env,
        timeout=60,
    )


@pytest.mark.slow
def test_cli_argument_that_is_not_utf8_is_refused(store: Store) -> None:
    """Bytes that are not UTF-8 in an argument: exit 1, one Error line naming the option's
    argument, nothing stored."""
    done = cli(
        "events", "create", "--severity", "FAIL", "--component", "assets",
        "--symptom", b"Render failed \xff\xfe at frame 3",
    )  # fmt: skip
    assert done.returncode == 1
    err = done.stderr.decode()
    # Refused at the entry point, before any command runs (rayvault.cli.main).
    assert err.startswith(
        "Error: argument 8 'Render failed \\xff\\xfe at frame 3' is not valid UTF-8"
    )
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert nothing_stored(store)


@pytest.mark.slow
def test_cli_stdin_that_is_not_utf8_is_refused(store: Store) -> None:
    """Bytes that are not UTF-8 on stdin: exit 1, the offending byte named, nothing logged;
    UTF-8 text with accents is stored as given."""
    done = cli("errors", "log", "assets", "-", stdin=b"caf\xe9 timed out\n")
    assert done.returncode == 1
    assert done.stderr.decode().startswith("Error: stdin is not UTF-8 text: byte 0xe9 at offset 3")
    assert nothing_stored(store)
    ok = cli("errors", "log", "assets", "-", "--json", stdin="café timed out\n".encode())
    assert ok.returncode == 0, ok.stderr
    assert [e.error for e in list_errors(store=store)] == ["café timed out"]


# -- size caps -----------------------------------------------------------------------------------


@given(text=st.text(max_size=600), limit=st.integers(200, 400), tail=st.booleans())
def test_cap_text_keeps_short_text_and_cuts_long_text_visibly(
    text: str, limit: int, tail: bool
) -> None:
    """Capped text is at most the limit, equal to the input when it fits, and otherwise says
    how long the input was; the start (and with keep_tail the end) survives."""
    capped = cap_text(text, limit, keep_tail=tail)
    assert len(capped) <= limit
    if len(text) <= limit:
        assert capped == text
    else:
        assert f"truncated by rayvault: {len(text)} characters" in capped
        assert capped.startswith(text[:50])
        if tail:
            assert capped.endswith(text[-50:])


def test_check_text_accepts_any_storable_text() -> None:
    """Every text without a lone surrogate or NUL passes unchanged."""
    for text in ("", "plain", "café ✓ 日本", "\U0001f600", "tab\tand\nnewline"):
        assert check_text(text, "t") is text


def test_huge_symptom_is_capped_everywhere_it_is_stored(store: Store) -> None:
    """A 10 MB symptom is stored cut to LEARNING_MAX_TEXT_CHARS with a marker, in the event,
    its rule and its skill-graph note; its full text is kept once, in the file it names."""
    cap = store.policies.LEARNING_MAX_TEXT_CHARS
    symptom = "Render failed at frame " + "9" * 10_000_000
    event = create_event(**event_kwargs(symptom=symptom, root_cause="r" * 50_000), store=store)  # type: ignore[arg-type]
    stored = get_event(event.event_id, store=store)
    assert len(stored.symptom) <= cap and len(stored.root_cause) <= cap
    assert stored.symptom.startswith("Render failed at frame 999")
    assert f"truncated by rayvault: {len(symptom)} characters" in stored.symptom
    rule = load_active_memory("dzine_producer", store=store).rules[0]
    assert len(rule.rule) <= 3 * cap
    assert stored.skill_node is not None
    note = (store.docs.root / stored.skill_node).read_text()
    assert len(note) < 5 * cap
    kept = re.search(r"full text: (data/attachments/[0-9a-f]{32}\.txt)", stored.symptom)
    assert kept is not None
    assert (store.docs.root / kept.group(1)).read_text() == symptom
    create_event(**event_kwargs(symptom=symptom, video_id="v2"), store=store)  # type: ignore[arg-type]
    attachments = sorted((store.docs.root / "data" / "attachments").iterdir())
    assert len(attachments) == 2  # the symptom once, the root cause once


def test_a_refused_call_keeps_no_attachment(store: Store) -> None:
    """A huge text in a call refused for another argument leaves no file behind."""
    with pytest.raises(InvalidInputError, match="video id"):
        create_event(**event_kwargs(symptom="s" * 100_000, video_id="../x"), store=store)  # type: ignore[arg-type]
    with pytest.raises(LearningError):
        update_event("le-20260219T120000Z-000000000000", root_cause="r" * 100_000, store=store)
    with pytest.raises(InvalidInputError, match="context"):
        log_error("v1", "assets", "e" * 100_000, context={"k": object()}, store=store)
    assert not (store.docs.root / "data" / "attachments").exists()
    assert nothing_stored(store)


def test_huge_error_text_keeps_its_start_and_its_failure_line(store: Store) -> None:
    """An error text over LEARNING_MAX_ERROR_TEXT_CHARS keeps its start and its last line (the
    failure line the fingerprint is taken from)."""
    cap = store.policies.LEARNING_MAX_ERROR_TEXT_CHARS
    text = "Traceback (most recent call last):\n" + "  frame\n" * 200_000 + "TimeoutError: 30s"
    entry = log_error("v1", "assets", text, store=store)
    assert len(entry.error) <= cap
    assert entry.error.startswith("Traceback") and entry.error.endswith("TimeoutError: 30s")
    assert "truncated by rayvault" in entry.error
    assert entry.pattern is not None and "TimeoutError" in entry.pattern
    kept = re.search(r"full text: (data/attachments/[0-9a-f]{32}\.txt)", entry.error)
    assert kept is not None and (store.docs.root / kept.group(1)).read_text() == text


def test_caps_follow_the_policy(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """RAYVAULT_LEARNING_MAX_TEXT_CHARS changes the cap; a value below 200 is refused."""
    from rayvault.learning.exceptions import ConfigError

    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_TEXT_CHARS", "300")
    event = create_event(**event_kwargs(symptom="s" * 1000), store=store)  # type: ignore[arg-type]
    assert len(event.symptom) <= 300
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_TEXT_CHARS", "10")
    with pytest.raises((ConfigError, LearningError), match="at least 200"):
        create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]


def test_oversized_context_is_refused(store: Store) -> None:
    """A context bigger than LEARNING_MAX_ERROR_TEXT_CHARS as JSON is refused, not cut."""
    with pytest.raises(InvalidInputError, match="context is .* bytes as JSON"):
        log_error("v1", "assets", "x", context={"out": "o" * 30_000}, store=store)
    assert nothing_stored(store)


def _io() -> tuple[int, int]:
    """Bytes this process wrote and read so far (files and sockets alike: /proc/self/io)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["rchar"])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_a_writes_cost_does_not_depend_on_earlier_records_sizes(store: Store) -> None:
    """After a 10 MB symptom, a small create_event writes and reads as many bytes as after a
    100 kB one (both capped): what one record holds does not grow every later write. The huge
    write itself costs a capped record plus its attachment, written once."""

    def small_write_after(huge: int, n: int) -> tuple[int, int, int]:
        # Words of the same length, so the records differ only in the huge text's size (a
        # repeated fingerprint would add a SOUL suggestion to the second run).
        kw = event_kwargs(video_id=f"v{n}", agent=f"agent{n}", verification="")
        word, other = ("alpha", "gamma") if n == 1 else ("delta", "omega")
        before = _io()
        create_event(**{**kw, "symptom": f"{word} failed " + "9" * huge}, store=store)  # type: ignore[arg-type]
        middle = _io()
        create_event(**{**kw, "symptom": f"{other} failed at frame 12"}, store=store)  # type: ignore[arg-type]
        after = _io()
        return middle[0] - before[0], after[0] - middle[0], after[1] - middle[1]

    create_event(**event_kwargs(video_id="v0", agent="agent0"), store=store)  # type: ignore[arg-type]
    big_written, written_a, read_a = small_write_after(100_000, 1)
    huge_written, written_b, read_b = small_write_after(10_000_000, 2)
    cap = store.policies.LEARNING_MAX_TEXT_CHARS
    # The huge write itself: its attachment, plus what a capped record costs.
    attachment_a, attachment_b = len("alpha failed ") + 100_000, len("delta failed ") + 10_000_000
    assert huge_written - attachment_b < big_written - attachment_a + 4096 < 60 * cap
    # The next small write: the same bytes, give or take a few ids and counters, and a few pages
    # of the index's write-ahead log (a frame is a 4096-byte page plus its header: whether a
    # write splits more B-tree pages — records, patterns — depends on the index's layout, and the
    # second run costs the same two pages more when both earlier symptoms are 100 kB). A write
    # that read or rewrote an earlier record would cost megabytes here.
    assert abs(written_b - written_a) < 3 * 4096, (written_a, written_b)
    assert abs(read_b - read_a) < 4096, (read_a, read_b)
    # PostgreSQL rewrites documents on the server, out of this process's sight: there, no stored
    # row may hold more than a few capped texts.
    assert largest_stored_row(store) < 20 * cap


def largest_stored_row(store: Store) -> int:
    """The longest row (as text) in any table of a PostgreSQL store's schema; 0 on files."""
    connect = getattr(store, "connect", None)
    if connect is None:
        return 0
    from psycopg import sql

    schema = store.schema  # type: ignore[attr-defined]
    with connect() as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = %s AND table_type = 'BASE TABLE'",
                (schema,),
            )
        ]
        sizes = [
            conn.execute(
                sql.SQL("SELECT coalesce(max(octet_length(t::text)), 0) FROM {}.{} t").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            ).fetchone()[0]
            for table in tables
        ]
    return max(sizes, default=0)
