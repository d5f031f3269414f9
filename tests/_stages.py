"""A scripted stage function for closed-loop tests: each attempt fails or succeeds as told."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayvault.learning.loop import StageContext

#: Exception types a scripted failure may name as ``"Type: message"``.
_TYPES: dict[str, type[Exception]] = {"ValueError": ValueError, "RuntimeError": RuntimeError}


@dataclass
class Scripted:
    """A stage whose attempts fail or succeed as scripted: each item is a failure text
    (``"RuntimeError: message"`` raises that type with that message; any other text, a
    ``ValueError`` with the text), or None for success. Keeps each attempt's context."""

    script: list[str | None]
    seen: list[StageContext] = field(default_factory=list)

    def __call__(self, ctx: StageContext) -> str:
        self.seen.append(ctx)
        text = self.script[len(self.seen) - 1]
        if text is None:
            return "ok"
        kind, _, message = text.partition(": ")
        if kind in _TYPES and message:
            raise _TYPES[kind](message)
        raise ValueError(text)
