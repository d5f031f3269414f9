"""The Python example of ``docs/grouping.md`` runs as written, from a folder that is not the
repository's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "grouping.md"


def test_the_grouping_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/grouping.md has no Python example"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})  # its asserts are the test
