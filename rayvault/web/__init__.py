"""``rayvault-learn serve``: the weekly review as a local web app (issue 18, docs/web.md).

An ASGI app (Starlette, Jinja2 templates shared with the static weekly report, htmx vendored in
``static/``) over one store, a layer between the CLI and the library: every action is a POST
through the library's functions (their locks, validation and errors), recorded with who did it.

Needs the ``web`` extra (``pip install 'rayvault-learning[web]'``); nothing outside this package
imports Starlette or uvicorn, and this module imports neither (see :mod:`rayvault.web.app`).
"""

from __future__ import annotations

#: What ``rayvault-learn serve`` says when the extra is missing.
INSTALL_HINT = (
    "the web app needs the 'web' extra: pip install 'rayvault-learning[web]' "
    "(Starlette, uvicorn, python-multipart)"
)


def missing_extra() -> str | None:
    """The name of the first package of the ``web`` extra that cannot be imported, or None."""
    import importlib

    for name in ("starlette", "uvicorn", "python_multipart", "jinja2"):
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None
