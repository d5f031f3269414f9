"""The one exception hierarchy of rayvault-learning.

Every error the library raises on purpose derives from :class:`LearningError`, so callers (and the
CLI's single error boundary) can catch it once. Messages name the object at fault and the way out.
"""

from __future__ import annotations

from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any

    from rayvault.learning.models import GateResult


class LearningError(Exception):
    """Base class of every error raised by rayvault-learning on purpose."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class InvalidInputError(LearningError, ValueError):
    """A value given by the caller is not acceptable (bad severity, empty symptom, …)."""


class InvalidIdentifierError(InvalidInputError):
    """An id, agent, stage or video id that would become part of a path is unsafe."""


class ConfigError(LearningError):
    """A policy override (policies.py or a RAYVAULT_* variable) cannot be used."""


class CorruptFileError(LearningError):
    """A data file cannot be parsed; it is left untouched."""

    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = Path(path)
        self.detail = detail
        super().__init__(
            f"{self.path} is corrupt: {detail}",
            hint="the file was left unchanged; `rayvault-learn doctor --repair` restores what "
            "can be restored (the damaged file is kept)",
        )


class NotFoundError(LearningError, LookupError):
    """Base for a missing record."""


class EventNotFoundError(NotFoundError):
    """No learning event has this id."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(
            f"no learning event with id {event_id!r}",
            hint="list the known ids with `rayvault-learn events list`",
        )


class RuleNotFoundError(NotFoundError):
    """No active rule of this agent has this id."""

    def __init__(self, agent: str, rule_id: str) -> None:
        self.agent = agent
        self.rule_id = rule_id
        super().__init__(
            f"agent {agent!r} has no active rule {rule_id!r}",
            hint=f"see the active rules with `rayvault-learn memory show {agent}`",
        )


class ErrorEntryNotFoundError(NotFoundError):
    """No error-log entry has this id."""

    def __init__(self, error_id: str) -> None:
        self.error_id = error_id
        super().__init__(
            f"no error-log entry with id {error_id!r}",
            hint="list the unresolved errors with `rayvault-learn errors list`",
        )


class SoulFileNotFoundError(NotFoundError):
    """The agent has no SOUL file where the configuration says to look."""

    def __init__(self, agent: str, searched: list[Path]) -> None:
        self.agent = agent
        self.searched = searched
        where = ", ".join(str(p) for p in searched) or "(no SOUL locations configured)"
        super().__init__(
            f"no SOUL file for agent {agent!r} (looked in {where})",
            hint="create it, or set LEARNING_SOUL_PATHS in policies.py",
        )


class StoreError(LearningError):
    """The configured store cannot be opened or used."""


class UnsafePathError(StoreError):
    """A path under the data root leads out of it through a symbolic link: nothing is written
    there (see ``RAYVAULT_ALLOW_SYMLINKS`` for deliberate layouts)."""

    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"refusing to write {self.path}: {detail}",
            hint="replace the symbolic link with a real folder or file, or allow a deliberately "
            "linked folder with RAYVAULT_ALLOW_SYMLINKS=<folder relative to the data root>",
        )


class GateBlocked(LearningError):
    """A stage was refused by the learning gate; ``result`` says why."""

    def __init__(self, result: GateResult) -> None:
        self.result = result
        clear = [command for check in result.checks for command in check.clear]
        super().__init__(
            f"learning gate blocked {result.video_id}/{result.stage}: {result.reason}",
            hint="to clear it: " + " ; ".join(f"`{c}`" for c in clear[:3])
            if clear
            else "fix or resolve what the failing checks name, "
            "or acknowledge a reviewed change with `rayvault-learn gate ack`",
        )


def describe(error: BaseException) -> dict[str, Any]:
    """A JSON-ready description of an error, as recorded on events and printed under --json."""
    info: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, CorruptFileError | UnsafePathError):
        info["path"] = str(error.path)
    return info
