"""``regroup`` on a data root the code before grouping version 2 really wrote
(``tests/fixtures/grouping-v1-root``, see its README): what version 1 merged is split, what it
kept apart is merged, and the root stays consistent and usable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rayvault.learning._fingerprint import fingerprint as fingerprint_v1
from rayvault.learning.doctor import check_root
from rayvault.learning.errors import log_error
from rayvault.learning.memory import load_active_memory
from rayvault.learning.regroup import regroup
from rayvault.learning.store import EventQuery, FileStore
from rayvault.learning.store.base import ErrorQuery

FIXTURE = Path(__file__).parent / "fixtures" / "grouping-v1-root"


@pytest.fixture
def v1_root(tmp_path: Path) -> Path:
    root = tmp_path / "v1-root"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("README.md"))
    return root


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "cache" not in p.parts and p.suffix != ".lock"
    }


def test_regroup_splits_what_version_1_merged_and_merges_what_it_kept_apart(
    v1_root: Path,
) -> None:
    store = FileStore(v1_root)
    entries = store.query_errors(ErrorQuery())
    assert len(entries) == 7 and all(e.fingerprint_version is None for e in entries)
    choices = fingerprint_v1("research", "KeyError: 'choices'").key
    assert choices == fingerprint_v1("research", "KeyError: 'price'").key  # version 1 merged them
    before = files(v1_root)

    dry = regroup(dry_run=True, store=store)
    assert files(v1_root) == before  # a dry run writes nothing
    assert (dry.events, dry.errors) == (2, 7)
    [merge] = dry.merges  # the three timeouts: two version-1 keys, one pattern now
    assert merge.stage == "assets" and sum(merge.old.values()) == 3 and len(merge.old) == 2
    assert list(merge.new.values()) == [3]
    splits = {next(iter(s.old)): s for s in dry.splits}
    assert len(splits) == 2 and choices in splits  # the KeyErrors, and the 429 and the 404
    assert len(splits[choices].new) == 2  # 'choices' and 'price' are two failures again

    done = regroup(store=store)
    assert done.rekeyed == dry.rekeyed and not done.dry_run
    again = regroup(store=store)
    assert again.nothing_to_do
    entries = store.query_errors(ErrorQuery())
    assert {e.fingerprint_version for e in entries} == {2}
    keys = {e.error.splitlines()[0]: e.fingerprint for e in entries}
    assert keys["KeyError: 'choices'"] != keys["KeyError: 'price'"]
    assert (
        keys["Client error '429 Too Many Requests' for url 'https://api.x.com/v1/a'"]
        != keys["Client error '404 Not Found' for url 'https://api.x.com/v1/b'"]
    )
    timeouts = {k for text, k in keys.items() if text.startswith("Timeout")}
    assert len({store.resolve_pattern(str(k)) for k in timeouts}) == 1

    # The rule learned under version 1's merged key follows its event's new key.
    events = {e.symptom: e for e in store.query_events(EventQuery())}
    [rule] = load_active_memory("researcher", store=store).rules
    assert rule.fingerprint == events["KeyError: 'choices'"].fingerprint
    # New failures land in the regrouped patterns; the root is consistent.
    again_choices = log_error("v105", "research", "KeyError: 'choices'", store=store)
    assert again_choices.fingerprint == keys["KeyError: 'choices'"]
    report = check_root(store=store)
    assert report.clean, [f.message for f in report.findings if f.open]
