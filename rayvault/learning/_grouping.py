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
import itertools
import operator
import re
from collections.abc import Iterable, Sequence
from typing import cast

from rayvault.learning._patternbook import (
    GROUPING_VERSION,
    VARIABLE,
    Cluster,
    Grouping,
    PatternBook,
)
from rayvault.learning._template import TEMPLATE_LIMIT
from rayvault.learning.exceptions import InvalidInputError

__all__ = [
    "GROUPING_VERSION",
    "MERGE_EVIDENCE",
    "TEMPLATE_LIMIT",
    "VARIABLE",
    "Cluster",
    "Grouping",
    "MemoryBook",
    "PatternBook",
    "assign",
    "assign_masked",
    "failure_text",
    "generalise",
    "group_failures",
    "mask",
    "masks_applied",
    "pattern_key",
    "signature",
]

#: Tokens of a failure's text that decide its group: what identifies a failure comes first, and
#: a bound keeps one 20,000-character text from costing more than a few milliseconds.
MAX_TOKENS = 512
#: A longer token is data (an encoded blob, a dump): ``<blob>``, not worth matching masks on.
MAX_TOKEN_CHARS = 256


# --- 1. the failure's text ---------------------------------------------------------------------

#: What opens a Python traceback (chained exceptions: one per exception).
TRACEBACK = "Traceback (most recent call last):"


def failure_text(text: str) -> str:
    """The part of an error text that identifies the failure.

    For a Python traceback: the last exception's message, from its ``Type:`` line to the end
    (frames and source lines dropped; of chained exceptions only the last counts). Any other text
    is returned whole."""
    start = text.rfind(TRACEBACK)
    if start < 0:
        return text
    lines = text[start + len(TRACEBACK) :].splitlines()
    i = 0
    # Frames are indented (``  File "...", line N, in f``, the source line, ``^^^`` markers).
    while i < len(lines) and (not lines[i].strip() or lines[i][:1].isspace()):
        i += 1
    message = "\n".join(lines[i:]).strip()
    return message or text


# --- 2. masks ---------------------------------------------------------------------------------
#
# A text is split at whitespace and each token is classified on its own: a token without a digit,
# a slash or an "@" is a word and stays (most tokens; they are cached), any other token is matched
# whole against the typed masks below, and what none of them matches keeps its letters with each
# run holding a digit replaced (``uid=0`` -> ``uid=<n>``, ``blk_-123`` -> ``<id>``). Working per
# token keeps the cost linear in the text and lets a cache make repeated tokens free. Two masks
# look at a token's neighbour: a number followed by a unit word is a duration (``30 seconds``), a
# month or weekday name next to a number is part of a date (``Sun Jul 10``).


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


_URL = _c(r"[A-Za-z][\w+.-]{0,15}://\S*")
_UUID = _c(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_OWN_ID = _c(r"(?:le|evt|rule|e)-\d{8}T\d{6}Z?-[0-9A-Za-z]+")
_TS = _c(
    r"\d{4}-\d{2}-\d{2}T\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?|\d{8}T\d{6}Z?"
)
_EMAIL = _c(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_IP = _c(r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?")
# Host names: lower-case dotted names with a port, names ending in a generic top-level domain,
# and names of three or more labels ending in a two-letter country code.
_HOST = _c(r"(?:[A-Za-z0-9-]+\.)+[A-Za-z0-9-]+(?::\d{1,5})?")
_TLDS = frozenset(
    "com net org edu gov mil int io info biz local lan internal localdomain localhost arpa".split()  # noqa: SIM905
)


def _is_host(core: str) -> bool:
    """Host names: lower-case dotted names with a port, names ending in a generic top-level
    domain, and names of three or more labels ending in a two-letter country code."""
    if not _HOST.fullmatch(core):
        return False
    name, colon, _port = core.partition(":")
    last = name.rsplit(".", 1)[-1]
    if colon:
        return name.islower() and not name.replace(".", "").replace("-", "").isdigit()
    if last.lower() in _TLDS:
        return True
    return len(last) == 2 and last.isalpha() and name.islower() and name.count(".") >= 2


_HEX = _c(
    r"0[xX][0-9a-fA-F]+|(?:[0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}"
    # Lower-case runs (upper-case letters and digits are ids: B0ABC12345 reads as one).
    r"|(?=[0-9a-f]*[a-f])[0-9a-f]{8,}|[A-F]{8,}"
)
_DATE = _c(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")
_TIME = _c(r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?")
_DUR = _c(r"\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|min|h|d)(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|min|h))*")
_SIZE = _c(r"\d+(?:\.\d+)?(?:[kKMGTP]i?B|B)")
_NUM = _c(r"[-+]?(?:\d+(?:[.,]\d+)*|\.\d+)%?")
_PATH = _c(r"(?:~|\.{1,2})?/\S*|[A-Za-z]:\\\S*|(?=[\w.@+/-]*[A-Za-z_])[\w.@+-]+(?:/[\w.@+-]*)+")


def _typed(core: str) -> str | None:
    """The placeholder a whole token core is, or None. Cheap tests decide which patterns can
    apply at all, so a word costs a few string checks, not a dozen failed matches; the order is
    the priority (a UUID before a hex number, a timestamp before a date)."""
    first = core[:1]
    digit = first.isdigit()
    if "://" in core and _URL.fullmatch(core):
        return "<url>"
    if len(core) == 36 and _UUID.fullmatch(core):
        return "<uuid>"
    if first in "elr" and "-" in core and _OWN_ID.fullmatch(core):
        return "<id>"
    if digit and "T" in core and _TS.fullmatch(core):
        return "<ts>"
    if "@" in core and _EMAIL.fullmatch(core):
        return "<email>"
    dot = "." in core
    if digit and dot and _IP.fullmatch(core):
        return "<ip>"
    if dot and _is_host(core):
        return "<host>"
    if (len(core) >= 8 or first == "0") and _HEX.fullmatch(core):
        return "<hex>"
    if digit:
        if _DATE.fullmatch(core):
            return "<date>"
        if ":" in core and _TIME.fullmatch(core):
            return "<time>"
        last = core[-1]
        if last.isalpha():
            if _DUR.fullmatch(core):
                return "<dur>"
            if last == "B" and _SIZE.fullmatch(core):
                return "<size>"
    if (digit or first in "+-.") and _NUM.fullmatch(core):
        return "<n>"
    if ("/" in core or "\\" in core) and _PATH.fullmatch(core):
        return "<path>"
    return None


#: Any other run holding a digit, inside a token: a number or an id.
_DIGIT_RUN = re.compile(r"(?<![\w.+#-])[\w.+#-]*\d[\w.+#-]*")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)*")
_LETTER = re.compile(r"[^\W\d_]")
_OPEN = "([{<'\"`"
_CLOSE = ")]}>'\"`,.;:!?"
_UNITS = frozenset(
    [
        "ms",
        "msec",
        "msecs",
        "millisecond",
        "milliseconds",
        "s",
        "sec",
        "secs",
        "second",
        "seconds",
        "min",
        "mins",
        "minute",
        "minutes",
        "h",
        "hr",
        "hrs",
        "hour",
        "hours",
        "d",
        "day",
        "days",
    ]
)
#: A number right after these words is a code that names the failure, kept as written ...
_CODE_AFTER = frozenset(["http", "errno"])
#: ... and so is one after these words, when the word before them is one of _CODE_BEFORE
#: ("exit status 137", "Error code: 429", "status code 403"; not "status: 200").
_CODE_WORDS = frozenset(["status", "code"])
_CODE_BEFORE = frozenset(["exit", "error", "status", "return", "http", "response"])
_SIZES = frozenset(["B", "kB", "KB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB"])
_DATE_WORDS = frozenset(
    [
        "jan",
        "feb",
        "mar",
        "apr",
        "may",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "mon",
        "tue",
        "tues",
        "wed",
        "thu",
        "thur",
        "thurs",
        "fri",
        "sat",
        "sun",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
)
_NUMBERISH = frozenset({"<n>", "<time>", "<date>"})
_PLACEHOLDER = re.compile(
    r"<(?:url|id|uuid|ts|date|time|email|ip|host|hex|path|dur|size|n|blob|\*)>"
)
#: What :func:`_classify` says of a token, by token; cleared when it grows past _CACHE_LIMIT
#: (variable tokens rarely repeat).
_cache: dict[str, tuple[str, bool, bool]] = {}
#: Masked texts by text, for texts up to _CACHED_TEXT_CHARS long: the same failure text recurs.
_texts: dict[str, str] = {}
_CACHED_TEXT_CHARS = 1_000
_CACHE_LIMIT = 20_000


def _digit_run(match: re.Match[str]) -> str:
    return "<n>" if _NUMBER.fullmatch(match.group()) is not None else "<id>"


def _mask_token(token: str) -> str:
    """One whitespace-free token, masked (its surrounding brackets and quotes kept)."""
    opened = token.lstrip(_OPEN)
    core = opened.rstrip(_CLOSE)
    if not core:
        return token
    return token[: len(token) - len(opened)] + _mask_core(core) + opened[len(core) :]


def _mask_core(core: str) -> str:
    if core.isdigit():
        return "<n>"
    if len(core) > MAX_TOKEN_CHARS:
        return "<blob>"
    typed = _typed(core)
    if typed is not None:
        return typed
    if "," in core or "=" in core:
        # a,b,c lists and k=v,k=v settings: the keys name fields, each item is masked on its own.
        return "".join(
            item if i % 2 or not item else _mask_item(item)
            for i, item in enumerate(_ITEMS.split(core))
        )
    if _DIGIT_RUN.fullmatch(core):  # the common case, without a substitution
        return "<n>" if _NUMBER.fullmatch(core) else "<id>"
    return _DIGIT_RUN.sub(_digit_run, core)


def _mask_item(item: str) -> str:
    if item.isdigit():
        return "<n>"
    typed = _typed(item)
    if typed is not None:
        return typed
    return _DIGIT_RUN.sub(_digit_run, item)


_ITEMS = re.compile(r"([,=])")
_NEEDS_MASK = re.compile(r"[\d/\\@]|\.[^\s)\]}>'\"`,.;:!?]|\b[a-f]{8,}\b|\b[A-F]{8,}\b")


def _is_context_word(token: str) -> bool:
    if len(token) > 13 or not (token[:1].isalpha() or token[:1] == "["):
        return False
    word = token.rstrip(_CLOSE)
    lower = word.lower().lstrip(_OPEN)
    return (
        word in _SIZES
        or lower in _UNITS
        or lower in _DATE_WORDS
        or lower in _CODE_AFTER
        or (lower in _CODE_WORDS)
    )


_QUALIFIED = re.compile(
    r"(?:[A-Za-z_]\w*\.)+([A-Z]\w*(?:Error|Exception|Warning|Exit|Interrupt|Timeout|Expired"
    r"|Failure|Fault|Cancelled)\W{0,2})"
)
#: What a log line's prefix holds: its timestamp, and its level.
_PREFIX = re.compile(r"[\[(]?(?:<ts>|<date>|<time>|<n>)[\])]?[,:]?")
_LEVEL = re.compile(
    r"[\[(]?(?:DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|CRIT|FATAL|SEVERE|TRACE)[\])]?:?"
)


#: An exception's ``Type:`` among a log line's first tokens, after "…:".
_EXCEPTION = re.compile(
    r"[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Timeout|Expired|Cancelled|Failure|Fault):"
)
_EXCEPTION_WITHIN = 12


def _without_prefix(tokens: list[str]) -> list[str]:
    """The tokens after a log line's timestamp and level (``2026-11-03 14:02:11,532 ERROR``)."""
    i = 0
    while i < len(tokens) - 1 and _PREFIX.fullmatch(tokens[i]) and tokens[i] != "<n>":
        i += 1
        while i < len(tokens) - 1 and _PREFIX.fullmatch(tokens[i]):
            i += 1
    if i < len(tokens) - 1 and _LEVEL.fullmatch(tokens[i]):
        i += 1
    return tokens[i:] if i else tokens


def _classify(token: str) -> tuple[str, bool, bool]:
    """A token's mask, whether it is a unit/month/weekday word (looked at with its neighbours),
    and whether its mask keeps a letter (something constant to group by)."""
    if "." in token and token[:1].isalpha():
        qualified = _QUALIFIED.fullmatch(token)
        if qualified is not None:
            # httpx.HTTPStatusError: -> HTTPStatusError: (a traceback names the module, a log line
            # written with type(e).__name__ does not).
            token = qualified.group(1)
    if _NEEDS_MASK.search(token) is None:
        return token, _is_context_word(token), _LETTER.search(token) is not None
    masked = _mask_token(token)
    if masked[:1] == "<" and masked[-1:] == ">" and masked.count("<") == 1:
        return masked, False, False  # one placeholder
    rest = _PLACEHOLDER.sub("", masked) if "<" in masked else masked
    return masked, _is_context_word(token), _LETTER.search(rest) is not None


_PREFIX_STARTS = frozenset({"<t", "<d", "<n"})
_MASKED, _CONTEXT, _CONSTANT = (operator.itemgetter(i) for i in range(3))


def _split(text: str) -> list[str]:
    """The failure's text (see :func:`failure_text`) in tokens, at most :data:`MAX_TOKENS`."""
    return failure_text(text).split(maxsplit=MAX_TOKENS)[:MAX_TOKENS]


def _tokens(text: str) -> tuple[list[str], bool]:
    """The failure's text (see :func:`failure_text`) as masked tokens, and whether any of them
    keeps a letter."""
    raw = _split(text)
    cache = _cache
    entries = list(map(cache.get, raw))  # most tokens were seen before: a lookup each, in C
    if None in entries:
        for i in itertools.compress(range(len(entries)), map(operator.not_, entries)):
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            entries[i] = cache[raw[i]] = _classify(raw[i])
    known = cast("list[tuple[str, bool, bool]]", entries)
    out = list(map(_MASKED, known))
    if any(map(_CONTEXT, known)):
        _in_context(out, raw, list(itertools.compress(range(len(known)), map(_CONTEXT, known))))
    if out and (out[0][:2] in _PREFIX_STARTS or out[0][:1] in "[(" or out[0][:1].isupper()):
        out = _without_prefix(out)
    for i in range(1, min(len(out), _EXCEPTION_WITHIN)):
        token = out[i]
        if (
            token[-1:] == ":"
            and token[:1].isupper()
            and _EXCEPTION.fullmatch(token)
            and (out[i - 1].endswith(":") or _LEVEL.fullmatch(out[i - 1].upper()))
        ):
            # "giving up: KeyError: 'price'": the exception is the failure, what was written
            # before it is where it was caught.
            out = out[i:]
            break
    return out, any(map(_CONSTANT, known))


def _in_context(tokens: list[str], raw: list[str], positions: list[int]) -> None:
    """Status and exit codes, durations and sizes written as a number and a unit word, dates
    written with month or day names: what the words at ``positions`` (unit, month, weekday and
    code words) make of their neighbours."""
    for i in positions:
        j = i + 1
        if j < len(tokens) and tokens[j][:3] == "<n>" and raw[j].strip(_OPEN + _CLOSE).isdigit():
            word = raw[i].lower().strip(_OPEN + _CLOSE)
            if word in _CODE_AFTER or (
                word in _CODE_WORDS
                and i
                and raw[i - 1].lower().strip(_OPEN + _CLOSE) in _CODE_BEFORE
            ):
                # HTTP 404 is not HTTP 500, exit status 137 (killed) is not exit status 1.
                tokens[j] = raw[j]
    blanked = False
    for i in positions:
        token = tokens[i]
        word = token.rstrip(_CLOSE)
        before = tokens[i - 1] if i else ""
        if before == "<n>" and (word.lower() in _UNITS or word in _SIZES):
            kind = "<dur>" if word.lower() in _UNITS else "<size>"
            tokens[i - 1] = kind + token[len(word) :]
            tokens[i] = ""
            blanked = True
            continue
        word = word.lower()
        if word in _DATE_WORDS:
            after = tokens[i + 1] if i + 1 < len(tokens) else ""
            if (
                before.rstrip(",.;:") in _NUMBERISH
                or after.rstrip(",.;:") in _NUMBERISH
                or after.lower().rstrip(",.;:") in _DATE_WORDS
            ):
                tokens[i] = "<date>" + token[len(token.rstrip(_CLOSE)) :]
    if blanked:
        tokens[:] = [t for t in tokens if t]


def mask(text: str) -> str:
    """The failure's text (see :func:`failure_text`) with its variable parts replaced by typed
    placeholders and its whitespace collapsed."""
    masked = _texts.get(text)
    if masked is not None:
        return masked
    tokens, constant = _tokens(text)
    # Nothing constant left to group by ("E404", "ERR_429"): the literal text is the template.
    masked = " ".join(tokens) if constant else " ".join(_split(text))
    if len(text) <= _CACHED_TEXT_CHARS:
        if len(_texts) >= _CACHE_LIMIT:
            _texts.clear()
        _texts[text] = masked
    return masked


def masks_applied(text: str) -> list[tuple[str, str]]:
    """Which masks matched which tokens of the failure's text: ``(placeholder, token)`` pairs."""
    found = []
    for token in failure_text(text).split(maxsplit=MAX_TOKENS)[:MAX_TOKENS]:
        if _NEEDS_MASK.search(token):
            masked = _mask_token(token)
            if masked != token:
                found.append((masked, token))
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


# --- 3. template clusters ---------------------------------------------------------------------


#: Distinct values at the same word positions that show those positions vary (a family of
#: clusters that differ only there becomes one).
MERGE_EVIDENCE = 4


def _is_placeholder(token: str) -> bool:
    return token.startswith("<") and _PLACEHOLDER.fullmatch(token) is not None


def _shape(token: str) -> str:
    """A token with every placeholder in it made alike: ``rhost=<ip>`` fits ``rhost=<id>``, and an
    empty value fits any (``()`` fits ``(<host>)``)."""
    return _PLACEHOLDER.sub("<*>", token) if "<" in token else token


def _whole_placeholder(shape: str) -> bool:
    return shape.lstrip("([{'\"`").rstrip(")]}'\"`,.;:!?") == "<*>"


def _fits(a: str, b: str) -> bool:
    """Whether template token ``a`` admits token ``b``."""
    if a in (b, VARIABLE):
        return True
    sa, sb = _shape(a), _shape(b)
    if sa == sb:
        return True
    # A token that is one placeholder admits any token holding one ("<ip>," and "LOCAL(<n>),").
    if (_whole_placeholder(sa) and "<*>" in sb) or (_whole_placeholder(sb) and "<*>" in sa):
        return True
    # An empty value where the other has a placeholder: "()" and "(<*>)", "user=" and "user=<*>".
    return sa.replace("<*>", "") == sb or sb.replace("<*>", "") == sa


def _differences(template: Sequence[str], tokens: Sequence[str], limit: int) -> list[int] | None:
    """The positions where ``tokens`` does not fit ``template``; None when more than ``limit``."""
    diff: list[int] = []
    for i, a in enumerate(template):
        b = tokens[i]
        if a in (b, VARIABLE) or _fits(a, b):
            continue
        diff.append(i)
        if len(diff) > limit:
            return None
    return diff


_CONSTANT_CASE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


def _named(token: str) -> bool:
    """Whether a token names something that makes a different failure when it differs: a quoted
    value, or a word in CONSTANT_CASE (an enum value or keyword: ``RUNNING``, ``GET``)."""
    return _quoted(token) or (
        len(token) > 1 and _CONSTANT_CASE.fullmatch(token.strip(",.;:!?()[]{}")) is not None
    )


def _quoted(token: str) -> bool:
    """Whether a token is (part of) a quoted value: what is quoted names a thing, and a different
    thing is a different failure (``KeyError: 'choices'`` is not ``KeyError: 'price'``)."""
    return token[:1] in "'\"`" or token.rstrip(",.;:!?)]}")[-1:] in "'\"`"


def _join(a: str, b: str) -> str:
    """Template token ``a`` generalised to admit ``b`` too."""
    if a == b:
        return a
    sa, sb = _shape(a), _shape(b)
    if sa == sb and a != sa:
        return sa
    if "<*>" in sa and sa.replace("<*>", "") == sb:
        return sa
    if "<*>" in sb and sb.replace("<*>", "") == sa:
        return sb
    return VARIABLE


def generalise(template: Sequence[str], tokens: Sequence[str]) -> tuple[str, ...]:
    """``template`` widened to admit ``tokens`` too (same length): where they differ, the shape
    both share (``rhost=<*>``) or ``<*>``. The stores use it to derive templates again."""
    return tuple(_join(a, b) for a, b in zip(template, tokens, strict=True))


#: Word tokens (not placeholders) a family of clusters must share outside the positions that vary.
MIN_SHARED_WORDS = 2
#: ... when the first token is one of those that vary (a log line usually starts with what it is
#: about, so more must agree to let it vary).
MIN_SHARED_WORDS_HEAD = 4


def _shared_words(tokens: Sequence[str], diff: Sequence[int]) -> int:
    skip = set(diff)
    return sum(
        1
        for i, t in enumerate(tokens)
        if i not in skip
        and any(c.isalpha() for c in t)
        and not _is_placeholder(t.strip(_CLOSE + _OPEN))
    )


def _max_differences(length: int) -> int:
    return max(1, length // 3)


def assign(book: PatternBook, stage: str, text: str) -> Grouping:
    """Group one failure text of ``stage``: find, join or make its cluster in ``book``."""
    return assign_masked(book, stage, mask(text))


_LT = itertools.repeat("<")


def assign_masked(book: PatternBook, stage: str, masked: str) -> Grouping:
    """:func:`assign` for a text already masked with :func:`mask`."""
    stage = stage.strip()
    sig = signature(stage, masked)
    known = book.find(stage, sig)
    if known is not None:
        return Grouping(known.key, known.template, sig, masked, GROUPING_VERSION, "known")
    tokens = tuple(masked.split(" ")) if masked else ("",)
    candidates = book.clusters(stage, len(tokens))
    families: dict[tuple[int, ...], list[Cluster]] = {}
    limit = _max_differences(len(tokens))
    for cluster in candidates:
        # A cheap bound first (both sums run in C): positions that differ, less those where the
        # template holds a placeholder and might still admit the token.
        unequal = len(tokens) - sum(map(operator.eq, cluster.tokens, tokens))
        if unequal - sum(map(operator.contains, cluster.tokens, _LT)) > limit:
            continue
        diff = _differences(cluster.tokens, tokens, limit)
        if diff is None:
            continue
        if not diff:
            before = cluster.tokens
            cluster.tokens = generalise(cluster.tokens, tokens)
            book.save(cluster, sig)
            merged = _absorb(book, candidates, cluster) if cluster.tokens != before else ()
            decision = "merged" if merged else "joined"
            return Grouping(
                cluster.key, cluster.template, sig, masked, GROUPING_VERSION, decision, merged
            )
        if not any(_named(tokens[i]) or _named(cluster.tokens[i]) for i in diff) and _shared_words(
            tokens, diff
        ) >= (MIN_SHARED_WORDS if diff[0] > 0 else MIN_SHARED_WORDS_HEAD):
            families.setdefault(tuple(diff), []).append(cluster)
    for positions, family in families.items():
        members = [c.tokens for c in family] + [tokens]
        # Every varying position must show enough distinct values on its own.
        if all(len({t[i] for t in members}) >= MERGE_EVIDENCE for i in positions):
            target, *others = family
            generalised = target.tokens
            for other in others:
                generalised = generalise(generalised, other.tokens)
            target.tokens = generalise(generalised, tokens)
            book.save(target, sig)
            for other in others:
                book.merge(other, target)
            merged = tuple(o.key for o in others)
            merged += _absorb(book, [c for c in candidates if c not in family], target)
            return Grouping(
                target.key, target.template, sig, masked, GROUPING_VERSION, "merged", merged
            )
    cluster = Cluster(pattern_key(stage, sig), stage, tokens)
    book.save(cluster, sig)
    return Grouping(cluster.key, cluster.template, sig, masked, GROUPING_VERSION, "new")


def _absorb(book: PatternBook, candidates: Sequence[Cluster], target: Cluster) -> tuple[str, ...]:
    """Merge into ``target`` every other cluster its template now admits whole: a cluster made
    before the evidence came, which differs from the family at fewer positions (the same user on
    another host), is the same failure and must not stay apart."""
    absorbed = []
    for cluster in candidates:
        if cluster.key != target.key and _differences(target.tokens, cluster.tokens, 0) == []:
            book.merge(cluster, target)
            absorbed.append(cluster.key)
    return tuple(absorbed)


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
    # An identical masked text always lands where its first occurrence did (merges are followed
    # at the end), so it is looked up here before any hashing.
    seen: dict[str, str] = {}
    for text in texts:
        if not isinstance(text, str):
            raise InvalidInputError(f"group_failures takes texts, got {type(text).__name__}")
        masked = mask(text)
        key = seen.get(masked)
        if key is None:
            key = seen[masked] = assign_masked(book, stage, masked).key
        keys.append(key)
    return [book.resolve(k) for k in keys]
