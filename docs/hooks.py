"""MkDocs hook: pages hold a marker where reference text is generated from the code.

``<!-- generated: cli -->`` becomes the command tree of ``rayvault-learn`` (walked from the
Typer app, so new commands appear by themselves), ``<!-- generated: policies -->`` the policy
constants with their defaults, ``<!-- generated: api -->`` mkdocstrings directives for every name
of ``rayvault.learning.__all__``. The generators live in ``rayvault/cli/_reference.py``.
"""

from __future__ import annotations

from typing import Any

from rayvault.cli import _reference

GENERATORS = {
    "<!-- generated: cli -->": _reference.cli_reference,
    "<!-- generated: policies -->": _reference.policies_reference,
    "<!-- generated: api -->": _reference.api_reference,
}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    for marker, generate in GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
