"""Documents people review, which stay files whatever the store: the skill graph's learning notes
and their ``_index.md`` map, the agents' SOUL files, and the project's ``policies.py``.

This is the only code that knows where they live; the locations come from the policies
(``LEARNING_SKILL_GRAPH_DIR``, ``LEARNING_SOUL_PATHS``) and must stay inside the data root.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rayvault.learning._hash import sha1_hex, sha256_hex
from rayvault.learning._ids import validate_identifier
from rayvault.learning.exceptions import (
    ConfigError,
    CorruptFileError,
    InvalidIdentifierError,
    InvalidInputError,
    StoreError,
    UnsafePathError,
)
from rayvault.learning.store._fs import (
    allowed_link,
    atomic_write,
    check_inside,
    create_exclusive,
    locked,
    open_nofollow,
    register_root,
)
from rayvault.policies import POLICIES_FILENAME, Policies

NOTE_INDEX = "_index.md"
NOTE_INDEX_ARCHIVE = "_index-archive.md"
#: Full texts of fields cut to the size caps, one file per distinct text.
ATTACHMENTS_DIR = "data/attachments"


class Documents:
    """The file documents of one data root."""

    def __init__(
        self, root: Path, policies: Callable[[], Policies], *, read_only: bool = False
    ) -> None:
        self.root = root
        register_root(root)
        self._policies = policies
        self._resolved: dict[str, Path] = {}
        self.read_only = read_only

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"the documents under {self.root} were opened read-only")

    def _inside_root(self, relative: str, what: str) -> Path:
        known = self._resolved.get(relative)
        if known is not None:
            return known
        lexical = os.path.normpath(self.root / relative)
        path = Path(lexical).resolve()
        if not path.is_relative_to(self.root.resolve()):
            if not Path(lexical).is_relative_to(self.root):
                raise ConfigError(f"{what} {relative!r} points outside the data root {self.root}")
            if not allowed_link(str(self.root), lexical, str(path)):
                raise UnsafePathError(
                    lexical,
                    f"{what} {relative!r} leads outside the data root {self.root} through a "
                    f"symbolic link (it resolves to {path})",
                )
        if len(self._resolved) < 256:
            self._resolved[relative] = path
        return path

    def relative(self, path: Path) -> str:
        """``path`` (inside a resolved folder of ours) relative to the data root."""
        root = self._inside_root(".", "the data root")
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return str(path)

    # -- full texts of capped fields ----------------------------------------------------------
    def keep_full_text(self, text: str) -> str:
        """Keep ``text`` once, as ``data/attachments/<digest>.txt``: named by its SHA-256, so the
        same text is written once however often it is capped. Returns the path relative to the
        data root."""
        self._writable()
        data = text.encode()
        name = f"{sha256_hex(data)[:32]}.txt"
        path = self._inside_root(ATTACHMENTS_DIR, "the attachments folder") / name
        if not path.exists():
            create_exclusive(path, data)
        return f"{ATTACHMENTS_DIR}/{name}"

    # -- skill graph --------------------------------------------------------------------------
    @property
    def skill_graph_dir(self) -> Path:
        return self._inside_root(
            self._policies().LEARNING_SKILL_GRAPH_DIR, "LEARNING_SKILL_GRAPH_DIR"
        )

    def create_note(self, name: str, text: str) -> Path | None:
        """Write a new note called ``name``; None (nothing written) if that name is taken."""
        self._writable()
        if not name.endswith(".md") or "/" in name or name.startswith("."):
            raise InvalidIdentifierError(f"invalid note name {name!r}")
        validate_identifier(name[:-3], "note name")
        path = self.skill_graph_dir / name
        return path if create_exclusive(path, text.encode()) else None

    def update_note_index(self, update: Callable[[str | None], tuple[str, list[str]]]) -> Path:
        """Rewrite ``_index.md`` under its lock as ``update(current_text)`` says; the lines it
        returns as overflow are appended to ``_index-archive.md`` (nothing is dropped)."""
        self._writable()
        folder = self.skill_graph_dir
        path = folder / NOTE_INDEX
        with locked(path):
            try:
                current: str | None = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                current = None
            except UnicodeDecodeError as e:
                raise CorruptFileError(path, f"is not UTF-8 text ({e.reason})") from e
            text, overflow = update(current)
            if overflow:
                archive = folder / NOTE_INDEX_ARCHIVE
                check_inside(archive)
                fd = open_nofollow(archive, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                with os.fdopen(fd, "a", encoding="utf-8") as fh:
                    fh.write("".join(line + "\n" for line in overflow))
            atomic_write(path, text.encode())
        return path

    def list_notes(self) -> list[Path]:
        folder = self.skill_graph_dir
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.md") if not p.name.startswith("_"))

    def notes_folder(self, folder: Path | str | None = None) -> Path:
        """A folder of notes to read: ``folder`` (relative to the data root unless absolute; it
        may be outside the root, it is only read), or the skill graph's learnings folder."""
        if folder is None:
            return self.skill_graph_dir
        path = Path(folder).expanduser()
        path = (path if path.is_absolute() else self.root / path).resolve()
        if not path.is_dir():
            raise InvalidInputError(
                f"notes folder {path} does not exist or is not a folder",
                hint="give the folder holding the skill-graph notes (*.md) with --notes",
            )
        return path

    def note_files(self, folder: Path) -> list[Path]:
        """Every ``*.md`` file directly in ``folder``, maps of content (``_index.md``…) too,
        sorted by name; empty when the folder does not exist."""
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.md") if p.is_file())

    def read_note(self, path: Path) -> str:
        """The text of a note; :class:`CorruptFileError` when it is not UTF-8."""
        data = path.read_bytes()
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise CorruptFileError(path, f"is not UTF-8 text ({e.reason})") from e

    # -- SOUL files ---------------------------------------------------------------------------
    def soul_candidates(self, agent: str) -> list[Path]:
        validate_identifier(agent, "agent")
        return [
            self._inside_root(template.format(agent=agent), "LEARNING_SOUL_PATHS entry")
            for template in self._policies().LEARNING_SOUL_PATHS
        ]

    def find_soul(self, agent: str) -> Path | None:
        """The agent's SOUL file: the first configured location that exists."""
        for path in self.soul_candidates(agent):
            if path.is_file():
                return path
        return None

    def read_soul(self, path: Path) -> str:
        """The text of a SOUL file (bytes that are not UTF-8 read as replacement characters:
        callers only look for markers in it)."""
        return path.read_bytes().decode("utf-8", errors="replace")

    def create_soul(self, agent: str, text: str) -> Path | None:
        """Write a new SOUL file for ``agent`` at the first configured location; None (nothing
        written) when the agent already has one."""
        if self.find_soul(agent) is not None:
            return None
        candidates = self.soul_candidates(agent)
        if not candidates:
            raise ConfigError("LEARNING_SOUL_PATHS is empty: nowhere to write a SOUL file")
        path = candidates[0]
        return path if create_exclusive(path, text.encode()) else None

    def write_soul(self, path: Path, update: Callable[[str], str]) -> bool:
        """Rewrite a SOUL file as ``update(current_text)`` says, under its lock; False when
        nothing changed."""
        self._writable()
        with locked(path):
            if path.is_symlink():  # its text would be read from wherever the link leads
                raise UnsafePathError(path, "it is a symbolic link")
            try:
                # Bytes, then decode: read_text would turn CRLF line ends into LF, and the rewrite
                # would change every line of a file we only add a section to.
                current = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorruptFileError(path, f"is not UTF-8 text ({e.reason})") from e
            new = update(current)
            if new == current:
                return False
            atomic_write(path, new.encode())
            return True

    # -- policies -----------------------------------------------------------------------------
    @property
    def policies_file(self) -> Path:
        return self.root / POLICIES_FILENAME

    def policies_sha1s(self) -> set[str]:
        """SHA-1 of the bytes of ``policies.py`` and of ``rayvault/policies.py`` (the original
        system's location), ``""`` for a missing one: what its gate state recorded."""
        return {_sha1(self.policies_file), _sha1(self.root / "rayvault" / POLICIES_FILENAME)}


def _sha1(path: Path) -> str:
    try:
        return sha1_hex(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ""
