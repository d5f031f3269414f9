"""What every sub-command shares: the ``--root``/``--store``/``--json`` options, opening the store,
and the one renderer (Rich for people, JSON for scripts)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from rayvault.learning.store import ProgressCallback, Store

RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        metavar="DIR",
        help="Data root (default: $RAYVAULT_ROOT, else the current directory).",
        show_default=False,
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help="Store URL, e.g. postgresql://host/db "
        "(default: $RAYVAULT_STORE, else the file store).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
IdempotencyKeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Your key for this call: repeating it (e.g. a retry after an error) returns the "
        "record the first call created and creates nothing.",
    ),
]


@dataclass
class Globals:
    """Options given before the sub-command (``rayvault-learn --root DIR events list``)."""

    root: Path | None = None
    store: str | None = None
    json: bool = False
    debug: bool = False
    #: The root and store the command opened (see ``_location``); None before it opens one.
    location: dict[str, str] | None = None
    #: Whether the location was already reported (in a JSON object or on stderr).
    location_shown: bool = False


GLOBALS = Globals()


def open_cli_store(
    root: Path | None,
    store: str | None = None,
    *,
    read: bool = False,
    uninitialised_ok: bool = False,
) -> Store:
    """Open the store a command uses. ``read=True`` for commands that only read: they refuse a
    root that does not exist, or a current directory that is not a data root, and create nothing
    (see ``rayvault.learning.store.roots``), and a server store whose schema does not exist yet
    (``uninitialised_ok``: a command that reports on it). The root is reported when the command
    ends."""
    from rayvault.cli._location import store_location
    from rayvault.learning.store import (
        choose_root,
        is_data_root,
        open_store,
        root_for_reading,
        uses_server_store,
    )

    given = root if root is not None else GLOBALS.root
    url = store or GLOBALS.store
    if read:
        target = root_for_reading(given, url, given_as="--root")
    else:
        choice = choose_root(given)
        target = choice.path
        if (
            choice.source == "current directory"
            and not uses_server_store(url)
            and not is_data_root(target)
        ):
            warn(
                f"the current directory {target} is not a data root yet (RAYVAULT_ROOT is not "
                "set): writing one there"
            )
    opened = open_store(target, url)
    GLOBALS.location = store_location(opened)
    if read and not uninitialised_ok:
        from rayvault.learning.store.capabilities import require_initialised

        require_initialised(opened)
    return opened


def show_location() -> None:
    """Report the root and store the command used (once), as the ``root: …`` line on stderr."""
    from rayvault.cli._location import write_location

    if GLOBALS.location is not None and not GLOBALS.location_shown:
        GLOBALS.location_shown = True
        write_location(GLOBALS.location)


def want_json(flag: bool) -> bool:
    return flag or GLOBALS.json


_consoles: dict[str, Console] = {}

#: The width of output that is not a terminal: in effect none (Rich draws a table as wide as its
#: cells, so nothing in it is cut or wrapped; text is never wrapped). ``COLUMNS`` sets one.
UNBOUNDED = 1_000_000
#: What a separator line or other full-width drawing gets when the output has no width.
RULE_WIDTH = 80


def console(stderr: bool = False) -> Console:
    """The Rich console of stdout (or stderr). On a terminal, Rich fits the output to its
    width; to a pipe or a file, it gets an unbounded width unless ``COLUMNS`` is set (scripts
    and ``grep`` see whole lines, whatever the terminal of whoever runs them)."""
    import os

    key = "err" if stderr else "out"
    if key not in _consoles:
        from rich.console import Console

        made = Console(stderr=stderr, highlight=False)
        if not made.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
            made = Console(stderr=stderr, highlight=False, width=UNBOUNDED)
        _consoles[key] = made
    return _consoles[key]


def rule_width() -> int:
    """The width of a separator line: the terminal's, at most :data:`RULE_WIDTH` off one."""
    width = console().width
    return width if width < UNBOUNDED else RULE_WIDTH


def echo_exact(text: str) -> None:
    """Text on stdout as it is, byte for byte: no markup, no wrapping, no newline added."""
    sys.stdout.write(text)
    sys.stdout.flush()


def is_wide() -> bool:
    """Room for the optional table columns (120 columns or more, or no width: a pipe)."""
    return console().width >= 120


def reset_consoles() -> None:
    _consoles.clear()


def print_json(data: Any, *, record: bool = False) -> None:
    """JSON on stdout. A result object gets the ``location`` field of the store the command used;
    a ``record`` (an event, an error entry, a memory file: the stored shape) and a list keep
    their shape, and the root line goes to stderr for them."""
    import orjson

    from rayvault.cli._location import with_location

    if not record:
        data, added = with_location(data, GLOBALS.location)
        GLOBALS.location_shown = GLOBALS.location_shown or added

    def default(value: Any) -> Any:
        if hasattr(value, "model_dump"):
            return value.model_dump(mode="json")
        if isinstance(value, Path):
            return str(value)
        raise TypeError(type(value).__name__)

    sys.stdout.write(
        orjson.dumps(data, default=default, option=orjson.OPT_INDENT_2).decode() + "\n"
    )
    sys.stdout.flush()


def emit(data: Any, as_json: bool, human: Callable[[], None], *, record: bool = False) -> None:
    """Print ``data`` as JSON under ``--json``, else call ``human`` to render it for people."""
    if want_json(as_json):
        print_json(data, record=record)
    else:
        human()


def record_table(title: str, data: dict[str, Any], *, skip: tuple[str, ...] = ()) -> Table:
    """One record as a two-column table: every field that has a value (lists and maps as
    indented JSON), severities coloured."""
    import json

    from rich.markup import escape

    table = new_table(show_header=False, title=title)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        if value in (None, "", [], {}) or key in skip:
            continue
        if key == "severity":
            shown = severity_text(str(value))
        elif isinstance(value, list | dict):
            shown = escape(json.dumps(value, indent=1, ensure_ascii=False))
        else:
            shown = escape(str(value))
        table.add_row(key, shown)
    return table


#: What ``-`` means wherever a command reads a text or a JSON document from an argument.
STDIN = "-"


def read_stdin_text() -> str:
    """Standard input as text. Bytes that are not UTF-8 are refused, like a lone surrogate in an
    argument: nothing is stored that differs from what the step printed."""
    from rayvault.learning.exceptions import InvalidInputError

    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInputError(
            f"stdin is not UTF-8 text: byte {data[e.start]:#04x} at offset {e.start}",
            hint="convert it first, e.g. `iconv -f latin1 -t utf-8` or `iconv -c -t utf-8`",
        ) from None


def from_stdin(value: str | None, name: str, *others: tuple[str | None, str]) -> str | None:
    """``value``, or standard input when it is ``-`` (the convention of every command that
    takes a text or JSON argument). Refused when one of ``others`` (value, name) is ``-`` too:
    stdin can be read once."""
    if value != STDIN:
        return value
    from rayvault.learning.exceptions import InvalidInputError

    for other, other_name in others:
        if other == STDIN:
            raise InvalidInputError(
                f"{other_name} and {name} are both '-': only one of them can be read from stdin"
            )
    return read_stdin_text()


def report_error(error: Exception) -> None:
    """The one way errors reach people: ``Error: …`` and a hint, on stderr."""
    hint = getattr(error, "hint", None)
    sys.stderr.write(f"Error: {error}\n" + (f"  hint: {hint}\n" if hint else ""))
    sys.stderr.flush()


def warn(message: str) -> None:
    console(stderr=True).print(f"[yellow]warning:[/] {message}", markup=True, soft_wrap=True)


def new_table(title: str | None = None, **options: Any) -> Table:
    """A table in the CLI's style: light borders, leaving room for text in narrow terminals."""
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, **options)


SEVERITY_STYLE = {"BLOCKER": "bold red", "FAIL": "red", "WARN": "yellow", "INFO": "cyan"}


def severity_text(severity: str) -> str:
    style = SEVERITY_STYLE.get(severity, "")
    return f"[{style}]{severity}[/]" if style else severity


def plural(n: int, noun: str, plural: str | None = None) -> str:
    """``1 active rule``, ``2 active rules`` (``plural`` for irregular ones: entry/entries),
    with thousands grouped (``12,000 events``)."""
    from rayvault.learning._words import noun_for

    return f"{n:,} {noun_for(n, noun, plural)}"


def short(text: str | None, limit: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(value: Any) -> str:
    """A timestamp for tables: ``2026-02-19 12:00``."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value)


#: Fewer items than this finish before a progress bar would be worth drawing.
PROGRESS_MIN_ITEMS = 200


@contextlib.contextmanager
def progress_bar(
    as_json: bool = False, *, min_items: int = PROGRESS_MIN_ITEMS
) -> Iterator[ProgressCallback | None]:
    """A Rich progress bar on stderr fed by the library's ``progress(what, done, total)``
    callback: only on a terminal, only for runs of ``min_items`` or more, never under
    ``--json`` (yields None then)."""
    err = console(stderr=True)
    if want_json(as_json) or not err.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(what: str, done: int, total: int) -> None:
            if total < min_items:
                return
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        yield update
