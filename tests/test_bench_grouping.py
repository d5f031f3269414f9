"""benchmarks/bench_grouping.py on tiny data: its metrics are right for a grouping worked out by
hand, and it runs without drain3 (saying how to get it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks.bench_grouping import DRAIN3_MISSING, main, score

LOGHUB = [
    ("Timeout after 12s on host B0ABC12345", "E1"),
    ("Timeout after 30s on host B0XYZ99999", "E1"),
    ("Disk full on /dev/sda1", "E2"),
    # Two true events that only a number tells apart: grouped as one, so both are wrong.
    ("Connection refused on port 80", "E3"),
    ("Connection refused on port 443", "E4"),
    ("Disk full on /dev/sdb2", "E2"),
]
PIPELINE = [
    {"stage": "render", "text": "Render timed out after 1.83s", "group": "timeout"},
    {"stage": "render", "text": "Render timed out after 7m42.2s", "group": "timeout"},
    {"stage": "script", "text": "KeyError: 'choices'", "group": "no-choices"},
    {"stage": "script", "text": "KeyError: 'price'", "group": "no-price"},
    {
        "stage": "script",
        "text": 'Traceback (most recent call last):\n  File "/a.py", line 3, in f\n'
        "    x = r['choices']\nKeyError: 'choices'\n",
        "group": "no-choices",
    },
]


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "loghub"
    folder.mkdir()
    lines = ["LineId,Content,EventId,EventTemplate"]
    lines += [f'{i},"{text}",{event},x' for i, (text, event) in enumerate(LOGHUB, 1)]
    (folder / "Toy_2k.log_structured_corrected.csv").write_text("\n".join(lines) + "\n")
    (folder / "README.md").write_text("not a data file\n")
    pipeline = tmp_path / "pipeline_failures.jsonl"
    pipeline.write_text("".join(json.dumps(r) + "\n" for r in PIPELINE))
    return folder, pipeline


def test_score_of_a_known_grouping() -> None:
    s = score([1, 1, 2, 3, 3], ["a", "a", "b", "b", "c"])
    assert s.ga == pytest.approx(2 / 5)  # only group 1 is exactly a true group
    # Pairs: predicted (0,1) (3,4); true (0,1) (2,3); both (0,1).
    assert (s.precision, s.recall, s.f1) == pytest.approx((0.5, 0.5, 0.5))
    assert (s.groups, s.true_groups) == (3, 3)
    perfect = score(["x", "y", "y"], [7, 8, 8])
    assert (perfect.ga, perfect.f1) == (1.0, 1.0)
    singletons = score([1, 2, 3], ["a", "a", "a"])
    assert (singletons.ga, singletons.precision, singletons.recall) == (0.0, 1.0, 0.0)


def test_main_scores_the_toy_files(
    data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, pipeline = data
    report = main(
        [
            "--data",
            str(folder),
            "--pipeline",
            str(pipeline),
            "--no-drain3",
            "--json",
            "--repeat",
            "1",
        ]
    )
    assert json.loads(capsys.readouterr().out) == report
    rows = {(r["dataset"], r["system"]): r for r in report["rows"]}
    assert set(rows) == {("Toy", "v2"), ("pipeline", "v2")}

    toy = rows["Toy", "v2"]
    assert toy["messages"] == 6
    assert toy["ga"] == pytest.approx(4 / 6)
    assert (toy["precision"], toy["recall"], toy["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (toy["groups"], toy["true_groups"]) == (3, 4)
    assert toy["per_second"] > 0
    assert toy["max_ms"] is not None and toy["max_ms"] >= 0

    # Per stage, quotes kept, with or without the traceback: exactly the true groups.
    pipe = rows["pipeline", "v2"]
    assert (pipe["ga"], pipe["f1"], pipe["groups"], pipe["true_groups"]) == (1.0, 1.0, 3, 3)

    assert report["averages"] == [
        {
            "system": "v2",
            "datasets": 1,
            "ga": toy["ga"],
            "f1": toy["f1"],
            "per_second": toy["per_second"],
        }
    ]
    assert [m["kind"] for m in report["long_messages"]] == ["json body", "dotted text", "traceback"]
    for m in report["long_messages"]:
        assert m["chars"] == 20_000
        assert 0 < m["fastest_ms"] <= m["ms"] <= m["slowest_ms"]
        assert m["ok"] == (m["ms"] < 5.0)
    assert report["notes"] == []


def test_version_1_and_the_table(
    data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, pipeline = data
    report = main(
        ["--data", str(folder), "--pipeline", str(pipeline), "--no-drain3", "--versions", "1,2"]
    )
    systems = [(r["dataset"], r["system"]) for r in report["rows"]]
    assert systems == [("Toy", "v2"), ("Toy", "v1"), ("pipeline", "v2"), ("pipeline", "v1")]
    out = capsys.readouterr().out
    assert "Toy         v2       0.667  0.800" in out
    assert "Average over the LogHub data sets:" in out
    assert "20,000-character messages" in out


def test_missing_pipeline_set_and_drain3_are_notes(
    data: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, _ = data
    monkeypatch.setitem(sys.modules, "drain3", None)  # import drain3 now raises ImportError
    report = main(["--data", str(folder), "--pipeline", str(tmp_path / "none.jsonl")])
    assert [r["system"] for r in report["rows"]] == ["v2"]
    assert DRAIN3_MISSING in report["notes"]
    assert any("pipeline-failure set not found" in n for n in report["notes"])
    out = capsys.readouterr().out
    assert "pip install -e '.[bench]'" in out
    assert "Toy         v2" in out


@pytest.mark.parametrize("bad", [["--versions", "3"], ["--versions", "x"], ["--repeat", "0"]])
def test_bad_options_are_refused(data: tuple[Path, Path], bad: list[str]) -> None:
    folder, pipeline = data
    with pytest.raises(SystemExit):
        main(["--data", str(folder), "--pipeline", str(pipeline), *bad])
