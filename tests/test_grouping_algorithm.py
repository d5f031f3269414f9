"""Grouping version 2 (``rayvault.learning._grouping``): masks, the failure's text, clusters."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayvault.learning import _grouping as g
from rayvault.learning._grouping import (
    VARIABLE,
    MemoryBook,
    assign,
    failure_text,
    group_failures,
    mask,
)
from rayvault.learning.exceptions import InvalidInputError


def same(*texts: str) -> bool:
    return len(set(group_failures(list(texts), stage="s"))) == 1


def apart(*texts: str) -> bool:
    return len(set(group_failures(list(texts), stage="s"))) == len(texts)


# --- the failure's text ----------------------------------------------------------------------------

TRACEBACK = """Traceback (most recent call last):
  File "/app/pipeline/{name}.py", line {line}, in run
    response.raise_for_status()
    ~~~~~~~~~~~~~~~~~~~~~~~~~^^
httpx.HTTPStatusError: Client error '429 Too Many Requests' for url 'https://api.x.com/v1/{line}'
For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/429
"""


def test_a_traceback_keeps_the_last_exceptions_whole_message() -> None:
    text = failure_text(TRACEBACK.format(name="assets", line=12))
    assert text.startswith("httpx.HTTPStatusError: Client error '429 Too Many Requests'")
    assert text.endswith("Status/429")
    assert "File " not in text and "raise_for_status" not in text


def test_of_chained_exceptions_only_the_last_counts() -> None:
    chained = (
        TRACEBACK.format(name="a", line=1)
        + "\nThe above exception was the direct cause of the following exception:\n\n"
        + 'Traceback (most recent call last):\n  File "/app/x.py", line 9, in f\n    g()\n'
        + "RuntimeError: asset stage gave up after 3 attempts\n"
    )
    assert failure_text(chained) == "RuntimeError: asset stage gave up after 3 attempts"


def test_a_failure_with_or_without_its_traceback_is_one_failure() -> None:
    bare = failure_text(TRACEBACK.format(name="x", line=1))
    assert same(
        TRACEBACK.format(name="assets", line=12),
        TRACEBACK.format(name="render", line=977),
        bare.replace("/1", "/55"),
    )


def test_text_without_a_traceback_is_kept_whole() -> None:
    assert failure_text("line one\nline two") == "line one\nline two"


# --- masks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Timeout after 12s", "Timeout after <dur>"),
        ("Timeout after 1.83s", "Timeout after <dur>"),
        ("Timeout after 7m42.2s", "Timeout after <dur>"),
        ("Timeout after 250ms", "Timeout after <dur>"),
        ("retry after 30 seconds.", "retry after <dur>."),
        ("block blk_-1608999687919862906 lost", "block <id> lost"),
        ("wrote 5.2 KB and 300 B", "wrote <size> and <size>"),
        ("GET https://api.x.com/v1/a?b=1 failed", "GET <url> failed"),
        ("open /var/data/v12/scene.png", "open <path>"),
        ("open assets/v12/scene.png", "open <path>"),
        (r"open C:\data\scene.png", "open <path>"),
        ("from 10.1.2.3:5070 as joe@example.org", "from <ip> as <email>"),
        ("host proxy.cse.cuhk.edu.hk:5070 down", "host <host> down"),
        ("rhost=csnsu.nsuok.edu user=root", "rhost=<host> user=root"),
        ("at Sun Jul 10 03:55:21 2005", "at <date> <date> <n> <time> <n>"),
        ("id 123e4567-e89b-12d3-a456-426614174000", "id <uuid>"),
        ("mask=ffffffff flags=0x1f", "mask=<hex> flags=<hex>"),
        ("ready=true,policy=3,mode=false", "ready=true,policy=<n>,mode=false"),
        ("KeyError: 'choices'", "KeyError: 'choices'"),
        ("missing '/tmp/x1.json'", "missing '<path>'"),
        ("wrote 2,431 words", "wrote <n> words"),
    ],
)
def test_masks(text: str, expected: str) -> None:
    assert mask(text) == expected


def test_quoted_values_are_masked_inside_not_whole() -> None:
    assert apart("KeyError: 'choices'", "KeyError: 'price'")
    assert apart(
        "Error code: 429 - {'error': {'message': 'Rate limit reached', 'type': 'tokens'}}",
        "Error code: 429 - {'error': {'message': 'You exceeded your quota', 'type': "
        "'insufficient_quota'}}",
    )
    assert same('"GET /v2/a/servers HTTP/1.1" 200', '"GET /v2/b/servers HTTP/1.1" 404')
    assert apart('"GET /v2/a/servers HTTP/1.1" 200', '"POST /v2/a/servers HTTP/1.1" 200')


def test_a_text_of_placeholders_only_keeps_its_literal_text() -> None:
    assert apart("E404", "ERR_429", "429")


def test_durations_and_ids_get_one_placeholder_whatever_their_format() -> None:
    assert same("Timeout after 1.83s", "Timeout after 7m42.2s", "Timeout after 12s")
    assert same("blk_-123 served", "blk_456 served")


def test_long_and_pathological_texts_are_masked_without_error() -> None:
    for text in ("a=" * 10_000, "a." * 10_000, "1," * 10_000, "/a" * 10_000, "'" * 20_000):
        assert isinstance(mask(text), str)
    words = " ".join(f"w{i}" for i in range(5_000))
    assert len(mask(words).split()) == g.MAX_TOKENS


# --- clusters --------------------------------------------------------------------------------------


def test_a_word_that_takes_many_values_becomes_a_variable() -> None:
    users = ["webmaster", "admin", "oracle", "test", "guest", "postgres"]
    texts = [f"Invalid user {u} from 10.0.0.{i}" for i, u in enumerate(users)]
    keys = group_failures(texts, stage="ssh")
    assert len(set(keys)) == 1
    assert keys[0] == g.pattern_key("ssh", g.signature("ssh", mask(texts[0])))


def test_a_word_with_few_values_stays_part_of_the_failure() -> None:
    texts = ["Connection closed by 10.0.0.1", "Connection reset by 10.0.0.2"] * 5
    assert len(set(group_failures(texts, stage="s"))) == 2


def test_constant_case_words_and_quoted_values_never_vary() -> None:
    states = ["NEW", "UNASSIGNED", "ASSIGNED", "RUNNING", "SUCCEEDED"]
    texts = [
        f"attempt_{i} Transitioned from {a} to {b}"
        for i, (a, b) in enumerate(itertools.pairwise(states))
    ]
    assert apart(*texts)
    keys = [f"KeyError: '{k}' in response" for k in ("choices", "price", "title", "id", "url")]
    assert apart(*keys)


def test_a_first_word_varies_only_when_enough_of_the_rest_agrees() -> None:
    daemons = ["cupsd", "syslogd", "klogd", "irqbalance", "sshd"]
    assert apart(*(f"{d} startup succeeded" for d in daemons))
    jobs = ["com.apple.a", "com.apple.b", "com.apple.c", "com.apple.d"]
    assert same(*(f"{j}: scheduler told me to run this job; however the start time" for j in jobs))


def test_merges_are_recorded_and_earlier_keys_follow_them() -> None:
    book = MemoryBook()
    users = ["alice", "bob", "carol", "dave"]
    first = [assign(book, "s", f"login failed for user {u} on node") for u in users[:3]]
    assert len({r.key for r in first}) == 3 and {r.decision for r in first} == {"new"}
    last = assign(book, "s", "login failed for user dave on node")
    assert last.decision == "merged"
    assert last.key == first[0].key
    assert set(last.merged) == {first[1].key, first[2].key}
    assert book.merges() == {first[1].key: first[0].key, first[2].key: first[0].key}
    assert all(book.resolve(r.key) == first[0].key for r in first)
    template = book.find("s", first[1].sig)
    assert template is not None and template.tokens[4] == VARIABLE
    # Later variants join the merged cluster directly.
    assert assign(book, "s", "login failed for user erin on node").decision == "joined"


def test_group_failures_keeps_arrival_order_and_checks_its_input() -> None:
    keys = group_failures(["a failed", "b failed", "a failed"], stage="s")
    assert keys[0] == keys[2] != keys[1]
    with pytest.raises(InvalidInputError):
        group_failures(["x", 3], stage="s")  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        group_failures(["x"], stage=" ")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=20))
def test_grouping_is_total_and_deterministic(texts: list[str]) -> None:
    keys = group_failures(texts, stage="s")
    assert len(keys) == len(texts)
    assert keys == group_failures(texts, stage="s")
    for text, key in zip(texts, keys, strict=True):
        assert key.startswith("s:")
        assert keys[texts.index(text)] == key  # identical texts, one key


def test_a_shuffled_arrival_order_gives_the_same_partition_for_clear_cases() -> None:
    texts = [f"Invalid user u{c}x{c} from 10.0.0.{i}" for i, c in enumerate("abcdefgh")] + [
        f"Timeout after {i}.5s waiting for render job {i:08x}" for i in range(8)
    ]
    shuffled = texts[:]
    random.Random(3).shuffle(shuffled)
    assert len(set(group_failures(texts, stage="s"))) == 2
    assert len(set(group_failures(shuffled, stage="s"))) == 2


def test_a_log_lines_timestamp_and_level_are_not_the_failure() -> None:
    assert same(
        "FileNotFoundError: [Errno 2] No such file or directory: '/a/b.png'",
        "2026-11-03 14:02:11,532 ERROR FileNotFoundError: [Errno 2] No such file or directory: "
        "'/c/d.png'",
        "[2026-11-03T14:02:11Z] ERROR FileNotFoundError: [Errno 2] No such file or directory: "
        "'/e.png'",
    )


def test_what_was_written_before_an_exception_is_where_it_was_caught() -> None:
    assert same(
        "KeyError: 'price'",
        "giving up: KeyError: 'price'",
        "attempt 2/5: KeyError: 'price'",
    )
    assert apart("giving up: KeyError: 'price'", "giving up: KeyError: 'title'")


def test_an_exception_is_named_by_its_class_with_or_without_its_module() -> None:
    assert same(
        "openai.RateLimitError: Error code: 429 - {'error': {'type': 'tokens'}}",
        "RateLimitError: Error code: 429 - {'error': {'type': 'tokens'}}",
    )
    assert mask("httpx.HTTPStatusError: boom") == "HTTPStatusError: boom"


def test_ratios_and_fractions_are_numbers_not_hosts_or_paths() -> None:
    assert mask("contrast ratio 2.1:1") == "contrast ratio <n>:<n>"
    assert mask("attempt 2/5 failed") == "attempt <n>/<n> failed"


def test_status_and_exit_codes_name_the_failure() -> None:
    assert apart("upload failed: HTTP 500", "upload failed: HTTP 503")
    assert apart(
        "Command '['ffmpeg', '-i', 'a.mp4']' returned non-zero exit status 1.",
        "Command '['ffmpeg', '-i', 'a.mp4']' returned non-zero exit status 137.",
    )
    assert same(
        "Command '['ffmpeg', '-i', 'a.mp4']' returned non-zero exit status 137.",
        "Command '['ffmpeg', '-i', 'b.mp4']' returned non-zero exit status 137.",
    )
    assert apart("[Errno 2] No such file or directory", "[Errno 13] No such file or directory")
    # A number after "status:" alone is a value (a request log's status column).
    assert (
        mask('"GET /a HTTP/1.1" status: 200 len: 12') == '"GET <path> <path>" status: <n> len: <n>'
    )


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False))
def test_variants_end_in_one_pattern_in_any_arrival_order(rnd: random.Random) -> None:
    """A cluster made before the evidence came (the same user on another host) is absorbed
    when the family merges, whatever the order."""
    names = ["alice", "bob", "carol", "dan", "erin", "frank"]
    hosts = ["alpha", "beta", "gamma", "delta"]
    texts = [f"user {n} not found on host {h}" for n in names for h in hosts]
    rnd.shuffle(texts)
    assert len(set(group_failures(texts, stage="s"))) == 1
