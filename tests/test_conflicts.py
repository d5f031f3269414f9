"""Conflict heuristics: incompatible actions are found, with their kind; agreeing, unrelated or
merely differently-severe rules are not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayvault.learning._conflicts import action_text, analyse, rules_conflict, stem

CONFLICTS = [
    (
        "Avoid: Image hallucination. Cause: x. Do: Changed reference angle from 3/4 to top-down.",
        "Avoid: Image hallucination. Do: Reverted to original 3/4 angle.",
        "revert",
    ),
    ("Do: Increase timeout to 60s.", "Do: Revert the timeout increase.", "revert"),
    ("Do: Crop the phone image to 16:9.", "Do: Undo the phone image crop.", "revert"),
    (
        "Do: Use the SiteStripe Get link button.",
        "Do: Never use the SiteStripe Get link button.",
        "negation",
    ),
    ("Do: Crop the phone image.", "Do: Do not crop the phone image.", "negation"),
    ("Do: Use flux, not sdxl.", "Do: Use sdxl for product shots.", "negation"),
    ("Do: Increase the timeout to 60s.", "Do: Decrease the timeout.", "direction"),
    ("Do: Raise the render bitrate.", "Do: Lower the render bitrate.", "direction"),
    ("Do: Enable the upscaler.", "Do: Disable the upscaler.", "direction"),
    ("Do: Add a price anomaly check.", "Do: Remove the price anomaly check.", "direction"),
    ("Do: Never increase the timeout.", "Do: Increase the timeout to 90s.", "direction"),
    ("Do: Set timeout to 30s.", "Do: Set timeout to 90s.", "value"),
    ("Do: retries=3", "Do: retries=5", "value"),
    ("Do: Set angle to 3/4.", "Do: Changed the angle from 3/4 to top-down.", "value"),
    ("Do: Use flux instead of sdxl.", "Do: Use sdxl for backgrounds.", "instead_of"),
    ("Do: Use flux instead of sdxl.", "Do: Use sdxl instead of flux.", "instead_of"),
    ("Do: Prefer the API over the browser.", "Do: Use the browser.", "instead_of"),
    ("Crop the phone image", "Never crop the phone image", "negation"),  # rules of old systems
]

AGREE_OR_UNRELATED = [
    ("Do: Reverted to original 3/4 angle.", "Do: Keep the 3/4 angle for product shots."),
    ("Do: Reverted to original 3/4 angle.", "Do: Reverted to original 3/4 angle."),
    ("Do: Use the SiteStripe button.", "Do: Never close the browser tab early."),
    ("Do: Do not retry more than 3 times.", "Do: Retry the upload with backoff."),
    ("Do: Increase image resolution.", "Do: Decrease audio volume."),
    ("Do: Increase the timeout.", "Do: Raise the timeout to 60s."),
    ("Do: Use flux instead of sdxl.", "Do: Use flux for backgrounds."),
    ("Avoid: Timeout.", "Avoid: Timeout. Cause: slow."),
    ("Do: Never use Relay.", "Do: Never use Relay, use the OpenClaw session."),
    ("Do: Set angle to 3/4.", "Do: Set the voice speed to 1.1."),
    ("Do: Set timeout to 60s.", "Do: Set timeout to 60s."),
    ("Do: Validate prices against the median.", "Do: Retry the Amazon page on captcha."),
]


@pytest.mark.parametrize(("a", "b", "kind"), CONFLICTS)
def test_incompatible_actions_conflict_both_ways(a: str, b: str, kind: str) -> None:
    found = rules_conflict(analyse(a), analyse(b))
    assert found is not None, (a, b)
    assert found[0] == kind
    back = rules_conflict(analyse(b), analyse(a))
    assert back is not None and back[0] == kind


@pytest.mark.parametrize(("a", "b"), AGREE_OR_UNRELATED)
def test_agreeing_or_unrelated_actions_do_not_conflict(a: str, b: str) -> None:
    assert rules_conflict(analyse(a), analyse(b)) is None, (a, b)
    assert rules_conflict(analyse(b), analyse(a)) is None


def test_the_reason_quotes_both_clauses() -> None:
    found = rules_conflict(analyse("Do: Set timeout to 30s."), analyse("Do: Set timeout to 90s."))
    assert found == (
        "value",
        '"Set timeout to 30s" and "Set timeout to 90s" set the same thing to different values',
    )


def test_action_text() -> None:
    assert action_text("Avoid: x. Cause: y. Do: Use z.") == "Use z."
    assert action_text("Avoid: x. Cause: y.") == ""  # nothing prescribed
    assert action_text("Crop the phone") == "Crop the phone"


def test_stem() -> None:
    assert {stem(w) for w in ("crop", "cropped", "cropping", "crops")} == {"crop"}
    assert {stem(w) for w in ("image", "images")} == {"imag"}
    assert {stem(w) for w in ("retry", "retries", "retried")} == {"retry"}
    assert stem("3/4") == "3/4" and stem("60s") == "60s"


_VERBS = ["use", "crop", "enable", "increase", "set", "add", "keep", "validate", "retry"]
_OBJECTS = ["the timeout", "flux", "the phone image", "price check", "the upscaler", "bitrate"]


@given(
    verb=st.sampled_from(_VERBS),
    obj=st.sampled_from(_OBJECTS),
    negative=st.booleans(),
)
def test_a_rule_never_conflicts_with_its_own_action(verb: str, obj: str, negative: bool) -> None:
    """Two rules prescribing the same single action agree, whatever else differs (severity plays
    no part in the analysis at all)."""
    text = f"Do: {'Never ' if negative else ''}{verb} {obj}."
    assert rules_conflict(analyse(text), analyse(text)) is None
