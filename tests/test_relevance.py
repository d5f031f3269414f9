"""Relevant rules first (issue 14 item 5): ``render_rules`` ranks the failure's own rule, then the
stage's rules, then the task's most relevant (the store's full-text ranking), then severity,
efficacy and when learned; it explains the selection, never starves a rule it left out, and
``run_stage`` passes what it knows.

Runs on both stores."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayvault.cli import main
from rayvault.learning import InvalidInputError, create_event, load_active_memory, render_rules
from rayvault.learning.errors import log_error
from rayvault.learning.loop import Diagnosis, Failure, StageContext, learning_stage, run_stage
from rayvault.learning.memory import (
    MIN_TRUNCATED,
    TRUNCATED_MARK,
    mark_delivered,
    prompt_rules,
)
from rayvault.learning.models import Rule
from rayvault.learning.store import Store, get_store

from .conftest import Clock, event_kwargs

pytestmark = pytest.mark.both_stores
AGENT = "dzine_producer"
HEADER = f"Learned rules for {AGENT} (follow them; most relevant first):"


def learn(severity: str, symptom: str, **more: object) -> Any:
    kwargs = event_kwargs(severity=severity, symptom=symptom, **more)
    return create_event(**kwargs)  # type: ignore[arg-type]


def ids(rules: list[Rule]) -> list[str]:
    return [r.rule_id for r in rules]


def seed(clock: Clock) -> dict[str, str]:
    """Five rules of dzine_producer, learned a minute apart: name → rule id."""
    made = {}
    for name, severity, symptom, component in (
        ("timeout", "INFO", "Timeout after 30.2s on B0ABC", "assets"),
        ("price", "WARN", "Price anomaly detected on listing B0ABC", "assets"),
        ("audio", "WARN", "Audio clipping at the start of the voiceover", "assets"),
        ("script", "FAIL", "Script intro longer than the hook allows", "script"),
        ("blocker", "BLOCKER", "Watermark visible on the hero image", "assets"),
    ):
        clock.advance(minutes=1)
        made[name] = learn(severity, symptom, component=component).rule_id
    return made


# -- the failure's own rule --------------------------------------------------------------------
def test_failure_rule_first_whatever_its_severity_even_when_the_budget_fits_one_rule(
    root: Path, clock: Clock
) -> None:
    made = seed(clock)
    full = prompt_rules(AGENT, 10_000, failure="Timeout after 41.9s on B0XYZ")
    assert ids(full.rules)[0] == made["timeout"]  # INFO, yet before the BLOCKER
    assert full.failure_rule_id == made["timeout"] and not full.truncated
    assert full.selection[0].why == "failure's own rule"
    assert full.text.splitlines()[1].startswith("- [INFO] assets: Avoid: Timeout after")

    # A budget that holds one rule and the "(and N more …)" line: that rule is the failure's.
    line = full.text.splitlines()[1]
    budget = len(HEADER) + 1 + len(line) + len("\n(and 5 more rules not shown)")
    one = prompt_rules(AGENT, budget, failure="Timeout after 41.9s on B0XYZ")
    assert ids(one.rules) == [made["timeout"]]
    assert one.text.splitlines() == [HEADER, line, "(and 4 more rules not shown)"]
    assert len(one.text) <= budget and not one.truncated
    # Without the failure the INFO rule comes last, and this budget leaves it out.
    assert ids(prompt_rules(AGENT).rules)[-1] == made["timeout"]
    assert made["timeout"] not in ids(prompt_rules(AGENT, budget).rules)


def test_failure_given_as_pattern_key_entry_or_exception(root: Path, clock: Clock) -> None:
    made = seed(clock)
    rule = next(r for r in load_active_memory(AGENT).rules if r.rule_id == made["price"])
    assert rule.fingerprint is not None
    assert prompt_rules(AGENT, failure=rule.fingerprint).failure_rule_id == made["price"]
    entry = log_error("v042", "assets", "Price anomaly detected on listing B0QQQ")
    assert prompt_rules(AGENT, failure=entry).failure_rule_id == made["price"]
    clock.advance(minutes=1)
    own = learn("FAIL", "ValueError: Product shape wrong in 2 of 5 images").rule_id
    try:
        raise ValueError("Product shape wrong in 4 of 5 images")
    except ValueError as exc:
        block = prompt_rules(AGENT, failure=exc, stage="assets")
    assert block.failure_rule_id == own and ids(block.rules)[0] == own
    # Matched in the given stage first, then in the stages of the agent's other rules.
    other = prompt_rules(AGENT, failure="Script intro longer than the hook allows", stage="assets")
    assert other.failure_rule_id == made["script"]
    # A failure no rule was learned from: no rule is first, nothing is refused.
    none = prompt_rules(AGENT, failure="Something never seen before at all")
    assert none.failure_rule_id is None and none.selection[0].why != "failure's own rule"


def test_budget_too_small_for_the_failure_rule_delivers_it_cut_and_says_so(
    root: Path, clock: Clock
) -> None:
    made = seed(clock)
    budget = len(HEADER) + 40
    block = prompt_rules(AGENT, budget, failure="Price anomaly detected on listing B0XYZ")
    assert ids(block.rules) == [made["price"]] and block.truncated
    head, line, more = block.text.splitlines()
    assert head == HEADER and more == "(and 4 more rules not shown)"
    assert line.startswith("- [WARN] assets: Avoid: Price anomaly")
    assert line.endswith("…" + TRUNCATED_MARK) and len(line) == MIN_TRUNCATED
    first = block.selection[0]
    assert (first.rule_id, first.delivered, first.truncated) == (made["price"], True, True)
    assert first.why == "failure's own rule; cut to fit the budget"
    assert block.compact_selection()["truncated"] is True
    # Even a budget smaller than the header: never an empty block when the failure has a rule.
    tiny = render_rules(AGENT, 5, failure="Price anomaly detected on listing B0XYZ")
    assert "Price anomaly" in tiny and TRUNCATED_MARK in tiny
    # A rule that is not the failure's is never cut: it is left out.
    assert TRUNCATED_MARK not in render_rules(AGENT, budget)


def test_the_failure_rule_wins_its_conflict(root: Path, clock: Clock) -> None:
    """Of a conflicting pair the newer is delivered, unless the older is the failure's rule."""
    older = learn(
        "FAIL",
        "Reviewer flagged hype wording",
        component="script",
        fix_applied="Never use superlatives like 'best ever'",
    )
    clock.advance(minutes=1)
    newer = learn(
        "FAIL",
        "Intro judged flat by the reviewer",
        component="script",
        fix_applied="Use superlatives like 'best ever' in the intro",
    )
    assert prompt_rules(AGENT).held_back == {older.rule_id: newer.rule_id}
    block = prompt_rules(AGENT, failure="Reviewer flagged hype wording")
    assert block.held_back == {newer.rule_id: older.rule_id}
    assert ids(block.rules) == [older.rule_id]
    held = block.selection[-1]
    assert (held.rule_id, held.delivered, held.position) == (newer.rule_id, False, None)
    assert held.why == f"held back: conflicts with {older.rule_id}"


# -- stage and task ----------------------------------------------------------------------------
def test_stage_rules_before_the_others(root: Path, clock: Clock) -> None:
    made = seed(clock)
    plain = ids(prompt_rules(AGENT).rules)
    assert plain == [made[n] for n in ("blocker", "script", "audio", "price", "timeout")]
    staged = prompt_rules(AGENT, stage="generate-script")  # an alias of the script stage
    assert ids(staged.rules)[0] == made["script"]
    assert staged.selection[0].why == "stage rule (script)"
    assert ids(staged.rules)[1:] == [made[n] for n in ("blocker", "audio", "price", "timeout")]
    assert staged.text.startswith(HEADER)
    assert staged.compact_selection() == {"stage_rules": [made["script"]]}


def test_task_relevance_ranks_the_matching_rule_first(root: Path, clock: Clock) -> None:
    made = seed(clock)
    block = prompt_rules(AGENT, task="Review of a gadget with a PRICE anomaly (was $19.99)")
    order = ids(block.rules)
    # Both WARN; audio was learned later, so without a task it comes first.
    assert order.index(made["audio"]) > order.index(made["price"])
    assert order[0] == made["price"]  # relevance comes before severity
    first = block.selection[0]
    assert first.relevance is not None and 0 < first.relevance < 1
    assert first.why == f"relevance {first.relevance:.2f} to the task"
    assert all(s.relevance == 0.0 for s in block.selection[1:])
    assert block.compact_selection() == {"relevance": {made["price"]: first.relevance}}
    # Stemmed: "anomalies" finds "anomaly"; a task sharing no word changes nothing.
    assert ids(prompt_rules(AGENT, task="price anomalies").rules)[0] == made["price"]
    assert ids(prompt_rules(AGENT, task="unboxing").rules) == ids(prompt_rules(AGENT).rules)


def test_rank_texts_on_the_store(store: Store) -> None:
    texts = [
        "Avoid: Audio clipping at the start.",
        "Avoid: Price anomaly detected on listing <id>. Do: compare with the price history.",
        "Avoid: Price shown without currency.",
    ]
    scores = store.rank_texts("price anomaly in the listing", texts)
    assert len(scores) == 3 and scores[0] == 0.0
    assert scores[1] > scores[2] > 0 and all(s < 1 for s in scores)
    assert store.rank_texts("", texts) == [0.0, 0.0, 0.0]
    assert store.rank_texts("price", []) == []
    # Query syntax in the task is text, never an operator or an error.
    for hostile in ('" OR ', "price) AND NOT (x", "NEAR(a b)", "a & !b | c:*", "'; DROP TABLE"):
        assert len(store.rank_texts(hostile, texts)) == 3


# -- no starvation -----------------------------------------------------------------------------
_agents = itertools.count()
SEVERITIES = ("INFO", "WARN", "FAIL", "BLOCKER")
WORDS = ("price", "audio", "timeout", "script", "image", "angle", "voice", "brand")


@st.composite
def rule_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(min_value=2, max_value=9))
    out = []
    for i in range(n):
        deliveries = draw(st.integers(min_value=0, max_value=6))
        out.append(
            {
                "severity": draw(st.sampled_from(SEVERITIES)),
                "component": draw(st.sampled_from(("assets", "script", "tts"))),
                "words": draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)),
                "age": draw(st.integers(min_value=0, max_value=50)),
                "learned": draw(st.none() | st.integers(min_value=0, max_value=50)),
                "deliveries": deliveries,
                "recurrences": draw(st.integers(min_value=0, max_value=deliveries)),
                "i": i,
            }
        )
    return out


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=rule_sets(),
    budget=st.integers(min_value=120, max_value=400),
    stage=st.none() | st.sampled_from(("assets", "script")),
    task=st.none() | st.sampled_from(("price of the brand", "voice and audio", "nothing")),
)
def test_a_rule_left_out_by_the_budget_is_not_ranked_lower_for_it(
    store: Store,
    clock: Clock,
    *,
    specs: list[dict[str, Any]],
    budget: int,
    stage: str | None,
    task: str | None,
) -> None:
    """Render, count the shown rules delivered (what every run does), render again: the ranking
    (every rule, shown or left out) and the rules shown are the same."""
    agent = f"agent{next(_agents)}"
    now = clock.now
    with store.agent_state(agent) as state:
        state.memory.rules = [
            Rule(
                rule_id=f"rule-{s['i']:02d}",
                created=now - timedelta(hours=s["age"]),
                last_applied=now - timedelta(hours=s["age"]),
                last_learned=None if s["learned"] is None else now - timedelta(hours=s["learned"]),
                severity=s["severity"],
                component=s["component"],
                rule=f"Avoid: {' '.join(s['words'])} failure number {s['i']}.",
                deliveries=s["deliveries"],
                recurrences=s["recurrences"],
            )
            for s in specs
        ]
        state.memory_changed = True
    before = prompt_rules(agent, budget, stage=stage, task=task, store=store)
    clock.advance(minutes=5)
    mark_delivered(agent, ids(before.rules), store=store)
    after = prompt_rules(agent, budget, stage=stage, task=task, store=store)
    assert [s.rule_id for s in after.selection] == [s.rule_id for s in before.selection]
    assert ids(after.rules) == ids(before.rules)
    assert after.text == before.text


def test_learning_again_moves_a_rule_delivering_does_not(root: Path, clock: Clock) -> None:
    made = seed(clock)
    rules = {r.rule_id: r for r in load_active_memory(AGENT).rules}
    assert rules[made["audio"]].last_learned is None  # learned once: its creation counts
    clock.advance(minutes=1)
    mark_delivered(AGENT, [made["price"]])
    assert ids(prompt_rules(AGENT).rules)[2:4] == [made["audio"], made["price"]]
    clock.advance(minutes=1)
    learn("WARN", "Price anomaly detected on listing B0ZZZ")  # the same pattern, again
    price = next(r for r in load_active_memory(AGENT).rules if r.rule_id == made["price"])
    assert price.last_learned == clock.now and price.to_dict()["last_learned"]
    assert ids(prompt_rules(AGENT).rules)[2:4] == [made["price"], made["audio"]]


# -- the loop ----------------------------------------------------------------------------------
FIX = "Use the original 3/4 reference angle"


def angle(failure: Failure) -> Diagnosis | None:
    return Diagnosis(root_cause="Reference photo switched to top-down", fix=FIX, source="runbook")


def test_run_stage_retry_delivers_the_failure_rule_first_under_a_tight_budget(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):  # BLOCKER rules that fill a small budget on their own
        clock.advance(minutes=1)
        learn("BLOCKER", f"Watermark number {i} visible on hero image {'x' * 60}")
    monkeypatch.setenv("RAYVAULT_LEARNING_RULES_RENDER_BUDGET", "300")
    seen: list[StageContext] = []

    def stage(ctx: StageContext) -> str:
        seen.append(ctx)
        if not ctx.has_rule("3/4 reference angle"):
            raise ValueError("Product shape wrong: reference angle top-down")
        return "ok"

    run = run_stage("v042", "assets", stage, diagnose=angle, task="Gadget price review")
    assert run.ok and run.attempts == 2
    first, retry = seen
    learned = run.rule_ids[0]
    assert learned not in ids(list(first.rules))
    assert retry.rules[0].rule_id == learned and len(retry.rendered_rules) <= 300
    execute = [s for s in run.steps if s.step == "execute"]
    assert "selection" not in execute[0].data or "failure_rule" not in execute[0].data["selection"]
    selection = execute[1].data["selection"]
    assert selection["failure_rule"] == learned
    assert set(selection["over_budget"]) | set(execute[1].data["rule_ids"]) >= {learned}
    assert "the failed attempt's rule first: " + learned in execute[1].detail
    # Small: ids grouped by reason, not one record per rule.
    assert len(json.dumps(selection)) < 400


def test_learning_stage_takes_the_task_or_a_function_of_the_video(root: Path, clock: Clock) -> None:
    made = seed(clock)
    titles = {"v7": "Price anomaly on a gadget listing"}
    seen: list[StageContext] = []

    @learning_stage("assets", retries=0, task=titles.get)
    def assets(ctx: StageContext) -> str:
        seen.append(ctx)
        return "ok"

    run = assets.run("v7")
    assert seen[0].rules[0].rule_id == made["price"]
    [execute] = [s for s in run.steps if s.step == "execute"]
    assert execute.data["selection"]["relevance"] == {made["price"]: pytest.approx(0.5, abs=0.5)}
    assets("v8")  # no title: ranked without a task
    assert seen[1].rules[0].rule_id == made["blocker"]
    fixed = learning_stage("assets", retries=0, task="audio clipping")(lambda ctx: ctx.rules)
    assert fixed("v9")[0].rule_id == made["audio"]


# -- CLI and bad input -------------------------------------------------------------------------
def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_render_options(root: Path, clock: Clock, capsys: pytest.CaptureFixture[str]) -> None:
    made = seed(clock)
    code, out, err = cli(
        capsys, "memory", "render", AGENT, "--stage", "assets", "--task", "price anomaly",
        "--failure", "Timeout after 99s on B0XYZ", "--explain", "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["text"].startswith(HEADER)
    selection = data["selection"]
    assert [s["rule_id"] for s in selection[:2]] == [made["timeout"], made["price"]]
    assert selection[0]["why"] == "failure's own rule"
    assert selection[1]["why"].startswith("stage rule (assets); relevance ")
    assert all(s["delivered"] for s in selection)

    code, out, err = cli(capsys, "memory", "render", AGENT, "--budget", "200", "--explain")
    assert code == 0, err
    assert "Why each of dzine_producer's 5 active rules is in or out" in out
    assert "over budget" in out

    code, out, _ = cli(capsys, "memory", "render", AGENT, "--json")
    assert code == 0 and "selection" not in json.loads(out)


def test_bad_input_is_refused_clearly(
    root: Path, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(clock)
    with pytest.raises(InvalidInputError, match="unknown agent 'nobody'"):
        render_rules("nobody")
    with pytest.raises(InvalidInputError, match="failure"):
        render_rules(AGENT, failure=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="failure must not be empty"):
        render_rules(AGENT, failure="   ")
    with pytest.raises(InvalidInputError, match="stage"):
        render_rules(AGENT, stage="no-such-stage")
    with pytest.raises(InvalidInputError, match="budget"):
        render_rules(AGENT, 0)
    assert render_rules("researcher") == ""  # a configured agent without rules: no error
    code, _, err = cli(capsys, "memory", "render", "nobody")
    assert code != 0 and "unknown agent 'nobody'" in err
    code, _, err = cli(capsys, "memory", "render", AGENT, "--stage", "no-such-stage")
    assert code != 0 and "no-such-stage" in err
    assert get_store().load_memory("nobody").rules == []  # nothing written
