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
from pathlib import Path

from rayvault.learning.exceptions import StoreError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any

    from rayvault.learning.store._rootchoice import RootChoice
    from rayvault.policies import Policies

#: A folder holding any of these is a data root.
DATA_ROOT_MARKERS = ("data", "state", "artifacts", "agents", "policies.py")


def is_data_root(path: Path | str) -> bool:
    """True when ``path`` is a folder holding any of :data:`DATA_ROOT_MARKERS`."""
    folder = Path(path)
    try:
        return folder.is_dir() and any((folder / m).exists() for m in DATA_ROOT_MARKERS)
    except OSError:
        return False


def __getattr__(name: str) -> Any:
    """:class:`RootChoice` is a dataclass, defined in ``_rootchoice`` and imported on first use:
    a cold ``rayvault-learn gate`` imports this module and no ``dataclasses``."""
    if name == "RootChoice":
        from rayvault.learning.store._rootchoice import RootChoice

        return RootChoice
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _choose(root: Path | str | None) -> tuple[Path, str]:
    if root is not None and str(root) != "":
        return Path(root).expanduser().absolute(), "given"
    env = os.environ.get("RAYVAULT_ROOT", "").strip()
    if env:
        return Path(env).expanduser().absolute(), "RAYVAULT_ROOT"
    return Path.cwd(), "current directory"


def choose_root(root: Path | str | None = None) -> RootChoice:
    """The root ``resolve_root`` picks, with where it came from."""
    from rayvault.learning.store._rootchoice import RootChoice

    return RootChoice(*_choose(root))


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
    path, chosen_by = _choose(root)
    server = uses_server_store(url)
    source = given_as if chosen_by == "given" else chosen_by
    if not path.exists():
        raise StoreError(
            f"data root {path} does not exist (from {source})",
            hint="check the path; commands that write create a new root, reads never do",
        )
    if not path.is_dir():
        raise StoreError(f"data root {path} is not a folder (from {source})")
    if chosen_by == "current directory" and not server and not is_data_root(path):
        raise StoreError(
            f"no data root found: looked in the current directory {path} (it has none "
            f"of {', '.join(m if '.' in m else m + '/' for m in DATA_ROOT_MARKERS)}) "
            "and RAYVAULT_ROOT is not set",
            hint="pass --root DIR or set RAYVAULT_ROOT",
        )
    return path


def policies_at(root: Path | None) -> Policies:
    """The effective policies of data root ``root`` (the spec's defaults, its ``policies.py``,
    ``RAYVAULT_*`` variables), as every store reads them: an override that cannot be used is a
    :class:`~rayvault.learning.exceptions.ConfigError` naming it."""
    from rayvault.learning.exceptions import ConfigError
    from rayvault.policies import PolicyError, load_policies

    try:
        return load_policies(root)
    except PolicyError as e:
        raise ConfigError(str(e), hint="fix the value in policies.py or the environment") from e
