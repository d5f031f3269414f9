"""Symbolic links never lead a write out of the data root (issue 11, item 5).

Each test links one folder or file of the layout to a folder outside the root, then asserts the
write is refused with :class:`UnsafePathError` naming the path, and that nothing at all was
written outside the root. Deliberate layouts (a root that is itself a link, folders allowed with
``RAYVAULT_ALLOW_SYMLINKS``) keep working.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rayvault.cli import main as cli_run
from rayvault.learning import (
    UnsafePathError,
    apply_to_memory,
    create_event,
    init_memory,
    list_events,
)
from rayvault.learning.errors import log_error
from rayvault.learning.store import FileStore
from rayvault.learning.store._fs import locked
from tests.conftest import event_kwargs

pytestmark = pytest.mark.files_only("symbolic links in the file layout")


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def test_linked_video_folder_is_refused_before_anything_is_stored(
    root: Path, outside: Path
) -> None:
    link(root / "artifacts" / "videos" / "v042", outside)
    with pytest.raises(UnsafePathError) as caught:
        create_event(**event_kwargs(video_id="v042", agent=None))
    assert "artifacts/videos/v042" in str(caught.value)
    assert "outside the data root" in str(caught.value)
    assert files_under(outside) == []
    assert list_events() == []  # refused before the event log was touched


def test_linked_agent_folder_is_refused(root: Path, outside: Path) -> None:
    link(root / "state" / "agents" / "dzine_producer", outside)
    with pytest.raises(UnsafePathError, match="state/agents/dzine_producer"):
        init_memory(["dzine_producer"])
    event = create_event(**event_kwargs(video_id=None))
    with pytest.raises(UnsafePathError):
        apply_to_memory(event, "dzine_producer")
    # In create_event applying the rule is an optional step: refused, recorded, nothing outside.
    assert event.rule_id is None
    assert event.loop_errors[-1]["type"] == "UnsafePathError"
    assert files_under(outside) == []


def test_linked_memory_archive_is_refused(root: Path, outside: Path) -> None:
    init_memory(["dzine_producer"])
    archive = root / "state" / "agents" / "dzine_producer" / "memory_archive"
    archive.rmdir()
    link(archive, outside)
    memory = root / "state" / "agents" / "dzine_producer" / "memory_active.json"
    before = memory.read_bytes()
    event = create_event(**event_kwargs(video_id=None, agent=None))
    with pytest.raises(UnsafePathError, match="memory_archive"):
        apply_to_memory(event, "dzine_producer")  # the snapshot would be linked there
    assert files_under(outside) == []
    assert memory.read_bytes() == before


def test_linked_skill_graph_folder_is_refused(root: Path, outside: Path) -> None:
    link(root / "agents" / "skills" / "learnings", outside)
    event = create_event(**event_kwargs(video_id=None, agent=None))
    assert event.skill_node is None
    assert event.loop_errors[0]["step"] == "skill_graph"
    assert "outside the data root" in event.loop_errors[0]["message"]
    assert files_under(outside) == []


def test_allowed_linked_skill_graph_folder_works(
    root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link(root / "agents" / "skills" / "learnings", outside)
    monkeypatch.setenv("RAYVAULT_ALLOW_SYMLINKS", "agents/skills/learnings")
    event = create_event(**event_kwargs(video_id=None, agent=None))
    assert event.skill_node and not event.loop_errors
    assert (outside / "_index.md").is_file()


def test_linked_soul_file_is_refused(root: Path, outside: Path) -> None:
    target = outside / "SOUL.md"
    target.write_text("# outside\n")
    link(root / "agents" / "dzine_producer" / "SOUL.md", target)
    store = FileStore(root)
    with pytest.raises(UnsafePathError, match="SOUL.md"):
        store.docs.write_soul(root / "agents" / "dzine_producer" / "SOUL.md", str.upper)
    with pytest.raises(UnsafePathError, match="LEARNING_SOUL_PATHS"):
        store.docs.find_soul("dzine_producer")
    assert target.read_text() == "# outside\n"


def test_linked_soul_folder_is_refused(root: Path, outside: Path) -> None:
    link(root / "agents" / "dzine_producer", outside)
    store = FileStore(root)
    with pytest.raises(UnsafePathError, match="agents/dzine_producer"):
        store.docs.create_soul("dzine_producer", "# new\n")
    assert files_under(outside) == []


def test_linked_note_index_archive_is_refused(root: Path, outside: Path) -> None:
    store = FileStore(root)
    folder = root / "agents" / "skills" / "learnings"
    folder.mkdir(parents=True)
    target = outside / "archive.md"
    link(folder / "_index-archive.md", target)  # dangling: appending would create it
    with pytest.raises(UnsafePathError, match="_index-archive.md"):
        store.docs.update_note_index(lambda current: ("# index\n", ["- overflow"]))
    assert not target.exists()
    assert not os.path.lexists(outside / "archive.md")


def test_linked_event_log_is_refused(root: Path, outside: Path) -> None:
    create_event(**event_kwargs(video_id=None, agent=None))
    log = root / "data" / "learning_events.json"
    target = outside / "learning_events.json"
    log.rename(target)
    before = target.read_bytes()
    link(log, target)
    with pytest.raises(UnsafePathError, match="learning_events.json: it is a symbolic link"):
        create_event(**event_kwargs(video_id=None, agent=None, symptom="Second"))
    assert target.read_bytes() == before


def test_linked_data_folder_is_refused(root: Path, outside: Path) -> None:
    link(root / "data", outside)
    with pytest.raises(UnsafePathError, match="data"):
        log_error("v042", "assets", "boom")
    assert files_under(outside) == []


def test_dangling_linked_lock_file_is_refused(root: Path, outside: Path) -> None:
    target = outside / "stolen.lock"
    link(root / "data" / "learning_events.json.lock", target)
    with pytest.raises(UnsafePathError, match=r"learning_events\.json\.lock"):
        create_event(**event_kwargs(video_id=None, agent=None))
    assert not target.exists()
    assert files_under(outside) == []


def test_dangling_lock_link_in_a_folder_of_the_root(root: Path, tmp_path: Path) -> None:
    """Even a lock link pointing inside the root is never followed (O_NOFOLLOW)."""
    target = root / "elsewhere.lock"
    link(root / "state" / "x.json.lock", target)
    FileStore(root)  # registers the root
    with pytest.raises(UnsafePathError), locked(root / "state" / "x.json"):
        pass
    assert not target.exists()


def test_linked_index_cache_is_refused(root: Path, outside: Path) -> None:
    link(root / "state" / "cache", outside)
    with pytest.raises(UnsafePathError, match="state/cache"):
        list_events()
    assert files_under(outside) == []


def test_a_folder_replaced_by_a_link_later_is_noticed(root: Path, outside: Path) -> None:
    """The check is cached per folder, by identity: a folder swapped for a link is new."""
    create_event(**event_kwargs(agent=None))
    folder = root / "artifacts" / "videos" / "v042"
    folder.rename(root / "moved")
    link(folder, outside)
    with pytest.raises(UnsafePathError):
        create_event(**event_kwargs(agent=None, symptom="Again"))
    assert files_under(outside) == []


def test_a_root_that_is_a_link_works(tmp_path: Path) -> None:
    real = tmp_path / "real-root"
    real.mkdir()
    linked = tmp_path / "linked-root"
    linked.symlink_to(real)
    store = FileStore(linked)
    event = create_event(**event_kwargs(), store=store)
    assert event.rule_id and event.skill_node
    assert (real / "artifacts" / "videos" / "v042" / "learning" / "events").is_dir()
    assert (real / "state" / "agents" / "dzine_producer" / "memory_active.json").is_file()
    store.close()


def test_allowed_linked_folder_works(
    root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link(root / "artifacts" / "videos", outside)
    monkeypatch.setenv("RAYVAULT_ALLOW_SYMLINKS", "artifacts/videos")
    event = create_event(**event_kwargs())
    assert (outside / "v042" / "learning" / "events" / f"{event.event_id}.json").is_file()
    monkeypatch.delenv("RAYVAULT_ALLOW_SYMLINKS")  # the permission is read on every write
    with pytest.raises(UnsafePathError):
        create_event(**event_kwargs(symptom="without the permission"))
    monkeypatch.setenv("RAYVAULT_ALLOW_SYMLINKS", "artifacts/videos")
    # Only that folder: a link elsewhere is still refused.
    link(root / "state" / "agents" / "other", outside)
    with pytest.raises(UnsafePathError):
        init_memory(["other"])


def test_allowed_folder_must_not_lead_further_out(
    root: Path, outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under an allowed link, a second link leaving its target is refused."""
    further = tmp_path / "further"
    further.mkdir()
    link(root / "artifacts" / "videos", outside)
    link(outside / "v042", further)
    monkeypatch.setenv("RAYVAULT_ALLOW_SYMLINKS", "artifacts/videos")
    with pytest.raises(UnsafePathError):
        create_event(**event_kwargs())
    assert files_under(further) == []


def test_cli_names_the_path(root: Path, outside: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link(root / "data", outside)
    code = cli_run(["errors", "log", "assets", "boom", "--video", "v042"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Error:" in err and "outside the data root" in err
    assert files_under(outside) == []
