"""The skill graph's learning notes: one markdown node per learning event, and the ``_index.md``
map of content that lists them newest first.

A node has YAML front matter (``description, tags, created, severity, video_id, affected_tools,
fix`` plus ``event_id`` and ``fingerprint``), a ``# [SEVERITY] component: symptom`` title and
``## Symptom``, ``## Root Cause``, ``## Fix Applied`` sections: the shape the pipeline's existing
notes have, so people and the migration read both alike.

This module is the note format's one home: :func:`render_note` writes a node, :func:`parse_note`
reads any note (ours, and the hand-written ones the migration brings in) back into front matter,
title and sections.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from rayvault.learning._validate import TEXT_FIELDS, cap_fields, checked
from rayvault.learning.models import LearningEvent
from rayvault.learning.store import Store, get_store

RECENT_HEADING = "## Recent Learnings (newest first)"
#: What a node's sections say when the event has no root cause or fix yet (the migration reads
#: them back as empty).
NO_ROOT_CAUSE = "(not yet diagnosed)"
NO_FIX = "(none yet)"
_SLUG = re.compile(r"[^a-z0-9]+")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*):(?:[ \t]+(.*)|[ \t]*)$")
_KNOWN_KEYS = frozenset(
    {
        "description",
        "tags",
        "created",
        "updated",
        "severity",
        "status",
        "video_id",
        "affected_tools",
        "fix",
        "event_id",
        "agent",
        "fingerprint",
        "component",
        "run_id",
    }
)
_EVENT_TITLE = re.compile(
    r"\[(?P<severity>[A-Za-z]+)\]\s*(?P<component>[^:\n]+?)\s*:\s*(?P<symptom>.+)"
)
_FENCE = re.compile(r"\s*(```|~~~)")

#: Section headings (lower case) that hold each part of a failure, in order of preference.
SYMPTOM_SECTIONS = ("symptom", "incident")
DETAIL_SECTIONS = ("what happened",)
ROOT_CAUSE_SECTIONS = ("root cause", "root_cause", "cause")
FIX_SECTIONS = ("fix applied", "fix", "resolution", "solution")
VERIFICATION_SECTIONS = ("verification",)
PREVENTION_SECTIONS = ("prevention", "prevention rule", "prevention rules")
_PLACEHOLDERS = frozenset({NO_ROOT_CAUSE, NO_FIX})
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


# -- reading notes ----------------------------------------------------------------------------
@dataclass
class Note:
    """A skill-graph note as read: front matter, title and ``##`` sections."""

    front: dict[str, Any]
    #: False when the front matter was not valid YAML (or not a plain mapping) and the tolerant
    #: line reader was used.
    strict_yaml: bool
    title: str
    #: Section heading (lower case, no trailing colon) → its text, first occurrence.
    sections: dict[str, str]
    #: ``event`` (``# [SEVERITY] component: symptom``) or ``hand-written``.
    shape: Literal["event", "hand-written"]
    title_severity: str | None = None
    title_component: str | None = None
    title_symptom: str | None = None

    def section(self, names: Iterable[str]) -> str:
        """The text of the first of these sections that has some (placeholders that notes
        written from events put in empty sections count as none)."""
        for name in names:
            text = self.sections.get(name, "").strip()
            if text and text not in _PLACEHOLDERS:
                return text
        return ""


def parse_note(text: str) -> Note:
    """Read a note's front matter (tolerantly), title and sections. Raises ``ValueError`` for a
    front matter block that is never closed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    front: dict[str, Any] = {}
    strict = True
    body = text
    if text.lstrip().startswith("---"):
        lines = text.lstrip().split("\n")
        end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
        if lines[0].rstrip() != "---" or end is None:
            raise ValueError("its front matter (---) is never closed")
        block = "\n".join(lines[1:end])
        front, strict = parse_front_matter(block)
        body = "\n".join(lines[end + 1 :])
    title, sections = _parse_body(body)
    note = Note(
        front=front, strict_yaml=strict, title=title, sections=sections, shape="hand-written"
    )
    match = _EVENT_TITLE.fullmatch(title)
    if match:
        note.shape = "event"
        note.title_severity = match["severity"]
        note.title_component = match["component"].strip()
        note.title_symptom = match["symptom"].strip()
    return note


def parse_front_matter(block: str) -> tuple[dict[str, Any], bool]:
    """The front matter's fields, and whether it was valid YAML.

    YAML is tried first; when it fails, or yields keys that are really continuation lines (an
    unquoted multi-line value whose second line contains ``After fix:``), each line that starts
    with ``key:`` starts a field and every other line continues the previous one.
    """
    import yaml  # lazily: writing a node (every new event) never needs it

    try:
        data = yaml.safe_load(block) if block.strip() else {}
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and all(isinstance(k, str) and _KEY.fullmatch(k) for k in data):
        return data, True
    return _tolerant_front_matter(block), False


def _tolerant_front_matter(block: str) -> dict[str, Any]:
    raw: dict[str, list[str]] = {}
    key: str | None = None
    open_quote = False
    for line in block.split("\n"):
        match = _KEY_LINE.match(line)
        starts_field = match is not None and (not open_quote or match[1] in _KNOWN_KEYS)
        if match and starts_field:
            key = match[1]
            value = (match[2] or "").rstrip()
            raw[key] = [value]
            open_quote = value.startswith('"') and (len(value) == 1 or not value.endswith('"'))
        elif key is not None:
            raw[key].append(line.rstrip())
            if open_quote and line.rstrip().endswith('"'):
                open_quote = False
    return {k: _scalar("\n".join(v).strip()) for k, v in raw.items()}


def _scalar(text: str) -> Any:
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)  # our own notes write JSON-escaped strings
        except ValueError:
            return text[1:-1]
        return value if isinstance(value, str) else text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text.startswith("[") and text.endswith("]") and "\n" not in text:
        return [part.strip().strip("'\"") for part in text[1:-1].split(",") if part.strip()]
    return text


def _parse_body(body: str) -> tuple[str, dict[str, str]]:
    title = ""
    sections: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    fenced = False

    def close() -> None:
        if current is not None and current not in sections:
            sections[current] = "\n".join(lines).strip()

    for line in body.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            close()
            current = _heading(line[3:])
            lines = []
            continue
        elif not fenced and not title and line.startswith("# "):
            title = line[2:].strip()
            continue
        if current is not None:
            lines.append(line)
    close()
    return title, sections


def _heading(text: str) -> str:
    text = text.strip().strip("#").strip().replace("*", "").replace("`", "")
    return " ".join(text.lower().rstrip(":").split())


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
