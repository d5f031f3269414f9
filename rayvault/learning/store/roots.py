"""What a data root is, and which one a command uses.

A *data root* is a folder holding at least one of :data:`DATA_ROOT_MARKERS` (``data/``,
``state/``, ``artifacts/``, ``agents/`` or ``policies.py``). The root comes from the caller
(``--root``), else ``RAYVAULT_ROOT``, else the current directory. Reads never create a root: a
root that does not exist is refused (:func:`root_for_reading`), and so is a current directory
that is not a data root, so a command run from the wrong folder says where it looked instead of
answering "nothing here". Writes create the root's folders as they need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rayvault.learning.exceptions import StoreError

#: A folder holding any of these is a data root.
DATA_ROOT_MARKERS = ("data", "state", "artifacts", "agents", "policies.py")


def is_data_root(path: Path | str) -> bool:
    """True when ``path`` is a folder holding any of :data:`DATA_ROOT_MARKERS`."""
    folder = Path(path)
    try:
        return folder.is_dir() and any((folder / m).exists() for m in DATA_ROOT_MARKERS)
    except OSError:
        return False


@dataclass(frozen=True)
class RootChoice:
    """The data root a command uses and where that came from: ``given`` (by the caller,
    e.g. ``--root``), ``RAYVAULT_ROOT``, or ``current directory``."""

    path: Path
    source: str


def choose_root(root: Path | str | None = None) -> RootChoice:
    """The root ``resolve_root`` picks, with where it came from."""
    if root is not None and str(root) != "":
        return RootChoice(Path(root).expanduser().absolute(), "given")
    env = os.environ.get("RAYVAULT_ROOT", "").strip()
    if env:
        return RootChoice(Path(env).expanduser().absolute(), "RAYVAULT_ROOT")
    return RootChoice(Path.cwd(), "current directory")


def uses_server_store(url: str | None = None) -> bool:
    """True when ``url`` (``RAYVAULT_STORE`` when None) names a server store, not the files."""
    kind = url if url is not None else os.environ.get("RAYVAULT_STORE", "")
    return kind.strip() not in {"", "file", "files"}


def root_for_reading(
    root: Path | str | None = None,
    url: str | None = None,
    *,
    given_as: str = "the root argument",
) -> Path:
    """The data root for a command that only reads; :class:`StoreError` when it does not exist,
    or when it is the current directory (no root given, no ``RAYVAULT_ROOT``) and that is not a
    data root. With a server store (``url``, else ``RAYVAULT_STORE``: PostgreSQL) the records
    live on the server and the root only holds documents, so the current directory is accepted
    as it is."""
    choice = choose_root(root)
    server = uses_server_store(url)
    source = given_as if choice.source == "given" else choice.source
    if not choice.path.exists():
        raise StoreError(
            f"data root {choice.path} does not exist (from {source})",
            hint="check the path; commands that write create a new root, reads never do",
        )
    if not choice.path.is_dir():
        raise StoreError(f"data root {choice.path} is not a folder (from {source})")
    if choice.source == "current directory" and not server and not is_data_root(choice.path):
        raise StoreError(
            f"no data root found: looked in the current directory {choice.path} (it has none "
            f"of {', '.join(m if '.' in m else m + '/' for m in DATA_ROOT_MARKERS)}) "
            "and RAYVAULT_ROOT is not set",
            hint="pass --root DIR or set RAYVAULT_ROOT",
        )
    return choice.path
