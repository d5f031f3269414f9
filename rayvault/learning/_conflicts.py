"""Text heuristics that tell when two rules prescribe incompatible actions (DESIGN.md §6).

A rule's *action* is the part after ``Do:`` in the text ``rule_text`` writes (``Avoid: … Cause:
… Do: …``), or the whole text of a rule written by hand or by an older system. It is split into
clauses, and each clause is read for what it prescribes:

- its **polarity** (``never``/``do not``/``avoid``/``no longer``/``stop`` … make it a prohibition);
- a **direction** on an axis (increase/raise/more/longer … against decrease/lower/less/shorter …;
  enable/disable; add/include against remove/exclude; allow/forbid; show/hide);
- a **revert**: ``revert to X``/``restore X`` (go back to a state) or ``undo X``/``roll back X``
  (cancel a change);
- an **assignment**: ``set X to V``, ``X = V``, ``change X from A to B``;
- a **preference**: ``use X instead of Y`` / ``X rather than Y`` / ``prefer X over Y``;
- its **objects**: the content words (stemmed; articles, generic verbs and the words above left
  out).

Two clauses conflict when they are about the same objects (enough shared content words) and

- one forbids what the other prescribes (``use X`` / ``never use X``) — *negation*;
- they push the same axis opposite ways (``increase timeout`` / ``decrease timeout``) —
  *direction*;
- one undoes the other's change, or restores a state the other moves away from
  (``revert to the 3/4 angle`` / ``change the angle from 3/4 to top-down``) — *revert*;
- they set the same thing to different values (``set timeout to 30s`` / ``set timeout to 90s``)
  — *value*;
- one prescribes what the other prefers something else to (``use flux instead of sdxl`` /
  ``use sdxl``) — *instead_of*.

Severity plays no part: two rules that say the same thing at different severities agree. The
heuristics favour precision (a flag asks a person to look; a false alarm costs their trust), so
paraphrases they cannot see through are missed rather than guessed at.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_DO = re.compile(r"\bdo:\s*(.*)\Z", re.I | re.S)
_CLAUSE_SPLIT = re.compile(r"[.;!?](?:\s+|\Z)|,\s+|\s+(?:and|but|then|so)\s+")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9/%+.:'_-]*[a-z0-9%]|[a-z0-9]")
_NEGATIONS = re.compile(
    r"\b(?:do\s+not|does\s+not|did\s+not|must\s+not|should\s+not|shall\s+not|can\s*not|"
    r"don't|doesn't|mustn't|shouldn't|dont|never|no\s+longer|not|stop|avoid|no)\b"
)
_INSTEAD = re.compile(
    r"^(?P<verb>\w+\s+)?(?P<x>.+?)\s+(?:instead\s+of|rather\s+than|in\s+place\s+of)\s+(?P<y>.+)$"
)
_PREFER = re.compile(r"^prefer\s+(?P<x>.+?)\s+(?:over|to)\s+(?P<y>.+)$")
_REPLACE = re.compile(r"^replace\s+(?P<y>.+?)\s+with\s+(?P<x>.+)$")
_FROM_TO = re.compile(r"^(?P<obj>.*?)\bfrom\s+(?P<old>.+?)\s+to\s+(?P<new>.+)$")
_SET_TO = re.compile(
    r"^(?:set|change|changed|switch|switched|update|updated|move|moved|configure|make|bump|"
    r"increase|increased|raise|raised|decrease|decreased|lower|lowered|reduce|reduced|"
    r"limit|cap)\s+(?P<obj>.+?)\s+(?:to|=|at)\s+(?P<new>.+)$"
)
_KEY_VALUE = re.compile(r"(?P<obj>[a-z][a-z0-9_.-]*)\s*(?:=|:)\s*(?P<new>[^\s,;]+)")
_REVERT_TO = re.compile(
    r"\b(?:revert(?:ed|ing|s)?|roll(?:ed|ing|s)?\s+back|go(?:ne)?\s+back|went\s+back|"
    r"restor(?:e|ed|es|ing))\s+(?:back\s+)?to\s+(?P<target>.+)$"
)
_UNDO = re.compile(
    r"\b(?:revert(?:ed|ing|s)?|undo(?:ne|es|ing)?|undid|roll(?:ed|ing|s)?\s+back|rollback|"
    r"back(?:ed|ing)?\s+out|reverse(?:d|s)?)\s+(?P<undone>.+)$"
)
_RESTORE = re.compile(r"\brestor(?:e|ed|es|ing)\s+(?P<target>.+)$")

_STOPWORDS = frozenset(
    """
    a an the to of in on for with and or is are was were be been it its this that these those
    from at by as into onto over under via per when if then than so only just again back before
    after original originally previous previously prior old new always all any each every same
    one instead rather place there their them they we our you your i he she his her should must
    can could would will may might please
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
#: Verbs that say little about what is prescribed ("use X" is about X).
_GENERIC = frozenset(
    """
    use used using uses set sets setting make made makes keep kept keeps ensure ensured check
    checked checks run ran runs try tried tries do did does done apply applied applies change
    changed changes switch switched update updated configure configured move moved follow
    followed
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
_AXES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "amount": (
        (
            "increase",
            "raise",
            "higher",
            "more",
            "longer",
            "bigger",
            "larger",
            "upscale",
            "maximize",
            "extend",
            "lengthen",
            "boost",
        ),
        (
            "decrease",
            "lower",
            "reduce",
            "less",
            "fewer",
            "shorter",
            "smaller",
            "downscale",
            "minimize",
            "shorten",
        ),
    ),
    "enablement": (("enable", "activate"), ("disable", "deactivate")),
    "presence": (("add", "include", "insert"), ("remove", "exclude", "drop", "delete", "omit")),
    "permission": (("allow", "permit"), ("forbid", "block", "disallow", "deny")),
    "visibility": (("show", "display"), ("hide",)),
}


def stem(word: str) -> str:
    """A crude stem, enough to equate ``crop``/``cropped``/``cropping`` and ``image``/``images``."""
    if any(ch.isdigit() for ch in word) or len(word) <= 3:
        return word
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # cropp → crop, sett → set
    if word.endswith("i"):
        word = word[:-1] + "y"  # retri → retry
    return word


_DIRECTIONS: dict[str, tuple[str, int]] = {
    stem(word): (axis, sign)
    for axis, (up, down) in _AXES.items()
    for sign, words in ((1, up), (-1, down))
    for word in words
}
_STEMMED_STOP = frozenset(stem(w) for w in _STOPWORDS | _GENERIC)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _content(text: str) -> frozenset[str]:
    """The content words of ``text``, stemmed (no stopwords, generic verbs, direction words)."""
    words = {stem(t) for t in _tokens(_NEGATIONS.sub(" ", text))}
    return frozenset(w for w in words if w not in _STEMMED_STOP and w not in _DIRECTIONS)


def _words(text: str) -> frozenset[str]:
    """Content words including direction words (what a change is, for undo matching)."""
    words = {stem(t) for t in _tokens(_NEGATIONS.sub(" ", text))}
    return frozenset(w for w in words if w not in _STEMMED_STOP)


@dataclass(frozen=True)
class Clause:
    """What one clause of a rule's action prescribes."""

    text: str
    negative: bool
    objects: frozenset[str]
    words: frozenset[str]
    #: ``(axis, sign)`` with the sign already flipped for a prohibition.
    direction: tuple[str, int] | None = None
    revert_to: frozenset[str] | None = None
    undone: frozenset[str] | None = None
    #: ``(object, old value, new value)``; the old value may be empty.
    assignment: tuple[frozenset[str], frozenset[str], frozenset[str]] | None = None
    rejected: frozenset[str] | None = None

    @property
    def reverts(self) -> bool:
        return self.revert_to is not None or self.undone is not None


def action_text(rule_text: str) -> str:
    """What a rule tells the agent to do: the text after ``Do:``, nothing for a rule that only
    says what to avoid (``Avoid: <symptom>. Cause: …``), else the whole text."""
    match = _DO.search(rule_text)
    if match:
        return match.group(1).strip()
    if rule_text.lstrip().lower().startswith("avoid:"):
        return ""
    return rule_text.strip()


def _values(text: str) -> frozenset[str]:
    return frozenset(stem(t) for t in _tokens(text) if t not in _STOPWORDS)


def analyse_clause(text: str) -> Clause:
    """Read one clause (see the module doc)."""
    low = " ".join(text.lower().split())
    negative = _NEGATIONS.search(low) is not None
    positive_text = " ".join(_NEGATIONS.sub(" ", low).split())

    rejected: frozenset[str] | None = None
    preferred_text = positive_text
    for pattern in (_INSTEAD, _PREFER, _REPLACE):
        match = pattern.match(positive_text)
        if match:
            preferred_text = f"{match.groupdict().get('verb') or ''}{match.group('x')}"
            rejected = _content(match.group("y"))
            break

    revert_to = undone = None
    match = _REVERT_TO.search(positive_text) or _RESTORE.search(positive_text)
    if match:
        revert_to = _content(match.group("target"))
    elif match := _UNDO.search(positive_text):
        undone = _words(match.group("undone"))

    assignment = None
    if revert_to is None and undone is None and rejected is None:
        if match := _FROM_TO.match(positive_text):
            assignment = (
                _content(match.group("obj")),
                _values(match.group("old")),
                _values(match.group("new")),
            )
        elif (match := _SET_TO.match(positive_text)) or (match := _KEY_VALUE.search(positive_text)):
            obj = _content(match.group("obj"))
            if obj:
                assignment = (obj, frozenset(), _values(match.group("new")))

    direction = None
    if not (revert_to or undone):
        for token in _tokens(preferred_text):
            found = _DIRECTIONS.get(stem(token))
            if found:
                axis, sign = found
                direction = (axis, -sign if negative else sign)
                break

    return Clause(
        text=" ".join(text.split()),
        negative=negative,
        objects=_content(preferred_text),
        words=_words(positive_text),
        direction=direction,
        revert_to=revert_to,
        undone=undone,
        assignment=assignment,
        rejected=rejected,
    )


def analyse(rule_text: str) -> list[Clause]:
    """The clauses of a rule's action that prescribe something."""
    clauses = []
    for part in _CLAUSE_SPLIT.split(action_text(rule_text)):
        if part and part.strip():
            clause = analyse_clause(part)
            if clause.objects or clause.words:
                clauses.append(clause)
    return clauses


def _about_same(a: frozenset[str], b: frozenset[str], share: float = 0.5) -> bool:
    """True when ``a`` and ``b`` share at least ``share`` of the smaller set (and one word)."""
    if not a or not b:
        return False
    need = max(1, math.ceil(share * min(len(a), len(b))))
    return len(a & b) >= need


def _covers(part: frozenset[str], whole: frozenset[str], share: float = 0.5) -> bool:
    """True when ``whole`` holds at least ``share`` of ``part`` (and one word)."""
    if not part:
        return False
    return len(part & whole) >= max(1, math.ceil(share * len(part)))


def _restores_what_other_changes(a: Clause, b: Clause) -> bool:
    """``a`` goes back to a state that ``b`` moves away from."""
    if a.revert_to is None or b.reverts or b.assignment is None:
        return False
    obj, old, new = b.assignment
    return bool(new) and not (new & a.revert_to) and bool(old & a.revert_to or obj & a.revert_to)


def _prefers_other(a: Clause, b: Clause) -> bool:
    """``a`` prefers something else to what ``b`` prescribes, or they prefer opposite choices."""
    if not a.rejected or b.negative:
        return False
    if b.rejected is None:
        return _covers(a.rejected, b.objects) and not (b.objects & a.objects)
    return _about_same(a.rejected, b.objects) and _about_same(b.rejected, a.objects)


def _opposite_directions(a: Clause, b: Clause) -> bool:
    return (
        a.direction is not None
        and b.direction is not None
        and a.direction[0] == b.direction[0]
        and a.direction[1] != b.direction[1]
        and _about_same(a.objects, b.objects)
    )


def _different_values(a: Clause, b: Clause) -> bool:
    if a.assignment is None or b.assignment is None or a.negative or b.negative:
        return False
    (obj_a, _, new_a), (obj_b, _, new_b) = a.assignment, b.assignment
    return bool(new_a and new_b) and not (new_a & new_b) and _about_same(obj_a, obj_b)


def clause_conflict(a: Clause, b: Clause) -> tuple[str, str] | None:
    """``(kind, explanation)`` when clause ``a`` is incompatible with clause ``b``; checks one
    direction for the asymmetric kinds (call it both ways)."""
    if _restores_what_other_changes(a, b):
        return "revert", f'"{a.text}" goes back to what "{b.text}" changes away from'
    if a.undone is not None and not b.reverts and not b.negative and _covers(a.undone, b.words):
        return "revert", f'"{a.text}" undoes what "{b.text}" prescribes'
    if a.reverts or b.reverts:
        return None
    if _prefers_other(a, b):
        return "instead_of", f'"{a.text}" prefers something else to what "{b.text}" prescribes'
    if _opposite_directions(a, b):
        assert a.direction is not None
        return "direction", (
            f'"{a.text}" and "{b.text}" push the same thing opposite ways ({a.direction[0]})'
        )
    forbids = a.negative and not b.negative and a.direction is None and b.direction is None
    if forbids and _covers(a.objects, b.objects, 0.6):
        return "negation", f'"{a.text}" forbids what "{b.text}" prescribes'
    if _different_values(a, b):
        return "value", f'"{a.text}" and "{b.text}" set the same thing to different values'
    return None


def rules_conflict(a: list[Clause], b: list[Clause]) -> tuple[str, str] | None:
    """The first incompatibility between two analysed rules, checked both ways."""
    for ca in a:
        for cb in b:
            found = clause_conflict(ca, cb) or clause_conflict(cb, ca)
            if found:
                return found
    return None
