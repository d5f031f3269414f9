"""Failure grouping, by its public name: :func:`group_failures` (one pattern key per text, what the
stores assign) and :func:`explain_grouping` (why a text gets its key, like Sentry's "grouping
information").

The algorithm lives in the base layer (:mod:`rayvault.learning._grouping`, where the stores reach
it without importing the domain); its steps are documented there. This module adds the argument
checks of the API boundary and the explanation, which replays one assignment step by step
against a book without writing to it. The book types (:class:`MemoryBook`, the
:class:`PatternBook` protocol, :class:`Cluster`) are re-exported for callers that explain against
a book of their own.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

from rayvault.learning import _grouping
from rayvault.learning._grouping import (
    GROUPING_VERSION,
    VARIABLE,
    Cluster,
    MemoryBook,
    PatternBook,
    assign,
    failure_text,
    mask,
    masks_applied,
)
from rayvault.learning._validate import checked
from rayvault.learning.exceptions import InvalidInputError

__all__ = [
    "GROUPING_VERSION",
    "VARIABLE",
    "BookWrite",
    "Cluster",
    "GroupingExplanation",
    "MaskMatch",
    "MemoryBook",
    "PatternBook",
    "explain_grouping",
    "failure_template",
    "group_failures",
]

#: What a :class:`PatternBook` has (a protocol that is not checked at run time: named here).
_BOOK_METHODS = ("find", "clusters", "save", "merge")


@checked
def group_failures(texts: Iterable[str], stage: str = "x") -> list[str]:
    """One pattern key per text, in arrival order: texts with one key are one failure.

    Exactly what the stores assign when these texts are logged one after another to ``stage``
    of an empty root (a text grouped before its cluster merged into another gets the key it was
    merged into). Texts are checked like everything the stores take: no NUL characters, no lone
    surrogates."""
    return _grouping.group_failures(texts, stage)


@checked
def failure_template(text: str) -> str:
    """The masked template of ``text`` (``Timeout after <dur> on <id>``): how a rule or a SOUL
    section names a failure, so that it reads as the pattern, not as its first occurrence."""
    return mask(text)


@dataclass(frozen=True)
class MaskMatch:
    """One token a mask changed: what it became (``<dur>``, ``'<id>'``…) and what it was."""

    placeholder: str
    matched: str


@dataclass(frozen=True)
class BookWrite:
    """A write the assignment asked the book for: ``save`` (``key`` now holds signature
    ``detail``) or ``merge`` (``key`` merged into ``detail``)."""

    action: str
    key: str
    detail: str


@dataclass(frozen=True)
class GroupingExplanation:
    """How one failure text of a stage is grouped, step by step."""

    stage: str
    version: int
    #: The part of the text that identifies the failure (see ``text_reason``).
    text: str
    #: Why that part: the whole text, or the last exception of a traceback (of chained ones).
    text_reason: str
    #: Each token a mask changed, in the text's order, with what it became.
    masks: tuple[MaskMatch, ...]
    #: The masked text, and its tokens (what clusters compare position by position).
    masked: str
    tokens: tuple[str, ...]
    #: True when masking left nothing constant, so the literal text is the template.
    literal: bool
    signature: str
    #: ``known`` (this exact masked text was seen), ``joined`` (it fits a cluster's template),
    #: ``merged`` (it made a family of clusters one) or ``new``.
    decision: str
    key: str
    #: The cluster's template after the assignment, and its tokens.
    template: str
    cluster_tokens: tuple[str, ...]
    #: Token positions where the text differs from the cluster's template (``<*>`` positions
    #: included); empty for a new cluster.
    differing: tuple[int, ...]
    #: Pattern keys merged into ``key`` by this assignment.
    merged: tuple[str, ...]
    #: What the assignment would write to the book (none of it was written).
    writes: tuple[BookWrite, ...]
    #: True when explained against a given book (not an empty one).
    against_book: bool

    def summary(self) -> str:
        """The explanation as lines of text (for a CLI or a log; the library prints nothing)."""
        lines = [
            f"stage {self.stage!r}, grouping version {self.version}",
            f"failure text ({self.text_reason}): {self.text[:200]}",
        ]
        lines += [f"  {m.placeholder} <- {m.matched[:80]!r}" for m in self.masks]
        literal = " (nothing constant left: the literal text)" if self.literal else ""
        lines += [
            f"template{literal}: {self.masked[:240]}",
            f"tokens: {len(self.tokens)}, signature {self.signature}",
            f"decision: {self.decision} -> {self.key}",
            f"cluster template: {self.template}",
        ]
        if self.differing:
            lines.append(f"differs at positions: {', '.join(map(str, self.differing))}")
        if self.merged:
            lines.append(f"merges: {', '.join(self.merged)}")
        return "\n".join(lines)


class _DryRunBook:
    """A :class:`PatternBook` that reads through to ``book`` and records writes instead of
    making them. The clusters it hands out are copies: :func:`assign` generalises a cluster's
    template in place before it saves it, which would change a memory book's own cluster."""

    def __init__(self, book: PatternBook) -> None:
        self.book = book
        self.writes: list[BookWrite] = []
        self.saved: dict[str, Cluster] = {}

    def find(self, stage: str, sig: str) -> Cluster | None:
        found = self.book.find(stage, sig)
        return None if found is None else copy.deepcopy(found)

    def clusters(self, stage: str, length: int) -> list[Cluster]:
        return [copy.deepcopy(c) for c in self.book.clusters(stage, length)]

    def save(self, cluster: Cluster, sig: str) -> None:
        self.writes.append(BookWrite("save", cluster.key, sig))
        self.saved[cluster.key] = cluster

    def merge(self, source: Cluster, target: Cluster) -> None:
        self.writes.append(BookWrite("merge", source.key, target.key))


def _text_reason(text: str, chosen: str) -> str:
    if chosen == text:
        return "whole text"
    chained = text.count(_grouping.TRACEBACK)
    if chained > 1:
        return f"last exception of a traceback ({chained} chained, the last one counts)"
    return "last exception of a traceback"


@checked
def explain_grouping(
    stage: str, text: str, *, book: PatternBook | None = None
) -> GroupingExplanation:
    """Why ``text`` of ``stage`` gets its pattern key: the failure text chosen, each mask with
    what it matched, the template and its tokens, the signature, and the cluster decision.

    The decision is taken against ``book`` (a store's pattern book, or a :class:`MemoryBook` that
    texts were grouped into) or, by default, an empty book. Nothing is written to ``book``: what
    the assignment would save or merge is listed in ``writes``."""
    if not stage.strip():
        raise InvalidInputError("stage must be non-empty text")
    if book is not None:
        missing = [m for m in _BOOK_METHODS if not callable(getattr(book, m, None))]
        if missing:
            raise InvalidInputError(
                f"book must be a pattern book (find, clusters, save, merge), got "
                f"{type(book).__name__} without {', '.join(missing)}"
            )
    stage = stage.strip()
    dry = _DryRunBook(book if book is not None else MemoryBook())
    result = assign(dry, stage, text)
    chosen = failure_text(text)
    tokens = tuple(result.masked.split(" ")) if result.masked else ("",)
    cluster = dry.saved.get(result.key) or dry.find(stage, result.sig)
    cluster_tokens = cluster.tokens if cluster is not None else tokens
    differing: tuple[int, ...] = ()
    if result.decision != "new" and len(cluster_tokens) == len(tokens):
        differing = tuple(
            i
            for i, (a, b) in enumerate(zip(cluster_tokens, tokens, strict=True))
            if a != b or a == VARIABLE
        )
    literal = result.masked == " ".join(chosen.split()) and bool(masks_applied(text))
    return GroupingExplanation(
        stage=stage,
        version=result.version,
        text=chosen,
        text_reason=_text_reason(text, chosen),
        masks=tuple(MaskMatch(masked, token) for masked, token in masks_applied(text)),
        masked=result.masked,
        tokens=tokens,
        literal=literal,
        signature=result.sig,
        decision=result.decision,
        key=result.key,
        template=result.template,
        cluster_tokens=tuple(cluster_tokens),
        differing=differing,
        merged=result.merged,
        writes=tuple(dry.writes),
        against_book=book is not None,
    )
