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
