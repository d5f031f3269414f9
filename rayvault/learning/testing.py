"""Helpers for testing code that uses rayvault-learning: a settable clock and a temporary,
isolated store, as ``structlog.testing`` does for logging.

Pipeline authors test their own stages with them (any test runner; each helper is a context
manager, so a pytest fixture is a ``with`` and a ``yield``)::

    from rayvault.learning import create_learning_event
    from rayvault.learning.testing import fixed_clock, temporary_store

    with temporary_store() as store, fixed_clock("2026-02-19T12:00:00Z") as clock:
        create_learning_event(run_id="r1", severity="FAIL", component="assets",
                              symptom="Blurry image", root_cause="Low resolution source",
                              fix_applied="Use the 2x source", video_id="v001")
        clock.advance(days=8)
        assert store.count_events(EventQuery(video_id="v001")) == 1

- :class:`FixedClock` / :func:`fixed_clock`: every timestamp the library takes (events, windows,
  staleness, grace periods) reads this clock until the block exits; ``set`` and ``advance`` move it.
- :func:`isolated`: a data root of its own (a temporary folder unless given), no ``RAYVAULT_*``
  variable from the caller's environment, fresh policies and default stores; everything restored
  on exit.
- :func:`temporary_store`: :func:`isolated`, yielding the store domain calls without ``store=``
  use (the file store, or the server store ``url`` names).
- :func:`reset`: forget the cached policies and default stores and restore the real clock.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from rayvault.learning import _time
from rayvault.learning.store import Store, get_store, reset_store
from rayvault.policies import reset_policies_cache

__all__ = [
    "DEFAULT_START",
    "FixedClock",
    "fixed_clock",
    "isolated",
    "reset",
    "temporary_store",
]

#: Where a :class:`FixedClock` starts unless told otherwise.
DEFAULT_START = datetime(2026, 2, 19, 12, 0, 0, tzinfo=UTC)


class FixedClock:
    """A clock that stands still until moved. ``install()`` (or ``with``) makes the library read
    it; ``uninstall()`` (or the end of the block) puts back the clock that was there before."""

    def __init__(self, start: datetime | str = DEFAULT_START) -> None:
        self.now: datetime = _time.parse_ts(start)
        self._previous: list[Callable[[], datetime] | None] = []

    def __call__(self) -> datetime:
        return self.now

    def set(self, value: datetime | str) -> datetime:
        """Move the clock to ``value`` (a datetime, naive taken as UTC, or an ISO 8601 text)."""
        self.now = _time.parse_ts(value)
        return self.now

    def advance(self, delta: timedelta | None = None, /, **parts: float) -> datetime:
        """Move the clock forward by ``delta`` or by ``timedelta(**parts)`` (``days=8``)."""
        self.now += (delta or timedelta()) + timedelta(**parts)
        return self.now

    def install(self) -> FixedClock:
        """Make the library read this clock (until :meth:`uninstall`)."""
        self._previous.append(_time._clock)
        _time.set_clock(self)
        return self

    def uninstall(self) -> None:
        """Put back the clock that was there before :meth:`install` (the real one, mostly)."""
        _time.set_clock(self._previous.pop() if self._previous else None)

    def __enter__(self) -> FixedClock:
        return self.install()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()


@contextmanager
def fixed_clock(start: datetime | str = DEFAULT_START) -> Iterator[FixedClock]:
    """A :class:`FixedClock` at ``start``, read by the library inside the block."""
    with FixedClock(start) as clock:
        yield clock


def reset() -> None:
    """Close and forget the default stores, forget the cached policies, restore the real clock."""
    reset_store()
    reset_policies_cache()
    _time.set_clock(None)


@contextmanager
def isolated(
    root: Path | str | None = None, *, url: str | None = None, keep: Iterable[str] = ()
) -> Iterator[Path]:
    """A data root of its own for the block: ``root`` (created if missing), else a temporary
    folder removed afterwards. Inside, ``RAYVAULT_ROOT`` names it, ``RAYVAULT_STORE`` is ``url``
    (unset for the file store), the caller's other ``RAYVAULT_*`` variables are hidden (except
    those named in ``keep``), and policies, default stores and clock start fresh. On exit the
    environment is put back as it was and the state reset again."""
    kept = set(keep)
    saved = {k: v for k, v in os.environ.items() if k.startswith("RAYVAULT_")}
    temp: tempfile.TemporaryDirectory[str] | None = None
    if root is None:
        temp = tempfile.TemporaryDirectory(prefix="rayvault-test-")
        base = Path(temp.name)
    else:
        base = Path(root).expanduser().absolute()
        base.mkdir(parents=True, exist_ok=True)
    try:
        for name in saved:
            if name not in kept:
                del os.environ[name]
        os.environ["RAYVAULT_ROOT"] = str(base)
        if url is not None:
            os.environ["RAYVAULT_STORE"] = url
        reset()
        yield base
    finally:
        try:
            reset()
        finally:
            for name in [k for k in os.environ if k.startswith("RAYVAULT_")]:
                del os.environ[name]
            os.environ.update(saved)
            if temp is not None:
                temp.cleanup()


@contextmanager
def temporary_store(
    root: Path | str | None = None, *, url: str | None = None, keep: Iterable[str] = ()
) -> Iterator[Store]:
    """:func:`isolated`, yielding its default store: the one domain calls without ``store=``
    use inside the block (closed at its end)."""
    with isolated(root, url=url, keep=keep):
        yield get_store()
