"""A ``logging.Handler`` that puts a pipeline's ERROR records into the error log.

An existing pipeline adopts the error log by adding one handler::

    import logging
    from rayvault.learning import LearningLogHandler

    logging.getLogger("pipeline").addHandler(LearningLogHandler("v042", "assets"))

Each record at the handler's level or above (ERROR by default) becomes one ``log_error`` entry for
that video and stage: its text is the formatted record — the message and, for ``log.exception``
or ``exc_info=``, the traceback, so the failure is grouped by its exception like any other —
with the logger, level, source line, process and thread in its context.

Invariants: ``emit`` never raises into the caller's logging call (a failure to write goes to
``Handler.handleError``, which prints it on stderr under ``logging.raiseExceptions``); records
logged while the handler is writing (the library's own warnings) are not written again; writes
from several threads are serialised by the handler's lock, and from several processes by the
store's locks. Without ``store=``, each process opens its own store (of ``root``, else the
default one) the first time it writes, so a handler inherited through ``fork`` never shares a
database connection.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import orjson

from rayvault.learning._ids import validate_identifier
from rayvault.learning.errors import log_error
from rayvault.learning.exceptions import InvalidInputError
from rayvault.learning.store import Store, get_store, open_store

__all__ = ["LearningLogHandler"]


class LearningLogHandler(logging.Handler):
    """Log ERROR records (and above) to the error log of ``video_id``/``stage``.

    ``root``: the data root to write to (default: the process's default store, from
    ``RAYVAULT_ROOT``/``RAYVAULT_STORE``); ``store``: an open store instead (used as given, in
    this process only). ``level``: the lowest level logged. ``exit_code``: recorded on each
    entry (default 1). ``context``: extra JSON-ready fields added to each entry's context.
    A bad video id or stage is refused here, when the handler is made, not at the first error.
    """

    def __init__(
        self,
        video_id: str | None,
        stage: str,
        *,
        root: str | Path | None = None,
        store: Store | None = None,
        level: int = logging.ERROR,
        exit_code: int = 1,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(level)
        if video_id is not None:
            validate_identifier(video_id, "video id")
        validate_identifier(stage, "stage")
        if root is not None and store is not None:
            raise InvalidInputError("give root or store, not both")
        if isinstance(exit_code, bool) or not isinstance(exit_code, int):
            raise InvalidInputError(f"exit_code must be an integer (got {exit_code!r})")
        if context is not None:
            if not isinstance(context, dict):
                raise InvalidInputError("context must be a mapping")
            try:
                orjson.dumps(context)
            except TypeError as e:
                raise InvalidInputError(f"context must be JSON-serialisable: {e}") from None
        self.video_id = video_id
        self.stage = stage
        self.root = root
        self.exit_code = exit_code
        self.context = dict(context or {})
        self._given = store
        self._opened: tuple[int, Store] | None = None
        self._busy = threading.local()

    def store(self) -> Store:
        """The store this process writes to (opened on first use in each process)."""
        if self._given is not None:
            return self._given
        pid = os.getpid()
        if self._opened is None or self._opened[0] != pid:
            opened = open_store(self.root) if self.root is not None else get_store()
            self._opened = (pid, opened)
        return self._opened[1]

    def text(self, record: logging.LogRecord) -> str:
        """The entry's text: the formatted record (message, then the traceback if any)."""
        text = self.format(record).strip()
        return text or f"{record.levelname} logged by {record.name} with an empty message"

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "on", False):
            return  # logged by the error log itself while writing: not a pipeline failure
        self._busy.on = True
        try:
            log_error(
                self.video_id,
                self.stage,
                self.text(record),
                exit_code=self.exit_code,
                context={
                    **self.context,
                    "logger": record.name,
                    "level": record.levelname,
                    "source": f"{record.pathname}:{record.lineno}",
                    "function": record.funcName,
                    "process": record.process,
                    "thread": record.threadName,
                },
                store=self.store(),
            )
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
        finally:
            self._busy.on = False

    def close(self) -> None:
        """Close the store this handler opened for ``root`` (a given or default store stays)."""
        try:
            if self._opened is not None and self.root is not None:
                pid, opened = self._opened
                if pid == os.getpid():
                    opened.close()
            self._opened = None
        finally:
            super().close()
