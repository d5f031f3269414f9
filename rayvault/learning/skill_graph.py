"""The skill graph's learning notes: one markdown node per learning event, and the ``_index.md``
map of content that lists them newest first.

A node has YAML front matter (``description, tags, created, severity, video_id, affected_tools,
fix`` plus ``event_id`` and ``fingerprint``), a ``# [SEVERITY] component: symptom`` title and
``## Symptom``, ``## Root Cause``, ``## Fix Applied`` sections: the shape the pipeline's existing
notes have, so people and the migration read both alike.
"""

from __future__ import annotations

import json
import re

from rayvault.learning._validate import TEXT_FIELDS, cap_fields, checked
from rayvault.learning.models import LearningEvent
from rayvault.learning.store import Store, get_store

RECENT_HEADING = "## Recent Learnings (newest first)"
#: What a node's sections say when the event has no root cause or fix yet (the migration reads
#: them back as empty).
NO_ROOT_CAUSE = "(not yet diagnosed)"
NO_FIX = "(none yet)"
_SLUG = re.compile(r"[^a-z0-9]+")
_INDEX_TEMPLATE = """---
description: Auto-recorded lessons from pipeline runs. Newest first. Check this BEFORE every \
pipeline run to avoid repeating mistakes.
tags: [moc, learnings, auto-improvement, memory]
created: {date}
updated: {date}
---

# Learnings (Auto-Improvement Log)

Every learning event recorded by rayvault-learning gets a node here. Before starting a run, scan
this index for failures relevant to it.

{heading}

"""


def slugify(text: str, limit: int = 60) -> str:
    """``"Image hallucination in Product BG"`` → ``"image-hallucination-in-product-bg"``."""
    slug = _SLUG.sub("-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "event"


def _yaml_str(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: safe for any text.
    return json.dumps(value, ensure_ascii=False)


def note_stem(event: LearningEvent) -> str:
    """``2026-02-19-fail-assets-image-hallucination``: the pipeline's naming convention."""
    return "-".join(
        (
            event.timestamp.strftime("%Y-%m-%d"),
            event.severity.lower(),
            slugify(event.component, 30),
            slugify(event.symptom),
        )
    )


def summary(event: LearningEvent) -> str:
    """``root cause → fix``, the one-line description the index and front matter carry."""
    if event.root_cause or event.fix_applied:
        return f"{event.root_cause} → {event.fix_applied}".strip()
    return event.symptom


def render_note(event: LearningEvent) -> str:
    """The markdown text of the node for ``event``."""
    tags = ["learning", "learning-event", event.severity.lower(), slugify(event.component, 30)]
    front = [
        f"description: {_yaml_str(summary(event))}",
        f"tags: [{', '.join(dict.fromkeys(tags))}]",
        f"created: {event.timestamp.strftime('%Y-%m-%d')}",
        f"severity: {event.severity.lower()}",
        f"video_id: {_yaml_str(event.video_id) if event.video_id else 'null'}",
        "affected_tools: []",
        f"fix: {_yaml_str(event.fix_applied)}",
        f"event_id: {event.event_id}",
    ]
    if event.agent:
        front.append(f"agent: {event.agent}")
    if event.fingerprint:
        front.append(f"fingerprint: {_yaml_str(event.fingerprint)}")
    sections = [
        ("Symptom", event.symptom),
        ("Root Cause", event.root_cause or NO_ROOT_CAUSE),
        ("Fix Applied", event.fix_applied or NO_FIX),
    ]
    if event.verification:
        sections.append(("Verification", event.verification))
    body = "\n\n".join(f"## {title}\n\n{text.strip()}" for title, text in sections)
    return (
        "---\n"
        + "\n".join(front)
        + "\n---\n\n"
        + f"# [{event.severity}] {event.component}: {event.symptom.strip().splitlines()[0]}\n\n"
        + body
        + "\n"
    )


def add_to_index(
    current: str | None, entry: str, date: str, max_entries: int
) -> tuple[str, list[str]]:
    """``current`` index text with ``entry`` first in the recent list; returns the new text and
    the entries pushed past ``max_entries`` (kept elsewhere, never dropped)."""
    text = (
        current
        if current is not None
        else _INDEX_TEMPLATE.format(date=date, heading=RECENT_HEADING)
    )
    lines = text.splitlines()
    heading = next(
        (i for i, line in enumerate(lines) if line.startswith("## Recent Learnings")), None
    )
    if heading is None:
        lines += ["", RECENT_HEADING, ""]
        heading = len(lines) - 2
    start = heading + 1
    while start < len(lines) and not lines[start].strip():
        start += 1
    end = start
    while end < len(lines) and lines[end].startswith("- "):
        end += 1
    items = [entry, *lines[start:end]]
    overflow = items[max_entries:]
    items = items[:max_entries]
    before = [*lines[: heading + 1], ""]
    after = lines[end:]
    if after and after[0].strip():
        after = ["", *after]
    new_lines = before + items + after
    for i, line in enumerate(new_lines[:12]):
        if line.startswith("updated:"):
            new_lines[i] = f"updated: {date}"
            break
    return "\n".join(new_lines).rstrip("\n") + "\n", overflow


@checked
def record_learning(event: LearningEvent, *, store: Store | None = None) -> str:
    """Write the skill-graph node for ``event`` and list it first in ``_index.md``.

    Returns the node's path relative to the data root. A name already taken (the same symptom on
    the same day) gets the event id's suffix, so no node is ever overwritten.
    """
    store = store or get_store()
    event = cap_fields(event, TEXT_FIELDS, store.policies.LEARNING_MAX_TEXT_CHARS)
    docs = store.docs
    stem = note_stem(event)
    text = render_note(event)
    path = docs.create_note(f"{stem}.md", text)
    if path is None:
        stem = f"{stem}-{event.event_id.rsplit('-', 1)[-1]}"
        path = docs.create_note(f"{stem}.md", text)
    if path is None:
        stem = f"{note_stem(event)}-{event.event_id}"
        path = docs.create_note(f"{stem}.md", text)
        assert path is not None, "event ids are unique"
    entry = f"- [[{stem}]] — {' '.join(summary(event).split())}"
    date = event.timestamp.strftime("%Y-%m-%d")
    limit = store.policies.LEARNING_SKILL_INDEX_MAX_ENTRIES
    docs.update_note_index(lambda current: add_to_index(current, entry, date, limit))
    return docs.relative(path)
