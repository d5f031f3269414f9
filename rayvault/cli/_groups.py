"""A command group with a default sub-command, so ``gate VIDEO STAGE`` runs ``gate check``
while ``gate ack VIDEO STAGE`` still reaches ``ack``."""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup


class DefaultGroup(TyperGroup):
    default_command = "check"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)
