"""``rayvault-learn doctor``: check the whole data root, and repair what is safe to repair."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from rayvault.cli._common import (
    JsonOption,
    RootOption,
    StoreOption,
    console,
    open_cli_store,
    print_json,
    progress_bar,
    want_json,
)

if TYPE_CHECKING:
    from rayvault.learning.doctor import DoctorReport
    from rayvault.learning.models import Finding

LABELS = {
    "error": "[red]ERROR[/]   ",
    "warning": "[yellow]WARNING[/] ",
    "info": "[cyan]INFO[/]    ",
}


def doctor_command(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Fix what is safe to fix (files: damaged logs salvaged and completed from "
            "their copies, a corrupt memory restored from its newest snapshot, torn tails, "
            "per-video files, the derived index, unfinished events, temp and lock files left "
            "behind, whatever is replaced archived first; "
            "PostgreSQL: pending migrations, tables and failure counts that disagree with the "
            "versions).",
        ),
    ] = False,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the store (files or tables: logs, memory, gate state, reports, index, leftovers);
    exit 1 while problems are left.

    Example: rayvault-learn doctor --repair
    """
    from rayvault.learning.doctor import check_root

    store = open_cli_store(root, store_url, read=not repair)
    with progress_bar(as_json) as progress:
        report = check_root(repair=repair, progress=progress, store=store)
    if want_json(as_json):
        print_json(report.to_dict())
    else:
        print_report(report)
    if report.remaining:
        raise typer.Exit(1)


def finding_line(finding: Finding) -> str:
    label = "[green]REPAIRED[/]" if finding.repaired else LABELS[finding.level]
    line = f"{label} {escape(finding.path)}: {escape(finding.message)} [dim]\\[{finding.code}][/]"
    if finding.action:
        line += f"\n         → {escape(finding.action)}"
    return line


def print_report(report: DoctorReport) -> None:
    out = console()
    for finding in report.findings:
        out.print(finding_line(finding), soft_wrap=True)
    if report.remaining:
        hint = (
            f" ({report.repairable} can be repaired: run `rayvault-learn doctor --repair`)"
            if report.repairable and not report.repair
            else ""
        )
        out.print(
            f"{_count(report.remaining, 'problem')} left in the {escape(report.store)}{hint}.",
            soft_wrap=True,
        )
    elif report.repaired:
        out.print(
            f"Repaired {_count(report.repaired, 'problem')}; the {escape(report.store)} is "
            "healthy.",
            soft_wrap=True,
        )
    else:
        out.print(f"No problems found in the {escape(report.store)}.", soft_wrap=True)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
