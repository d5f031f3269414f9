"""benchmarks/bench_web.py at tiny size: every page answers 200 on both roots, and the report
prints each page and each list page's ratio."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed")

from benchmarks.bench_web import LIST_PAGES, main, run


@pytest.mark.slow
def test_bench_web_runs_every_page(capsys: pytest.CaptureFixture[str]) -> None:
    results = run((120, 600), None, 1)
    assert set(results) == {120, 600}
    assert all(ms > 0 for found in results.values() for ms in found.values())
    assert set(LIST_PAGES) <= set(results[600])
    main(["--samples", "1", "--sizes", "120,600"])
    out = capsys.readouterr().out
    assert "server time p50 (ms)" in out and "≤ 150 ms" in out
    for name in ("overview", "events", "event", "patterns", "agent", "gate cell", *LIST_PAGES):
        assert f"\n{name} " in out or f"  {name} " in out, name
