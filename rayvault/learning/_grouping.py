"""Failure grouping, version 2: masks for what a format can tell, template clusters for the rest.

Every decision of the loop rests on "is this the same failure?". Version 1 (the ``fingerprint``
of :mod:`rayvault.learning._fingerprint`) hashed a masked text, so two occurrences were one
failure only when their masked texts were identical. Version 2 keeps that as its first step
and adds what a static mask cannot know:

1. **The failure's text** (:func:`failure_text`): for a Python traceback, the last exception's
   whole message, from its ``Type:`` line to the end (chained exceptions: the last one), so the
   same failure recorded with or without its traceback is one text.
2. **Masks** (:func:`mask`): what a format tells is variable — URLs, paths, timestamps, written-out
   dates, UUIDs, IPs, e-mail addresses, hex, durations in any unit, and every token holding a
   digit — becomes a typed placeholder (``<url>``, ``<dur>``, ``<n>``…). What is quoted stays,
   only its variable parts are masked: ``KeyError: 'choices'`` is not ``KeyError: 'price'``.
3. **Template clusters** (:func:`assign`): texts of one stage with the same token count whose
   templates differ in a few word positions join one cluster when the evidence says those
   positions vary (user names, host names, product names), the idea behind Drain (He et al.,
   2017). A cluster is only ever merged, never split: once a pattern key is handed out it stays,
   and a later merge is recorded so that queries follow it.

The clusters live in a :class:`PatternBook`: in memory for :func:`group_failures`, in the store's
index (file store) or tables (PostgreSQL) for what is written — the same :func:`assign` decides
in all three, so what ``group_failures`` returns is exactly what the store would assign.

This module is in the base layer (it imports nothing above the exceptions).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rayvault.learning.exceptions import InvalidInputError

#: The grouping algorithm's version, stored with every fingerprint it computes. Version 1 is
#: :func:`rayvault.learning._fingerprint.fingerprint` (records stored without a version).
GROUPING_VERSION = 2
#: A template position that the cluster's evidence showed to vary.
VARIABLE = "<*>"
#: Longest template kept for display (the signature still covers the whole masked text).
TEMPLATE_LIMIT = 240


# --- 1. the failure's text ---------------------------------------------------------------------

_TRACEBACK = "Traceback (most recent call last):"


def failure_text(text: str) -> str:
    """The part of an error text that identifies the failure.

    For a Python traceback: the last exception's message, from its ``Type:`` line to the end
    (frames and source lines dropped; of chained exceptions only the last counts). Any other text
    is returned whole."""
    start = text.rfind(_TRACEBACK)
    if start < 0:
        return text
    lines = text[start + len(_TRACEBACK) :].splitlines()
    i = 0
    # Frames are indented (``  File "...", line N, in f``, the source line, ``^^^`` markers).
    while i < len(lines) and (not lines[i].strip() or lines[i][:1].isspace()):
        i += 1
    message = "\n".join(lines[i:]).strip()
    return message or text


# --- 2. masks --------------------------------------------------------------------------------------

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_WEEKDAY = r"(?:Mon|Tue|Tues|Wed|Thu|Thur|Thurs|Fri|Sat|Sun)[a-z]*\.?,?"
_UNIT = r"(?:ns|us|µs|ms|s|m|min|h|d)"


def _masks() -> tuple[tuple[str, re.Pattern[str], str], ...]:
    table = (
        ("url", r"\b[a-z][a-z0-9+.-]{1,15}://[^\s'\"<>)\]}]+", re.I),
        ("id", r"\b(?:le|evt|rule|e)-\d{8}T\d{6}Z?-[0-9A-Za-z]+\b", 0),
        ("uuid", r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        ("email", r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\b", 0),
        ("ip", r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b", 0),
        ("hex", r"\b(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}\b", re.I),
        (
            "ts",
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:\s?Z\b|\s?[+-]\d{2}:?\d{2}\b)?",
            re.I,
        ),
        ("ts", r"\b\d{8}T\d{6}Z?\b", re.I),
        # Written-out dates: "Sun Jul 10", "Jul 10, 2005", "10 Jul 2005", a weekday before digits.
        (
            "date",
            rf"\b(?:{_WEEKDAY}\s+)?{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}}\b)?"
            rf"|\b\d{{1,2}}\s+{_MONTH}\s+\d{{4}}\b|\b{_WEEKDAY}(?=\s+\d)",
            0,
        ),
        ("date", r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b", 0),
        ("time", r"(?<![\w.:])\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AP]M\b)?", 0),
        # Paths: rooted (/, ~/, ./, ../, C:\) or with a directory. Each starts where a token
        # starts, so a long dotted text costs one pass, not one per character.
        ("path", r"(?<![\w.@+/\\-])(?:~|\.{1,2})?/[\w.@+%=,-]*(?:/[\w.@+%=,-]*)*", 0),
        ("path", r"(?<![\w\\])[A-Za-z]:\\[^\s'\"<>|]*", 0),
        ("path", r"(?<![\w.@+/-])[\w.@+-]+(?:/[\w.@+-]+)+/?", 0),
        ("hex", r"\b0x[0-9a-f]+\b", re.I),
        # Durations in any unit and format: 250ms, 1.83s, 7m42.2s, 30 seconds.
        ("dur", rf"(?<![\w.])\d+(?:\.\d+)?{_UNIT}(?:\d+(?:\.\d+)?{_UNIT})*(?![\w.])", 0),
        (
            "dur",
            r"\b\d+(?:\.\d+)?\s?(?:milliseconds?|seconds?|secs?|minutes?|mins?|hours?|hrs?"
            r"|days?)\b",
            re.I,
        ),
        ("n", r"(?<![\w,.])\d{1,3}(?:,\d{3})+(?![\w,])", 0),
    )
    return tuple((name, re.compile(pattern, flags), f"<{name}>") for name, pattern, flags in table)


_MASKS = _masks()
#: Any other token holding a digit: a number (``<n>``) or an id (``<id>``). A run starts only
#: where a token starts, so this is linear in the text's length.
_DIGIT_RUN = re.compile(r"(?<![\w.+#-])[\w.+#-]*\d[\w.+#-]*")
_NUMBER = re.compile(r"[-+]?\.?\d[\d.]*")
_SPACE = re.compile(r"\s+")
_PLACEHOLDER = re.compile(r"<(?:url|id|uuid|ts|date|time|email|ip|hex|path|dur|n|\*)>")
_ONLY_PLACEHOLDERS = re.compile(rf"(?:[\W_]*{_PLACEHOLDER.pattern})+[\W_]*")


def _digit_run(match: re.Match[str]) -> str:
    return "<n>" if _NUMBER.fullmatch(match.group()) else "<id>"


def mask(text: str) -> str:
    """The failure's text (see :func:`failure_text`) with its variable parts replaced by typed
    placeholders and its whitespace collapsed."""
    masked = failure_text(text)
    for _name, pattern, replacement in _MASKS:
        masked = pattern.sub(replacement, masked)
    masked = _DIGIT_RUN.sub(_digit_run, masked)
    masked = _SPACE.sub(" ", masked).strip()
    if _ONLY_PLACEHOLDERS.fullmatch(masked):
        # Nothing constant is left to group by ("E404", "ERR_429"): the literal text is the key.
        return _SPACE.sub(" ", failure_text(text)).strip()
    return masked


def masks_applied(text: str) -> list[tuple[str, str]]:
    """Which masks matched which parts of the failure's text, in the order they apply."""
    masked = failure_text(text)
    found: list[tuple[str, str]] = []
    for name, pattern, replacement in _MASKS:
        found.extend((name, m.group()) for m in pattern.finditer(masked))
        masked = pattern.sub(replacement, masked)
    found.extend((_digit_run(m)[1:-1], m.group()) for m in _DIGIT_RUN.finditer(masked))
    return found


def signature(stage: str, masked: str) -> str:
    """The hash of a stage and a masked text: equal for identical templates in every store.

    It leaves the version out on purpose: a text whose template did not change between versions
    keeps its key, so history is not split where nothing changed."""
    normal = masked.lower().rstrip(" .:;!")
    key = f"{stage.strip().lower()}\n{normal}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(key).hexdigest()[:16]


def pattern_key(stage: str, sig: str) -> str:
    """The pattern key a new cluster gets: ``stage:signature`` (what version 1 keys look like)."""
    return f"{stage.strip()}:{sig}"


# --- 3. template clusters --------------------------------------------------------------------------


@dataclass
class Cluster:
    """One failure pattern: its key (never changes) and its template tokens (only generalise).

    ``data`` is the algorithm's evidence about the cluster; a book stores it as JSON, unread."""

    key: str
    stage: str
    tokens: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def template(self) -> str:
        text = " ".join(self.tokens)
        return text if len(text) <= TEMPLATE_LIMIT else text[: TEMPLATE_LIMIT - 1] + "…"


class PatternBook(Protocol):
    """Where the clusters of failure templates live: memory, the file store's index, PostgreSQL.

    :func:`assign` calls it while the caller holds whatever makes one stage's assignments one at
    a time (the store's lock); a book itself only reads and writes."""

    def find(self, stage: str, sig: str) -> Cluster | None:
        """The live cluster this exact masked text (its :func:`signature`) already belongs to,
        merges followed; None for a text never seen."""
        ...

    def clusters(self, stage: str, length: int) -> list[Cluster]:
        """The stage's live clusters (not merged into another) with this many tokens, oldest
        first."""
        ...

    def save(self, cluster: Cluster, sig: str) -> None:
        """Insert or update ``cluster`` (its template may have generalised) and record that the
        signature ``sig`` belongs to it."""
        ...

    def merge(self, source: Cluster, target: Cluster) -> None:
        """Record that ``source`` is merged into ``target``: its signatures and its pattern key
        resolve to ``target.key`` from now on; ``source`` is no longer live."""
        ...


@dataclass(frozen=True)
class Grouping:
    """Where one failure text went: its pattern key and template, and why."""

    key: str
    template: str
    sig: str
    masked: str
    version: int
    #: "known" (the exact masked text was seen), "joined" (fits a cluster's template), "merged"
    #: (it made a family of clusters one), or "new".
    decision: str
    #: Pattern keys merged into ``key`` by this assignment.
    merged: tuple[str, ...] = ()


#: Distinct values at the same word positions that show those positions vary (a family of
#: clusters that differ only there becomes one).
MERGE_EVIDENCE = 3


def _is_placeholder(token: str) -> bool:
    return token.startswith("<") and _PLACEHOLDER.fullmatch(token) is not None


def _differences(template: Sequence[str], tokens: Sequence[str]) -> list[int] | None:
    """The positions where ``tokens`` does not fit ``template``."""
    diff = []
    for i, (a, b) in enumerate(zip(template, tokens, strict=True)):
        if a == b or a == VARIABLE:
            continue
        if _is_placeholder(a) and _is_placeholder(b):
            continue
        diff.append(i)
    return diff


def _generalise(template: Sequence[str], tokens: Sequence[str]) -> tuple[str, ...]:
    return tuple(a if a == b else VARIABLE for a, b in zip(template, tokens, strict=True))


def _max_differences(length: int) -> int:
    return max(1, length // 3)


def assign(book: PatternBook, stage: str, text: str) -> Grouping:
    """Group one failure text of ``stage``: find, join or make its cluster in ``book``."""
    stage = stage.strip()
    masked = mask(text)
    sig = signature(stage, masked)
    known = book.find(stage, sig)
    if known is not None:
        return Grouping(known.key, known.template, sig, masked, GROUPING_VERSION, "known")
    tokens = tuple(masked.split(" ")) if masked else ("",)
    candidates = book.clusters(stage, len(tokens))
    families: dict[tuple[int, ...], list[Cluster]] = {}
    limit = _max_differences(len(tokens))
    for cluster in candidates:
        diff = _differences(cluster.tokens, tokens)
        if not diff:
            cluster.tokens = _generalise(cluster.tokens, tokens)
            book.save(cluster, sig)
            return Grouping(cluster.key, cluster.template, sig, masked, GROUPING_VERSION, "joined")
        if len(diff) <= limit:
            families.setdefault(tuple(diff), []).append(cluster)
    for positions, family in families.items():
        values = {tuple(c.tokens[i] for i in positions) for c in family}
        values.add(tuple(tokens[i] for i in positions))
        if len(values) >= MERGE_EVIDENCE:
            target, *others = family
            generalised = target.tokens
            for other in others:
                generalised = _generalise(generalised, other.tokens)
            target.tokens = _generalise(generalised, tokens)
            book.save(target, sig)
            for other in others:
                book.merge(other, target)
            merged = tuple(o.key for o in others)
            return Grouping(
                target.key, target.template, sig, masked, GROUPING_VERSION, "merged", merged
            )
    cluster = Cluster(pattern_key(stage, sig), stage, tokens)
    book.save(cluster, sig)
    return Grouping(cluster.key, cluster.template, sig, masked, GROUPING_VERSION, "new")


class MemoryBook:
    """A :class:`PatternBook` in memory: what :func:`group_failures` groups with."""

    def __init__(self) -> None:
        self._signatures: dict[tuple[str, str], str] = {}
        self._clusters: dict[str, Cluster] = {}
        self._merged: dict[str, str] = {}
        self._live: dict[tuple[str, int], list[str]] = {}

    def resolve(self, key: str) -> str:
        """``key`` with merges followed."""
        while key in self._merged:
            key = self._merged[key]
        return key

    def find(self, stage: str, sig: str) -> Cluster | None:
        key = self._signatures.get((stage, sig))
        return None if key is None else self._clusters[self.resolve(key)]

    def clusters(self, stage: str, length: int) -> list[Cluster]:
        return [self._clusters[k] for k in self._live.get((stage, length), ())]

    def save(self, cluster: Cluster, sig: str) -> None:
        if cluster.key not in self._clusters:
            self._live.setdefault((cluster.stage, cluster.length), []).append(cluster.key)
        self._clusters[cluster.key] = cluster
        self._signatures[(cluster.stage, sig)] = cluster.key

    def merge(self, source: Cluster, target: Cluster) -> None:
        self._merged[source.key] = target.key
        self._live[(source.stage, source.length)].remove(source.key)

    def merges(self) -> dict[str, str]:
        """Every recorded merge, source key → the key it was merged into."""
        return dict(self._merged)


def group_failures(texts: Iterable[str], stage: str = "x") -> list[str]:
    """One pattern key per text, in arrival order: texts with one key are one failure.

    Exactly what the stores assign when these texts are logged one after another to ``stage``
    of an empty root (merges followed: a text grouped before its cluster merged into another gets
    the key it was merged into)."""
    if not isinstance(stage, str) or not stage.strip():
        raise InvalidInputError("stage must be non-empty text")
    book = MemoryBook()
    keys = []
    for text in texts:
        if not isinstance(text, str):
            raise InvalidInputError(f"group_failures takes texts, got {type(text).__name__}")
        keys.append(assign(book, stage, text).key)
    return [book.resolve(k) for k in keys]
