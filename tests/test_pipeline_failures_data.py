"""The labelled pipeline-failure set (benchmarks/data/pipeline_failures): the committed JSONL is
exactly what its generator writes, and its shape is what the README promises. Shape only: how well
any grouping does on it is the benchmark's business, not a test's."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType

import pytest

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "pipeline_failures"
JSONL = DATA / "pipeline_failures.jsonl"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pipeline_failures_generate", DATA / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in JSONL.read_text(encoding="utf-8").splitlines()]


def test_committed_file_is_the_generators_output(generator: ModuleType, tmp_path: Path) -> None:
    """Regenerating into a fresh path gives the committed bytes (seeded, order-stable)."""
    out = tmp_path / "again.jsonl"
    assert generator.main([str(out)]) == 0
    assert out.read_bytes() == JSONL.read_bytes()


def test_every_line_has_stage_text_and_group(rows: list[dict[str, str]]) -> None:
    """Each record is exactly stage, text and group, all non-empty strings."""
    for row in rows:
        assert set(row) == {"stage", "text", "group"}
        assert all(isinstance(v, str) and v.strip() for v in row.values()), row


def test_counts_and_skewed_sizes(rows: list[dict[str, str]]) -> None:
    """1,000-1,500 messages in 50-80 groups; some groups of 100+, many of 5-20, a few of 2-3."""
    sizes = Counter(row["group"] for row in rows)
    assert 1000 <= len(rows) <= 1500
    assert 50 <= len(sizes) <= 80
    assert min(sizes.values()) >= 2
    assert sum(n >= 100 for n in sizes.values()) >= 3
    assert sum(5 <= n <= 20 for n in sizes.values()) >= 30
    assert sum(n <= 3 for n in sizes.values()) >= 3


def test_each_group_lives_in_one_stage(rows: list[dict[str, str]]) -> None:
    """A group's messages all come from one stage, the one its label names."""
    stages: defaultdict[str, set[str]] = defaultdict(set)
    for row in rows:
        stages[row["group"]].add(row["stage"])
    for label, seen in stages.items():
        assert seen == {label.split("/", 1)[0]}, label


def test_documented_near_misses_exist(generator: ModuleType, rows: list[dict[str, str]]) -> None:
    """Every near-miss pair names two different groups of one stage, both in the data and the
    README."""
    groups = {row["group"] for row in rows}
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert len(generator.NEAR_MISSES) >= 8
    for a, b in generator.NEAR_MISSES:
        assert a != b
        assert a in groups and b in groups, (a, b)
        assert a.split("/")[0] == b.split("/")[0], (a, b)
        assert f"`{a}`" in readme and f"`{b}`" in readme, (a, b)


def test_readme_lists_every_group(rows: list[dict[str, str]]) -> None:
    """The README's group list names every label in the data."""
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    missing = sorted(g for g in {row["group"] for row in rows} if f"`{g}`" not in readme)
    assert not missing


def test_tracebacks_chains_and_long_lines_are_present(rows: list[dict[str, str]]) -> None:
    """The variation the set exists for is there: a failure recorded both with and without a
    traceback, both kinds of chained exception, long lines, unicode."""
    with_tb: set[str] = set()
    without_tb: set[str] = set()
    for row in rows:
        (
            with_tb if row["text"].startswith("Traceback (most recent call last):") else without_tb
        ).add(row["group"])
    assert len(with_tb & without_tb) >= 40
    texts = [row["text"] for row in rows]
    assert any("The above exception was the direct cause" in t for t in texts)
    assert any("During handling of the above exception" in t for t in texts)
    assert sum(len(t) > 5000 for t in texts) >= 5
    assert max(len(t) for t in texts) <= 16_000
    assert any(not t.isascii() for t in texts)
