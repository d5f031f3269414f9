"""Policy constants of the learning system, and how their effective values are resolved.

The module-level constants are the defaults (the specification's table, plus the configuration the
spec leaves implicit: the stage→agent map, the step-name aliases, where SOUL files and the skill
graph live). A project overrides them, in this order of precedence:

1. ``RAYVAULT_<NAME>`` environment variables (JSON for maps and lists; ``1/0``, ``true/false`` for
   switches);
2. a ``policies.py`` at the data root, holding plain ``NAME = <literal>`` assignments. It is read
   with :mod:`ast`, never executed, so a data root cannot run code in the pipeline;
3. the defaults below, as this module holds them when policies are resolved: a program (or a
   test) that assigns ``rayvault.policies.LEARNING_GATE_ENABLED = False`` at run time, as the
   original system's users did, changes the default from then on.

:func:`load_policies` resolves them once into a frozen :class:`Policies`; the learning gate
compares these *effective* values between runs, so it can say which constant changed.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from rayvault.learning._hash import sha256_hex

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    import ast
    from typing import Any

# -- the specification's constants -------------------------------------------------------------
#: Master switch of the learning gate (``RAYVAULT_SKIP_LEARNING_GATE=1`` also turns it off).
LEARNING_GATE_ENABLED = True
#: Look-back window of the weekly revisit, in days.
LEARNING_REVISIT_INTERVAL_DAYS = 7
#: Days a memory snapshot (``memory_archive/``) is kept before it is pruned.
LEARNING_ARCHIVE_RETENTION_DAYS = 90
#: Active rules an agent keeps; over it the INFO/WARN rule applied least recently is evicted
#: (FAIL and BLOCKER rules never are).
LEARNING_MAX_ACTIVE_RULES_PER_AGENT = 50
#: Successes (attempts that carried the rule and succeeded) that make a rule a SOUL promotion
#: candidate; for rules without counters (written by the original system), applications.
LEARNING_PROMOTION_THRESHOLD_OCCURRENCES = 2
#: Days a tombstone stays in the tombstone list before the revisit's sweep archives it.
LEARNING_TOMBSTONE_GRACE_DAYS = 30

# -- configuration with the specification's values as defaults ---------------------------------
#: Occurrences of one fingerprint in a stage (with some unresolved) that make it a known failure.
LEARNING_KNOWN_FAILURE_THRESHOLD = 3
#: Gate stage → the agent that runs it (the spec's table, plus render and publish).
LEARNING_STAGE_AGENTS: Mapping[str, str] = MappingProxyType(
    {
        "research": "researcher",
        "script": "scriptwriter",
        "script-brief": "scriptwriter",
        "script-review": "reviewer",
        "assets": "dzine_producer",
        "tts": "publisher",
        "manifest": "davinci_editor",
        "day": "market_scout",
        "render": "davinci_editor",
        "publish": "publisher",
    }
)
#: Pipeline step names → the gate stage they belong to.
LEARNING_STAGE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "discover-products": "research",
        "research-products": "research",
        "verify-products": "research",
        "generate-script": "script",
        "write-script": "script",
        "script-write": "script",
        "brief": "script-brief",
        "review-script": "script-review",
        "generate-assets": "assets",
        "generate-images": "assets",
        "dzine": "assets",
        "generate-tts": "tts",
        "voiceover": "tts",
        "build-manifest": "manifest",
        "render-video": "render",
        "davinci": "render",
        "upload": "publish",
        "daily": "day",
    }
)
#: Where an agent's SOUL file is looked for, relative to the data root; the first that exists wins.
LEARNING_SOUL_PATHS: tuple[str, ...] = ("agents/{agent}/SOUL.md", "agents/team/SOUL_{agent}.md")
#: Folder of the skill graph's learning notes, relative to the data root.
LEARNING_SKILL_GRAPH_DIR = "agents/skills/learnings"
#: Newest entries kept in the skill graph's ``_index.md``; older ones move to ``_index-archive.md``.
#: The map is rewritten on every event, so its size is part of every event's cost.
LEARNING_SKILL_INDEX_MAX_ENTRIES = 50
#: Character budget of the rules block rendered into an agent's prompt.
LEARNING_RULES_RENDER_BUDGET = 4000
#: Gate check → level: ``deny`` (blocks, exit 2) or ``warn`` (reported, exit 0). A value may be a
#: map of gate stage → level (``"*"``: the other stages). ``check_known_failures`` at ``deny``
#: denies only a recurring FAIL/BLOCKER failure with no active rule learned from it; its other
#: recurring failures are warnings. An override names only the checks it changes.
LEARNING_GATE_LEVELS: Mapping[str, str | Mapping[str, str]] = MappingProxyType(
    {
        "check_diff_policies": "deny",
        "check_diff_soul": "deny",
        "check_regressions": "deny",
        "check_known_failures": "deny",
    }
)
#: Longest text (characters) kept in one field of an event, a rule, a resolution or a tombstone;
#: longer text is cut with a visible marker, so no record's size grows every later write's cost.
LEARNING_MAX_TEXT_CHARS = 4000
#: Longest error text kept in an error-log entry; a longer one keeps its start and its end.
LEARNING_MAX_ERROR_TEXT_CHARS = 20_000
#: Which rule of an unresolved conflicting pair ``render_rules`` delivers: ``newer`` (the one
#: learned last) or ``severe`` (the more severe, the newer on a tie). The other is held back.
LEARNING_CONFLICT_PREFERENCE = "newer"
CONFLICT_PREFERENCES = ("newer", "severe")
#: Deliveries (``run_stage`` attempts whose prompt carried a rule) before its efficacy is judged:
#: fewer say too little, so a rule below this is never flagged ineffective.
LEARNING_EFFICACY_MIN_DELIVERIES = 5
#: Share of a rule's deliveries that still failed with its own pattern (``recurrences /
#: deliveries``, in (0, 1]) at or above which the rule is flagged *ineffective*: shown in
#: ``memory show``, the revisit, the weekly report and as a gate warning; never removed.
LEARNING_EFFICACY_MAX_RECURRENCE_RATE = 0.5

POLICY_NAMES: tuple[str, ...] = (
    "LEARNING_GATE_ENABLED",
    "LEARNING_REVISIT_INTERVAL_DAYS",
    "LEARNING_ARCHIVE_RETENTION_DAYS",
    "LEARNING_MAX_ACTIVE_RULES_PER_AGENT",
    "LEARNING_PROMOTION_THRESHOLD_OCCURRENCES",
    "LEARNING_TOMBSTONE_GRACE_DAYS",
    "LEARNING_KNOWN_FAILURE_THRESHOLD",
    "LEARNING_STAGE_AGENTS",
    "LEARNING_STAGE_ALIASES",
    "LEARNING_SOUL_PATHS",
    "LEARNING_SKILL_GRAPH_DIR",
    "LEARNING_SKILL_INDEX_MAX_ENTRIES",
    "LEARNING_RULES_RENDER_BUDGET",
    "LEARNING_GATE_LEVELS",
    "LEARNING_MAX_TEXT_CHARS",
    "LEARNING_MAX_ERROR_TEXT_CHARS",
    "LEARNING_CONFLICT_PREFERENCE",
    "LEARNING_EFFICACY_MIN_DELIVERIES",
    "LEARNING_EFFICACY_MAX_RECURRENCE_RATE",
)
POLICIES_FILENAME = "policies.py"
ENV_PREFIX = "RAYVAULT_"
_ENV_VARS = tuple(ENV_PREFIX + name for name in POLICY_NAMES)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# Counts and windows that must be at least this much to make sense.
_MINIMUMS = {
    "LEARNING_REVISIT_INTERVAL_DAYS": 1,
    "LEARNING_ARCHIVE_RETENTION_DAYS": 0,
    "LEARNING_MAX_ACTIVE_RULES_PER_AGENT": 1,
    "LEARNING_PROMOTION_THRESHOLD_OCCURRENCES": 1,
    "LEARNING_TOMBSTONE_GRACE_DAYS": 0,
    "LEARNING_KNOWN_FAILURE_THRESHOLD": 1,
    "LEARNING_SKILL_INDEX_MAX_ENTRIES": 1,
    "LEARNING_RULES_RENDER_BUDGET": 80,
    "LEARNING_MAX_TEXT_CHARS": 200,
    "LEARNING_MAX_ERROR_TEXT_CHARS": 200,
    "LEARNING_EFFICACY_MIN_DELIVERIES": 1,
}


#: The constants whose default is read from the module when a :class:`Policies` is made.
_MAP_DEFAULTS = frozenset(
    {"LEARNING_STAGE_AGENTS", "LEARNING_STAGE_ALIASES", "LEARNING_GATE_LEVELS"}
)


class PolicyError(Exception):
    """An override cannot be used (wrapped into ``ConfigError`` by the learning package)."""


class Policies:
    """The effective policy values for one data root (defaults + policies.py + environment).

    Frozen, compared and shown as the frozen dataclass it was (``sources``, ``file`` and
    ``file_sha256`` take no part in comparisons): a plain class because a cold
    ``rayvault-learn gate`` loads the policies and must not import ``dataclasses`` (issue 15
    item 4)."""

    __slots__ = (*POLICY_NAMES, "sources", "file", "file_sha256")

    LEARNING_GATE_ENABLED: bool
    LEARNING_REVISIT_INTERVAL_DAYS: int
    LEARNING_ARCHIVE_RETENTION_DAYS: int
    LEARNING_MAX_ACTIVE_RULES_PER_AGENT: int
    LEARNING_PROMOTION_THRESHOLD_OCCURRENCES: int
    LEARNING_TOMBSTONE_GRACE_DAYS: int
    LEARNING_KNOWN_FAILURE_THRESHOLD: int
    LEARNING_STAGE_AGENTS: Mapping[str, str]
    LEARNING_STAGE_ALIASES: Mapping[str, str]
    LEARNING_SOUL_PATHS: tuple[str, ...]
    LEARNING_SKILL_GRAPH_DIR: str
    LEARNING_SKILL_INDEX_MAX_ENTRIES: int
    LEARNING_RULES_RENDER_BUDGET: int
    LEARNING_GATE_LEVELS: Mapping[str, str | Mapping[str, str]]
    LEARNING_MAX_TEXT_CHARS: int
    LEARNING_MAX_ERROR_TEXT_CHARS: int
    LEARNING_CONFLICT_PREFERENCE: str
    LEARNING_EFFICACY_MIN_DELIVERIES: int
    LEARNING_EFFICACY_MAX_RECURRENCE_RATE: float
    #: Which constants were overridden, and where (``policies.py`` or ``env RAYVAULT_NAME``).
    sources: Mapping[str, str]
    #: The policies file that was read, and the SHA-256 of its bytes (None when there is none).
    file: Path | None
    file_sha256: str | None

    def __init__(  # noqa: PLR0917 (the dataclass's signature: each field by position too)
        self,
        LEARNING_GATE_ENABLED: bool = LEARNING_GATE_ENABLED,
        LEARNING_REVISIT_INTERVAL_DAYS: int = LEARNING_REVISIT_INTERVAL_DAYS,
        LEARNING_ARCHIVE_RETENTION_DAYS: int = LEARNING_ARCHIVE_RETENTION_DAYS,
        LEARNING_MAX_ACTIVE_RULES_PER_AGENT: int = LEARNING_MAX_ACTIVE_RULES_PER_AGENT,
        LEARNING_PROMOTION_THRESHOLD_OCCURRENCES: int = LEARNING_PROMOTION_THRESHOLD_OCCURRENCES,
        LEARNING_TOMBSTONE_GRACE_DAYS: int = LEARNING_TOMBSTONE_GRACE_DAYS,
        LEARNING_KNOWN_FAILURE_THRESHOLD: int = LEARNING_KNOWN_FAILURE_THRESHOLD,
        LEARNING_STAGE_AGENTS: Mapping[str, str] | None = None,
        LEARNING_STAGE_ALIASES: Mapping[str, str] | None = None,
        LEARNING_SOUL_PATHS: tuple[str, ...] = LEARNING_SOUL_PATHS,
        LEARNING_SKILL_GRAPH_DIR: str = LEARNING_SKILL_GRAPH_DIR,
        LEARNING_SKILL_INDEX_MAX_ENTRIES: int = LEARNING_SKILL_INDEX_MAX_ENTRIES,
        LEARNING_RULES_RENDER_BUDGET: int = LEARNING_RULES_RENDER_BUDGET,
        LEARNING_GATE_LEVELS: Mapping[str, str | Mapping[str, str]] | None = None,
        LEARNING_MAX_TEXT_CHARS: int = LEARNING_MAX_TEXT_CHARS,
        LEARNING_MAX_ERROR_TEXT_CHARS: int = LEARNING_MAX_ERROR_TEXT_CHARS,
        LEARNING_CONFLICT_PREFERENCE: str = LEARNING_CONFLICT_PREFERENCE,
        LEARNING_EFFICACY_MIN_DELIVERIES: int = LEARNING_EFFICACY_MIN_DELIVERIES,
        LEARNING_EFFICACY_MAX_RECURRENCE_RATE: float = LEARNING_EFFICACY_MAX_RECURRENCE_RATE,
        sources: Mapping[str, str] | None = None,
        file: Path | None = None,
        file_sha256: str | None = None,
    ) -> None:
        # The maps' defaults are the module's maps when the instance is made (as the
        # dataclass's default factories read them).
        module = globals()
        given = locals()
        put = object.__setattr__
        for name in POLICY_NAMES:
            value = given[name]
            if value is None and name in _MAP_DEFAULTS:
                value = module[name]
            put(self, name, value)
        put(self, "sources", {} if sources is None else sources)
        put(self, "file", file)
        put(self, "file_sha256", file_sha256)

    def __setattr__(self, name: str, value: Any) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in POLICY_NAMES)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Policies)
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Policies({shown})"

    def values(self) -> dict[str, Any]:
        """The effective constants as plain JSON-ready values (maps as dicts, tuples as lists)."""
        return {name: _plain(getattr(self, name)) for name in POLICY_NAMES}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _coerce(name: str, value: Any, origin: str) -> Any:
    """Check an override against the type of its default; return it in the default's shape."""
    if name == "LEARNING_GATE_LEVELS":
        return _gate_levels(_maybe_json(value), origin)
    default = getattr(Policies(), name)
    problem: str | None = None
    if isinstance(default, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        if isinstance(value, bool):
            return value
        problem = "expected true or false"
    elif isinstance(default, float):
        return _rate(name, value, origin)
    elif isinstance(default, int):
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                problem = "expected an integer"
        if problem is None:
            if isinstance(value, bool) or not isinstance(value, int):
                problem = "expected an integer"
            elif value < _MINIMUMS.get(name, 0):
                problem = f"must be at least {_MINIMUMS.get(name, 0)}"
            else:
                return value
    elif isinstance(default, Mapping):
        value = _maybe_json(value)
        if isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return MappingProxyType(dict(value))
        problem = "expected a mapping of names to names"
    elif isinstance(default, tuple):
        value = _maybe_json(value)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        problem = "expected a non-empty list of strings"
    elif name == "LEARNING_CONFLICT_PREFERENCE":
        if isinstance(value, str) and value.strip().lower() in CONFLICT_PREFERENCES:
            return value.strip().lower()
        problem = f"expected one of {', '.join(CONFLICT_PREFERENCES)}"
    elif isinstance(default, str):
        if isinstance(value, str) and value.strip():
            return value.strip()
        problem = "expected a non-empty string"
    raise PolicyError(f"{name} from {origin} is {value!r}: {problem}")


def _rate(name: str, value: Any, origin: str) -> float:
    """A share in (0, 1]: a number, or its text (``"0.5"``); never a bool."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise PolicyError(f"{name} from {origin} is {value!r}: expected a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"{name} from {origin} is {value!r}: expected a number")
    if not 0 < value <= 1:
        raise PolicyError(f"{name} from {origin} is {value!r}: must be in (0, 1]")
    return float(value)


GATE_LEVELS = ("deny", "warn")


def _gate_levels(value: Any, origin: str) -> Mapping[str, Any]:
    """``{check: level | {stage: level}}`` merged over the defaults (check names may drop their
    ``check_`` prefix; levels are ``deny`` or ``warn``)."""
    where = f"LEARNING_GATE_LEVELS from {origin}"
    if not isinstance(value, dict):
        raise PolicyError(f"{where} is {value!r}: expected a mapping of gate check to level")
    levels: dict[str, Any] = dict(LEARNING_GATE_LEVELS)
    for key, level in value.items():
        check = key if str(key).startswith("check_") else f"check_{key}"
        if check not in LEARNING_GATE_LEVELS:
            raise PolicyError(
                f"{where}: unknown gate check {key!r} (known: {', '.join(LEARNING_GATE_LEVELS)})"
            )
        by_stage = level if isinstance(level, dict) else {"*": level}
        for stage, one in by_stage.items():
            if not isinstance(stage, str) or not stage or one not in GATE_LEVELS:
                raise PolicyError(
                    f"{where}: {key} → {stage!r}: {one!r} is not a level (deny or warn)"
                )
        levels[check] = level if isinstance(level, str) else MappingProxyType(dict(level))
    return MappingProxyType(levels)


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in "[{":
        import json

        try:
            return json.loads(value)
        except ValueError as e:
            raise PolicyError(f"not valid JSON: {value!r} ({e})") from e
    return value


def read_policies_file(path: Path) -> tuple[dict[str, Any], str]:
    """The learning constants assigned in a policies file, and the SHA-256 of its bytes.

    Only top-level ``NAME = <literal>`` assignments of known constants are taken; other statements
    (a real project's policies.py holds many unrelated constants) are ignored.
    """
    import ast  # here: only a root with a policies file parses one

    try:
        data = path.read_bytes()
    except OSError as e:
        raise PolicyError(f"{path} cannot be read: {e.strerror or e}") from e
    digest = sha256_hex(data)
    try:
        tree = ast.parse(data, filename=str(path))
    except SyntaxError as e:
        raise PolicyError(f"{path} is not valid Python: {e.msg} (line {e.lineno})") from e
    found: dict[str, Any] = {}
    for node in tree.body:
        targets: list[ast.expr]
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in POLICY_NAMES:
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError as e:
                    raise PolicyError(
                        f"{path}:{node.lineno}: {target.id} must be a plain literal "
                        "(number, string, True/False, list or dict)"
                    ) from e
    return found, digest


def _frozen(value: Any) -> Any:
    """A hashable image of a constant's value for the cache key. A dict, list or set assigned
    at run time may be changed in place, so its content counts; other maps stand for themselves
    by identity (a hit is confirmed by identity, see ``load_policies``)."""
    if isinstance(value, dict):
        return (dict, tuple((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | set):
        return (type(value), tuple(_frozen(v) for v in value))
    if isinstance(value, Mapping):
        return (id, id(value))
    return value


def _module_defaults() -> tuple[tuple[Any, ...], tuple[Any, ...] | None]:
    """The defaults as this module holds them now, in ``POLICY_NAMES`` order (read by name: a
    constant added to the list needs nothing here), and their cache key (None while none was
    reassigned: the usual case costs one identity test per constant)."""
    namespace = globals()
    values = tuple(namespace[name] for name in POLICY_NAMES)
    if all(map(operator.is_, values, _ORIGINAL_DEFAULTS)):
        return values, None
    return values, tuple(map(_frozen, values))


#: Resolved policies by key, with the module's default values they were resolved from.
_cache: dict[tuple[Any, ...], tuple[tuple[Any, ...], Policies]] = {}


def load_policies(root: Path | str | None = None) -> Policies:
    """Resolve the effective policies for the data root ``root`` (default: the current directory).

    Cached on the policies file's size and mtime, on the ``RAYVAULT_LEARNING_*`` environment and
    on the values of this module's constants, so calling it on every operation costs a ``stat``.
    """
    base = str(root) if root is not None else os.getcwd()
    path = os.path.join(base, POLICIES_FILENAME)
    try:
        st = os.stat(path)
        file_key: tuple[Any, ...] = (st.st_size, st.st_mtime_ns, st.st_ino)
    except FileNotFoundError:
        file_key = ()
    get = os.environ.get
    env = tuple((var, get(var)) for var in _ENV_VARS)
    defaults, defaults_key = _module_defaults()
    key = (base, file_key, env, defaults_key)
    try:
        cached, cacheable = _cache.get(key), True
    except TypeError:  # an unhashable value assigned to a constant: resolved without the cache
        cached, cacheable = None, False
    # Maps enter the key by identity: a hit counts only if they are the very same objects.
    if cached is not None and all(a is b for a, b in zip(cached[0], defaults, strict=True)):
        return cached[1]

    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    digest: str | None = None
    for name, value, original in zip(POLICY_NAMES, defaults, _ORIGINAL_DEFAULTS, strict=True):
        if value is not original and value != original:
            overrides[name] = _coerce(name, value, f"rayvault.policies.{name}")
            sources[name] = "rayvault.policies"
    if file_key:
        from_file, digest = read_policies_file(Path(path))
        for name, value in from_file.items():
            overrides[name] = _coerce(name, value, str(path))
            sources[name] = POLICIES_FILENAME
    for var, raw in env:
        if raw is None:
            continue
        name = var[len(ENV_PREFIX) :]
        overrides[name] = _coerce(name, raw, f"environment variable {var}")
        sources[name] = f"env {var}"
    policies = Policies(
        **overrides, sources=sources, file=Path(path) if file_key else None, file_sha256=digest
    )
    if len(_cache) > 64:
        _cache.clear()
    if cacheable:
        _cache[key] = (defaults, policies)
    return policies


#: The defaults as this module defined them (a run-time assignment is told apart from them).
_ORIGINAL_DEFAULTS: tuple[Any, ...] = tuple(globals()[name] for name in POLICY_NAMES)


def reset_policies_cache() -> None:
    """Forget resolved policies (tests call this between cases)."""
    _cache.clear()
