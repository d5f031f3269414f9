"""docs/shell.md runs as written: every shell and Python block, from a directory of its own with
no RAYVAULT_* variable set, exits 0, and the lines of the ``text`` block after it appear in what
it prints, in order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "shell.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def blocks() -> list[tuple[str, str, list[str]]]:
    """(language, code, expected lines) for every sh/python block of the page."""
    text = PAGE.read_text(encoding="utf-8")
    found: list[tuple[str, str, list[str]]] = []
    matches = list(FENCE.finditer(text))
    for i, match in enumerate(matches):
        language, code = match.group(1), match.group(2)
        if language not in ("sh", "python"):
            continue
        expected: list[str] = []
        after = matches[i + 1] if i + 1 < len(matches) else None
        if after and after.group(1) == "text" and not text[match.end() : after.start()].strip():
            expected = after.group(2).splitlines()
        found.append((language, code, expected))
    return found


def test_the_page_has_its_examples() -> None:
    """The page's runnable blocks are found (a broken fence would silently test nothing)."""
    kinds = [language for language, _, _ in blocks()]
    assert kinds.count("sh") >= 5 and kinds.count("python") >= 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("language", "code", "expected"),
    [pytest.param(*b, id=f"{b[0]}-{i}") for i, b in enumerate(blocks())],
)
def test_every_block_runs_as_written(
    tmp_path: Path, language: str, code: str, expected: list[str]
) -> None:
    """The block exits 0 from an unrelated directory, and prints its expected lines in order."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYVAULT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = ["bash", "-c", code] if language == "sh" else [sys.executable, "-c", code]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        command,
        cwd=elsewhere,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout
    assert done.returncode == 0, output
    assert "Traceback" not in output, output
    lines = output.splitlines()
    position = 0
    for line in expected:
        while position < len(lines) and line not in lines[position]:
            position += 1
        assert position < len(lines), f"{line!r} not printed (in order) in:\n{output}"
        position += 1
