"""Fingerprints: the same failure under different numbers and ids is one pattern; different
failures are not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayvault.learning.patterns import fingerprint, mask

SAME = [
    (
        "research",
        "Timeout after 30.2s on B0ABC",
        "Timeout after 31.7s on B0XYZ",
    ),
    (
        "research",
        "Timed out after 30 seconds fetching https://www.amazon.com/dp/B0F8HM4PYL?th=1",
        "Timed out after 45 seconds fetching https://amazon.com/gp/product/B0CX23V2ZK",
    ),
    (
        "assets",
        'Traceback (most recent call last):\n  File "/app/tools/dzine.py", line 88, in run\n'
        "    x = cfg['price']\nKeyError: 'price'",
        'Traceback (most recent call last):\n  File "/srv/pipeline/lib/images.py", line 12, in go\n'
        "    y = data['price']\nKeyError: 'price'",
    ),
    (
        "assets",
        "Product Background generation timed out at 43% progress",
        "Product Background generation timed out at 87% progress",
    ),
    (
        "script",
        "Could not read /Users/ray/content/v038/script.json: Expecting value",
        "Could not read /tmp/run-7/v041/script.json: Expecting value",
    ),
    (
        "tts",
        "Event le-20260219T120000Z-3f9a1c2b7d4e failed at 2026-02-19T12:00:00Z",
        "Event le-20260301T080910Z-000000aaaaaa failed at 2026-03-01 08:09:10+00:00",
    ),
    (
        "render",
        "job 123e4567-e89b-12d3-a456-426614174000 exited with code 137 after 12m",
        "job 00000000-1111-2222-3333-444444444444 exited with code 139 after 3m",
    ),
    (
        "research",
        'Product "Roborock Q7" price $26.59 below median',
        'Product "Narwal Freo Pro" price $18.00 below median',
    ),
]

DIFFERENT = [
    ("research", "Timeout after 30s on B0ABC", "research", "Price anomaly on B0ABC"),
    ("research", "Timeout after 30s", "assets", "Timeout after 30s"),
    ("assets", "KeyError: 'price'", "assets", "ValueError: 'price'"),
    ("assets", "Image hallucination", "assets", "Image clipped at the right edge"),
    ("tts", "Audio clipping at -1dB", "tts", "Audio silence at start"),
]


@pytest.mark.parametrize(("stage", "a", "b"), SAME)
def test_variants_group_together(stage: str, a: str, b: str) -> None:
    fa, fb = fingerprint(stage, a), fingerprint(stage, b)
    assert fa.key == fb.key, (fa.template, fb.template)
    assert fa.template == fb.template


@pytest.mark.parametrize(("s1", "a", "s2", "b"), DIFFERENT)
def test_different_failures_stay_apart(s1: str, a: str, s2: str, b: str) -> None:
    assert fingerprint(s1, a).key != fingerprint(s2, b).key


def test_templates_are_readable() -> None:
    assert mask("Timeout after 30.2s on B0ABC") == "Timeout after <dur> on <id>"
    assert mask("ASIN B0F8HM4PYL at $26.59") == "ASIN <asin> at $<n>"
    assert mask("Changed reference angle from 3/4 to top-down") == (
        "Changed reference angle from <n>/<n> to top-down"
    )
    assert mask("see 'config.yaml' and \"x\"") == "see <str> and <str>"
    key = fingerprint("assets", "Image hallucination").key
    assert key.startswith("assets:") and len(key) == len("assets:") + 16


@given(
    seconds=st.floats(min_value=0, max_value=10_000, allow_nan=False),
    asin=st.from_regex(r"B0[A-Z0-9]{8}", fullmatch=True),
    code=st.integers(min_value=0, max_value=255),
)
def test_numbers_and_ids_never_change_the_key(seconds: float, asin: str, code: int) -> None:
    """Property: any durations, ASINs and exit codes give the reference fingerprint."""
    text = f"Fetch of {asin} timed out after {seconds:.1f}s (exit {code})"
    assert (
        fingerprint("research", text).key
        == fingerprint("research", "Fetch of B0AAAAAAAA timed out after 1.0s (exit 1)").key
    )


@given(st.text(max_size=300))
def test_fingerprint_is_total_and_stable(text: str) -> None:
    """Any text fingerprints without error, and the same text always gives the same key."""
    assert fingerprint("assets", text) == fingerprint("assets", text)


@pytest.mark.parametrize(
    ("a", "b"),
    [("E404", "ERR_429"), ("429", "500"), ("s2", "s3"), ("E404", "E405"), ("B0ABC", "B0XYZ")],
)
def test_single_token_symptoms_keep_their_identity(a: str, b: str) -> None:
    """A symptom masking would turn wholly into placeholders keeps its literal token: two such
    symptoms are two failures, and the template shows the token, not ``<id>``."""
    fa, fb = fingerprint("assets", a), fingerprint("assets", b)
    assert fa.key != fb.key
    assert (fa.template, fb.template) == (a, b)


def test_single_token_of_a_traceback_keeps_its_identity() -> None:
    """The failure line of a traceback is what counts, also when it is a lone token."""
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\n    g()\nE404'
    assert fingerprint("assets", tb).key == fingerprint("assets", "E404").key
    assert fingerprint("assets", tb).key != fingerprint("assets", "E405").key


_TOKEN = st.from_regex(r"[A-Za-z]{0,4}_?[0-9]{1,5}|[0-9]{1,6}|s[0-9]{1,3}", fullmatch=True)
#: Error codes such as E404 or ERR_429 (no hex letters: those mask as <hex>).
_CODE = st.from_regex(r"[G-Zg-z]{1,4}_?[0-9]{1,5}", fullmatch=True)


@given(a=_TOKEN, b=_TOKEN, pad=st.sampled_from(["", " ", "  ", "\n", "\t"]))
def test_lone_tokens_differ_exactly_when_their_text_does(a: str, b: str, pad: str) -> None:
    """Property: lone tokens get the same key iff they are the same token (case-folded), and
    surrounding whitespace never changes a key."""
    fa = fingerprint("tts", f"{pad}{a}{pad}")
    assert fa == fingerprint("tts", a)
    assert (fa.key == fingerprint("tts", b).key) == (a.lower() == b.lower())


@given(
    token=_CODE,
    other=_CODE,
    words=st.sampled_from(["Upload failed with", "Timeout on", "Voice rejected:"]),
)
def test_a_token_inside_words_is_still_masked(token: str, other: str, words: str) -> None:
    """Property: the literal is kept only when nothing else is left: next to constant words a
    token is a variable part, as before."""
    assert fingerprint("tts", f"{words} {token}").key == fingerprint("tts", f"{words} {other}").key


@given(st.text(max_size=60))
def test_keys_have_one_shape(text: str) -> None:
    """Property: every key is the stage, a colon and 16 hex digits; every template is short."""
    fp = fingerprint("research", text)
    stage, digest = fp.key.split(":")
    assert stage == "research" and len(digest) == 16 and int(digest, 16) >= 0
    assert len(fp.template) <= 240
