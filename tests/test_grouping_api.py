"""The public grouping API: ``group_failures`` keys real variants of a failure alike and near
misses apart; ``explain_grouping`` says why, and never writes to the book it is given."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rayvault.learning as api
from rayvault.learning._grouping import MERGE_EVIDENCE, MemoryBook, assign
from rayvault.learning.exceptions import InvalidInputError
from rayvault.learning.grouping import (
    GROUPING_VERSION,
    BookWrite,
    MaskMatch,
    explain_grouping,
    failure_template,
    group_failures,
)

KEY_ERROR_TRACEBACK = """Traceback (most recent call last):
  File "/srv/pipeline/stages/script.py", line 88, in parse
    text = response["choices"][0]["message"]["content"]
           ~~~~~~~~^^^^^^^^^^^
KeyError: 'choices'
"""

CHAINED = """Traceback (most recent call last):
  File "/srv/pipeline/llm.py", line 41, in complete
    return body["choices"][0]
KeyError: 'choices'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/srv/pipeline/stages/script.py", line 12, in run
    text = complete(prompt)
  File "/srv/pipeline/llm.py", line 43, in complete
    raise RuntimeError("no completion in the response") from None
RuntimeError: no completion in the response
"""


def rate_limit(org: str, used: int, requested: int, wait: str) -> str:
    return (
        "Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-4o in organization "
        f"{org} on tokens per min (TPM): Limit 30000, Used {used}, Requested {requested}. "
        f"Please try again in {wait}.', 'type': 'tokens', 'param': None, "
        "'code': 'rate_limit_exceeded'}}"
    )


QUOTA = (
    "Error code: 429 - {'error': {'message': 'You exceeded your current quota, please check your "
    "plan and billing details.', 'type': 'insufficient_quota', 'param': None, "
    "'code': 'insufficient_quota'}}"
)


def one_key(*texts: str, stage: str = "x") -> bool:
    return len(set(group_failures(list(texts), stage=stage))) == 1


def test_keys_are_in_arrival_order_and_one_per_text() -> None:
    texts = ["Timeout after 12s on B0ABC12345", "Disk full", "Timeout after 30s on B0XYZ99999"]
    keys = group_failures(texts, stage="render")
    assert len(keys) == 3
    assert keys[0] == keys[2] != keys[1]
    assert all(k.startswith("render:") for k in keys)
    assert group_failures([], stage="render") == []
    # An iterator is read once, like a list.
    assert group_failures(iter(texts), stage="render") == keys


def test_exported_from_the_package() -> None:
    assert api.group_failures is group_failures
    assert api.explain_grouping is explain_grouping
    assert GROUPING_VERSION == 2


@pytest.mark.parametrize(
    "variants",
    [
        pytest.param(
            [
                rate_limit("org-4fG8kQ2xYz", 29000, 1500, "1.83s"),
                rate_limit("org-9pL1mN3bVc", 29500, 900, "7m42.2s"),
            ],
            id="rate-limit-429",
        ),
        pytest.param([KEY_ERROR_TRACEBACK, "KeyError: 'choices'"], id="with-and-without-traceback"),
        pytest.param(
            [CHAINED, "RuntimeError: no completion in the response"], id="chained-takes-the-last"
        ),
        pytest.param(
            [
                "Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106",
                "Receiving block blk_7503483334202473044 src: /10.250.10.6:40524",
            ],
            id="negative-block-id",
        ),
        pytest.param(
            [
                "Render timed out after 1.83s",
                "Render timed out after 7m42.2s",
                "Render timed out after 12s",
            ],
            id="durations-in-any-format",
        ),
        pytest.param(
            [
                f"Failed password for {user} from 10.0.0.{i} port 22 ssh2"
                for i, user in enumerate(["alice", "bob", "carol", "dave", "erin", "frank"])
            ],
            id="user-names-cluster",
        ),
    ],
)
def test_real_variants_get_one_key(variants: list[str]) -> None:
    assert one_key(*variants), variants


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("KeyError: 'choices'", "KeyError: 'price'", id="quoted-key"),
        pytest.param(rate_limit("org-4fG8kQ2xYz", 29000, 1500, "12s"), QUOTA, id="tokens-vs-quota"),
        pytest.param(CHAINED, "KeyError: 'choices'", id="chained-is-not-its-cause"),
        pytest.param("Render timed out after 12s", "Render failed after 12s", id="different-verb"),
        pytest.param("E404", "ERR_429", id="nothing-constant-left"),
    ],
)
def test_near_misses_get_different_keys(a: str, b: str) -> None:
    assert not one_key(a, b)


def test_stage_is_part_of_the_key() -> None:
    text = "Timeout after 12s"
    assert group_failures([text], stage="render") != group_failures([text], stage="tts")


def test_group_failures_checks_its_arguments() -> None:
    with pytest.raises(InvalidInputError):
        group_failures("one text, not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        group_failures(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        group_failures(["a\x00b"])  # the stores cannot hold NUL: refused, like everywhere
    with pytest.raises(InvalidInputError):
        group_failures(["x"], stage=" ")


def test_failure_template_reads_as_the_pattern() -> None:
    assert failure_template("Timeout after 12s on B0XYZ12345") == "Timeout after <dur> on <id>"
    assert failure_template(KEY_ERROR_TRACEBACK) == "KeyError: 'choices'"


# --- explain_grouping --------------------------------------------------------------------------


def test_explain_a_new_text() -> None:
    e = explain_grouping("render", "Timeout after 12s on B0XYZ12345")
    assert e.stage == "render"
    assert e.version == GROUPING_VERSION
    assert e.text == "Timeout after 12s on B0XYZ12345"
    assert e.text_reason == "whole text"
    assert e.masks == (MaskMatch("<dur>", "12s"), MaskMatch("<id>", "B0XYZ12345"))
    assert e.masked == "Timeout after <dur> on <id>"
    assert e.tokens == ("Timeout", "after", "<dur>", "on", "<id>")
    assert not e.literal
    assert e.decision == "new"
    assert e.key == f"render:{e.signature}"
    assert e.key == group_failures(["Timeout after 12s on B0XYZ12345"], stage="render")[0]
    assert e.template == "Timeout after <dur> on <id>"
    assert e.differing == ()
    assert e.writes == (BookWrite("save", e.key, e.signature),)
    assert not e.against_book
    summary = e.summary()
    assert "<dur> <- '12s'" in summary
    assert "decision: new -> render:" in summary


def test_explain_a_traceback_names_the_last_exception() -> None:
    e = explain_grouping("script", KEY_ERROR_TRACEBACK)
    assert e.text == "KeyError: 'choices'"
    assert e.text_reason == "last exception of a traceback"
    assert e.key == explain_grouping("script", "KeyError: 'choices'").key
    chained = explain_grouping("script", CHAINED)
    assert chained.text == "RuntimeError: no completion in the response"
    assert "2 chained" in chained.text_reason


def test_explain_a_literal_text() -> None:
    e = explain_grouping("x", "E404")
    assert e.literal
    assert e.masked == "E404"
    assert e.masks == (MaskMatch("<id>", "E404"),)


USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]


def failed_password(user: str) -> str:
    return f"Failed password for {user} from 10.0.0.1 port 22"


def test_explain_against_a_book_decides_like_the_store_and_writes_nothing() -> None:
    """One user name short of the evidence a merge needs, then the explanation of the text that
    brings it: "merged", as the real assignment then decides, and the book is untouched."""
    book = MemoryBook()
    earlier = USERS[: MERGE_EVIDENCE - 1]
    keys = [assign(book, "ssh", failed_password(u)).key for u in earlier]
    assert len(set(keys)) == len(earlier)  # not enough evidence yet: one cluster each
    snapshot = [(c.key, c.tokens) for c in book.clusters("ssh", 7)]

    known = explain_grouping("ssh", "Failed password for alice from 10.0.0.9 port 2222", book=book)
    assert known.decision == "known"
    assert known.key == keys[0]
    assert known.against_book
    assert known.writes == ()

    text = failed_password(USERS[MERGE_EVIDENCE - 1])
    e = explain_grouping("ssh", text, book=book)
    assert e.decision == "merged"
    assert e.key == keys[0]
    assert e.merged == tuple(keys[1:])
    assert e.template == "Failed password for <*> from <ip> port <n>"
    assert e.differing == (3,)
    assert e.writes[0] == BookWrite("save", keys[0], e.signature)
    assert e.writes[1:] == tuple(BookWrite("merge", k, keys[0]) for k in keys[1:])

    # Nothing was applied: the clusters, their templates and the merges are as they were.
    assert [(c.key, c.tokens) for c in book.clusters("ssh", 7)] == snapshot
    assert book.merges() == {}
    # And grouping the text for real decides what the explanation said.
    real = assign(book, "ssh", text)
    assert (real.decision, real.key, real.merged) == ("merged", keys[0], tuple(keys[1:]))


def test_explain_joined_shows_the_differing_positions() -> None:
    book = MemoryBook()
    for user in USERS[:MERGE_EVIDENCE]:
        assign(book, "ssh", failed_password(user))
    e = explain_grouping("ssh", failed_password("zoe"), book=book)
    assert e.decision == "joined"
    assert e.differing == (3,)
    assert e.cluster_tokens[3] == "<*>"
    assert e.writes == (BookWrite("save", e.key, e.signature),)


def test_explain_checks_its_arguments() -> None:
    with pytest.raises(InvalidInputError):
        explain_grouping("", "text")
    with pytest.raises(InvalidInputError):
        explain_grouping("x", 3)  # type: ignore[arg-type]


# --- properties ----------------------------------------------------------------------------------

#: Any text the stores accept: every Unicode character except NUL and lone surrogates.
TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=300
)
STRUCTURED = st.builds(
    "{} after {}{} on {} at /srv/{}/x.py".format,
    st.sampled_from(["Timeout", "Render failed", "KeyError: 'choices'", "Ошибка", "タイムアウト"]),
    st.integers(-(10**6), 10**6),
    st.sampled_from(["s", "ms", "m42.2s", "", " seconds"]),
    st.from_regex(r"[A-Z0-9]{10}", fullmatch=True),
    st.text(alphabet="abcxyz-_", min_size=1, max_size=8),
)
TEXTS = st.lists(st.one_of(TEXT, STRUCTURED), max_size=25)


@settings(max_examples=150, deadline=None)
@given(TEXTS)
def test_group_failures_is_total_and_deterministic(texts: list[str]) -> None:
    keys = group_failures(texts, stage="render")
    assert len(keys) == len(texts)
    assert all(isinstance(k, str) and k.startswith("render:") for k in keys)
    assert group_failures(texts, stage="render") == keys
    # Identical texts always share a key, wherever they arrive.
    first: dict[str, str] = {}
    for text, key in zip(texts, keys, strict=True):
        assert first.setdefault(text, key) == key


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(TEXT, STRUCTURED), min_size=1, max_size=6), st.randoms())
def test_identical_texts_group_together_in_any_order(distinct: list[str], rnd: object) -> None:
    """Each text repeated, in a shuffled order: the partition into groups of identical texts is
    kept (equal texts one key), whatever the order of arrival."""
    texts = distinct * 3
    rnd.shuffle(texts)  # type: ignore[attr-defined]
    keys = group_failures(texts, stage="x")
    by_text: dict[str, set[str]] = {}
    for text, key in zip(texts, keys, strict=True):
        by_text.setdefault(text, set()).add(key)
    assert all(len(k) == 1 for k in by_text.values())


@settings(max_examples=100, deadline=None)
@given(TEXT)
def test_explain_agrees_with_group_failures(text: str) -> None:
    e = explain_grouping("x", text)
    assert e.key == group_failures([text], stage="x")[0]
    assert e.decision == "new"
    assert e.masked == failure_template(text)


def test_explain_refuses_what_is_not_a_book() -> None:
    with pytest.raises(InvalidInputError, match="pattern book"):
        explain_grouping("x", "text", book=True)  # type: ignore[arg-type]
