"""The API boundary: every public function checks its arguments here, against its type hints.

:func:`checked` wraps a public function so that a wrong argument raises
:class:`~rayvault.learning.exceptions.InvalidInputError` naming the argument, before anything is
read or written, instead of a ``TypeError``, a pydantic ``ValidationError`` or a database error
from deep inside. The rules, all derived from the function's annotations:

- ``str``: text only, and text that can be stored as UTF-8 in both stores: a lone surrogate (what
  Python makes of bytes that are not UTF-8 under ``surrogateescape``) or a NUL character
  (PostgreSQL text cannot hold it) is refused, never replaced, so nothing is stored that differs
  from what the caller gave;
- ``int``: an integer, not a bool, within 64 bits (what SQLite and PostgreSQL hold); counts and
  limits (:data:`NON_NEGATIVE`) must not be negative; ``float``: a finite number; ``bool``: a bool;
- lists, sequences and iterables: not text, each item checked (an iterator is read once into a
  list, which the function then receives); mappings: keys and values checked;
- classes, protocols, ``Literal`` and ``Callable``: ``isinstance``, membership, ``callable``;
- ``Any``/``object``: any value, but every text inside it (containers, records) is checked.

Size is not refused here: stored text is cut to the policy caps by :func:`cap_text`, with a marker.
"""

from __future__ import annotations

import collections.abc as cabc
import functools
import math
import types
from collections.abc import Callable

from rayvault.learning.exceptions import InvalidInputError, LearningError

# ``typing``, ``inspect`` and ``logging`` are imported where they are used: a cold
# ``rayvault-learn gate`` imports this module (``checked``, ``shown``) and none of them (issue 15
# item 4). ``@checked`` resolves a function's hints on its first call, with them.
TYPE_CHECKING = False  # typing.TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, ParamSpec, Protocol, TypeVar

    from pydantic import BaseModel

    P = ParamSpec("P")
    R = TypeVar("R")
    M = TypeVar("M", bound="BaseModel")

#: Integer arguments that count or limit something: negative values are refused.
NON_NEGATIVE = frozenset({"limit", "budget", "days", "threshold", "min_count"})
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
#: Nesting deeper than this (in a context mapping, a record) is refused, not recursed into.
MAX_DEPTH = 32
_SHOWN = 60
#: The text fields of a learning event that the size cap applies to.
TEXT_FIELDS = ("run_id", "symptom", "root_cause", "fix_applied", "verification")


def shown(value: object) -> str:
    """``repr(value)``, shortened for an error message (hostile values can be megabytes)."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 1]}… ({len(text)} characters)"


def check_text(value: str, name: str) -> str:
    """``value`` if it can be stored as UTF-8 text on both stores, else InvalidInputError."""
    if "\x00" in value:
        raise InvalidInputError(
            f"{name} contains a NUL character (at position {value.index(chr(0))}); "
            "text cannot hold it — remove it before passing the text"
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidInputError(
                f"{name} is not valid text: lone surrogate {value[e.start]!r} at position "
                f"{e.start} (bytes that are not UTF-8, decoded with surrogateescape)",
                hint="give UTF-8 text: convert it (`iconv -t utf-8`), or decode the bytes "
                "with errors='replace'",
            ) from None
    return value


def check_deep(value: object, name: str, depth: int = 0) -> None:
    """Check every text inside ``value`` (containers, mapping keys, records' fields)."""
    if isinstance(value, str):
        check_text(value, name)
        return
    if value is None or isinstance(value, int | float | bytes):
        return
    if depth >= MAX_DEPTH:
        raise InvalidInputError(f"{name} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, cabc.Mapping):
        for key, item in value.items():
            check_deep(key, name, depth + 1)
            check_deep(item, f"{name}[{shown(key)}]", depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            check_deep(item, name, depth + 1)
    elif hasattr(value, "__pydantic_fields__"):
        for key, item in vars(value).items():
            check_deep(item, f"{name}.{key}", depth + 1)


def cap_text(text: str, limit: int, *, keep_tail: bool = False, kept_at: str | None = None) -> str:
    """``text`` cut to at most ``limit`` characters, with a visible marker saying how long it
    was (and where its full text is kept). ``keep_tail`` keeps its end as well as its start (a
    traceback ends with the failure)."""
    if len(text) <= limit:
        return text
    where = f"; full text: {kept_at}" if kept_at else ""
    marker = f"\n[… truncated by rayvault: {len(text)} characters, cut to {limit}{where} …]\n"
    room = max(limit - len(marker), 0)
    if keep_tail:
        head = room // 2
        return f"{text[:head]}{marker}{text[len(text) - (room - head) :]}"
    return f"{text[:room]}{marker.rstrip()}"


#: The longest name of who did something (``actor`` of the review's actions).
MAX_ACTOR_CHARS = 120


def clean_actor(actor: str | None) -> str | None:
    """Who did a person's action (a user name, as the web app or a script gives it): text of at
    most :data:`MAX_ACTOR_CHARS` characters on one line, stripped; None stays None."""
    if actor is None:
        return None
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidInputError(f"actor must be non-empty text (got {shown(actor)})")
    text = actor.strip()
    if len(text) > MAX_ACTOR_CHARS or any(not c.isprintable() for c in text):
        raise InvalidInputError(
            f"actor must be one printable line of at most {MAX_ACTOR_CHARS} characters "
            f"(got {shown(actor)})"
        )
    return text


# -- checkers compiled from annotations ----------------------------------------------------------


class _Checker:
    """One annotation: ``accepts`` is the cheap shape test a union picks a member with; ``check``
    is the full test, which may return the value converted (an iterator read into a list)."""

    description = "a value"

    def accepts(self, value: object) -> bool:
        return True

    def check(self, value: Any, name: str) -> Any:
        check_deep(value, name)
        return value


class _Text(_Checker):
    description = "text"

    def accepts(self, value: object) -> bool:
        return isinstance(value, str)

    def check(self, value: Any, name: str) -> Any:
        return check_text(value, name)


class _None(_Checker):
    description = "None"

    def accepts(self, value: object) -> bool:
        return value is None

    def check(self, value: Any, name: str) -> Any:
        return value


class _Int(_Checker):
    description = "a whole number"

    def accepts(self, value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def check(self, value: Any, name: str) -> Any:
        low = 0 if name in NON_NEGATIVE else _INT_MIN
        if not low <= value <= _INT_MAX:
            raise InvalidInputError(f"{name} must be between {low} and {_INT_MAX}, got {value}")
        return value


class _Float(_Checker):
    description = "a number"

    def accepts(self, value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    def check(self, value: Any, name: str) -> Any:
        if not math.isfinite(value):
            raise InvalidInputError(f"{name} must be a finite number, got {value}")
        return value


class _Bool(_Checker):
    description = "true or false"

    def accepts(self, value: object) -> bool:
        return isinstance(value, bool)

    def check(self, value: Any, name: str) -> Any:
        return value


class _Instance(_Checker):
    def __init__(self, cls: type, deep: bool) -> None:
        self.cls = cls
        self.deep = deep
        self.description = f"a {cls.__name__}"
        # isinstance() against a runtime protocol (Store) tests every member: ~0.5 ms. A class
        # either has the members or not, so the answer is kept per class.
        self.protocol = getattr(cls, "_is_protocol", False)
        self.known: dict[type, bool] = {}

    def accepts(self, value: object) -> bool:
        if not self.protocol:
            return isinstance(value, self.cls)
        kind = type(value)
        answer = self.known.get(kind)
        if answer is None:
            answer = self.known[kind] = isinstance(value, self.cls)
        return answer

    def check(self, value: Any, name: str) -> Any:
        if self.deep:
            check_deep(value, name)
        return value


class _Callable(_Checker):
    description = "a callable"

    def accepts(self, value: object) -> bool:
        return callable(value)

    def check(self, value: Any, name: str) -> Any:
        return value


class _Literal(_Checker):
    def __init__(self, values: tuple[object, ...]) -> None:
        self.values = values
        self.description = " or ".join(repr(v) for v in values)

    def accepts(self, value: object) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def check(self, value: Any, name: str) -> Any:
        return value


class _Items(_Checker):
    """A list, tuple, sequence or iterable of ``item``; never text itself."""

    def __init__(self, item: _Checker, iterable: bool) -> None:
        self.item = item
        self.iterable = iterable
        self.description = f"a list of {item.description}"

    def accepts(self, value: object) -> bool:
        if isinstance(value, str | bytes | bytearray | cabc.Mapping):
            return False
        return isinstance(value, cabc.Iterable if self.iterable else cabc.Sequence)

    def check(self, value: Any, name: str) -> Any:
        items = value if isinstance(value, cabc.Sequence) else list(value)
        for index, item in enumerate(items):
            label = f"{name}[{index}]"
            if not self.item.accepts(item):
                raise _type_error(label, self.item, item)
            self.item.check(item, label)
        return items


class _Map(_Checker):
    def __init__(self, key: _Checker, value: _Checker) -> None:
        self.key = key
        self.value = value
        self.description = "a mapping"

    def accepts(self, value: object) -> bool:
        return isinstance(value, cabc.Mapping)

    def check(self, value: Any, name: str) -> Any:
        for key, item in value.items():
            if not self.key.accepts(key):
                raise _type_error(f"a key of {name}", self.key, key)
            self.key.check(key, f"a key of {name}")
            label = f"{name}[{shown(key)}]"
            if not self.value.accepts(item):
                raise _type_error(label, self.value, item)
            self.value.check(item, label)
        return value


class _Union(_Checker):
    def __init__(self, members: list[_Checker]) -> None:
        self.members = members
        self.description = " or ".join(m.description for m in members)

    def accepts(self, value: object) -> bool:
        return any(m.accepts(value) for m in self.members)

    def check(self, value: Any, name: str) -> Any:
        for member in self.members:
            if member.accepts(value):
                return member.check(value, name)
        raise _type_error(name, self, value)


def _type_error(name: str, checker: _Checker, value: object) -> InvalidInputError:
    return InvalidInputError(
        f"{name} must be {checker.description}, got {type(value).__name__} {shown(value)}"
    )


_SEQUENCES = (list, tuple, cabc.Sequence, cabc.MutableSequence, cabc.Collection)
_ITERABLES = (cabc.Iterable, cabc.Iterator, set, frozenset, cabc.Set)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)


def compile_annotation(tp: Any) -> _Checker:
    """The checker of one (resolved) annotation."""
    import typing
    from typing import Any, TypeVar

    if tp is Any or tp is object:
        return _Checker()
    if tp is None or tp is type(None):
        return _None()
    if tp is str:
        return _Text()
    if tp is bool:
        return _Bool()
    if tp is int:
        return _Int()
    if tp is float:
        return _Float()
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _Union([compile_annotation(a) for a in args])
    if origin is typing.Literal:
        return _Literal(args)
    if origin is typing.Annotated:
        return compile_annotation(args[0])
    if origin is cabc.Callable or tp is cabc.Callable:
        return _Callable()
    if origin in _MAPPINGS or tp in _MAPPINGS:
        key, value = args if len(args) == 2 else (Any, Any)
        return _Map(compile_annotation(key), compile_annotation(value))
    if origin in _SEQUENCES or origin in _ITERABLES or tp in _SEQUENCES or tp in _ITERABLES:
        if origin is tuple:  # tuple[T, ...] holds Ts; a fixed-shape tuple is checked deeply
            item = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        else:
            item = args[0] if args else Any
        return _Items(compile_annotation(item), iterable=origin in _ITERABLES or tp in _ITERABLES)
    if isinstance(tp, TypeVar):
        return _Checker()
    if isinstance(tp, type):
        if getattr(tp, "_is_protocol", False) and not getattr(tp, "_is_runtime_protocol", False):
            return _Checker()
        return _Instance(tp, deep=hasattr(tp, "__pydantic_fields__"))
    return _Checker()


def _parameter_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The resolved type hints of ``func``'s parameters. The return annotation is left alone: a
    function may return a record its module imports only when it runs (the gate's, so that a
    process that never calls it does not import pydantic)."""
    import inspect
    import sys
    import typing

    annotations = {k: v for k, v in func.__annotations__.items() if k != "return"}
    holder = types.SimpleNamespace(
        __annotations__=annotations, __globals__=inspect.unwrap(func).__globals__
    )
    # A name the module imports only for type checking: one it serves on demand (PEP 562
    # ``__getattr__``: the gate's ``Store``, so that a cold gate does not import it), or one of
    # ``typing``'s (``Any``: modules on the cold gate's path import no ``typing``).
    module = sys.modules.get(func.__module__)
    lazy: dict[str, Any] = {}
    while True:
        try:
            return typing.get_type_hints(holder, localns=lazy)
        except NameError as e:
            if e.name is None or e.name in lazy:
                raise
            found = getattr(module, e.name, None) if module is not None else None
            if found is None:
                found = getattr(typing, e.name, None)
            if found is None:
                raise
            lazy[e.name] = found


class _Plan:
    """The checkers of one function's parameters, by name and by position."""

    def __init__(self, func: Callable[..., Any]) -> None:
        import inspect

        hints = _parameter_hints(func)
        self.by_name: dict[str, _Checker] = {}
        self.positional: list[tuple[str, _Checker]] = []
        self.var_positional: tuple[str, _Checker] | None = None
        self.var_keyword: _Checker | None = None
        kinds = inspect.Parameter
        for name, param in inspect.signature(func).parameters.items():
            checker = compile_annotation(hints.get(name, object))
            if param.kind is kinds.VAR_POSITIONAL:
                self.var_positional = (name, checker)
            elif param.kind is kinds.VAR_KEYWORD:
                self.var_keyword = checker
            else:
                if param.kind is not kinds.KEYWORD_ONLY:
                    self.positional.append((name, checker))
                if param.kind is not kinds.POSITIONAL_ONLY:
                    self.by_name[name] = checker

    def args(self, args: tuple[Any, ...]) -> list[Any]:
        checked_args: list[Any] = []
        for index, value in enumerate(args):
            if index < len(self.positional):
                name, checker = self.positional[index]
            elif self.var_positional is not None:
                name = f"{self.var_positional[0]}[{index - len(self.positional)}]"
                checker = self.var_positional[1]
            else:  # too many arguments: the call itself raises the TypeError
                checked_args.extend(args[index:])
                break
            checked_args.append(_check_one(checker, value, name))
        return checked_args

    def kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        for name, value in kwargs.items():
            checker = self.by_name.get(name, self.var_keyword)
            if checker is not None:  # an unknown name: the call itself raises the TypeError
                kwargs[name] = _check_one(checker, value, name)
        return kwargs


def checked(func: Callable[P, R]) -> Callable[P, R]:
    """Check ``func``'s arguments against its type hints on every call (see the module doc).

    Only the arguments given are checked (defaults are the function's own). The hints are
    resolved on the first call, so decorating costs nothing at import time."""
    plans: list[_Plan] = []

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not plans:
            plans.append(_Plan(func))
        plan = plans[0]
        return func(*plan.args(args), **plan.kwargs(kwargs))

    return wrapper


def _check_one(checker: _Checker, value: object, name: str) -> Any:
    if isinstance(checker, _Union):
        return checker.check(value, name)
    if not checker.accepts(value):
        raise _type_error(name, checker, value)
    return checker.check(value, name)


if TYPE_CHECKING:

    class _FullTextKeeper(Protocol):
        def keep_full_text(self, text: str) -> str: ...

    class _WithDocuments(Protocol):
        """What :func:`keep_capped` needs of a store (named here: this layer is below the
        stores)."""

        @property
        def docs(self) -> _FullTextKeeper: ...


def keep_capped(store: _WithDocuments, text: str, limit: int, *, keep_tail: bool = False) -> str:
    """:func:`cap_text`, keeping the full text once as an attachment under the data root
    (``store.docs.keep_full_text``) when it is cut; the marker names the file. If it cannot be
    written, the text is still cut, and a warning logged."""
    if len(text) <= limit:
        return text
    try:
        kept: str | None = store.docs.keep_full_text(text)
    except (OSError, LearningError) as e:
        import logging

        logging.getLogger("rayvault.learning").warning(
            "full text of %d characters not kept: %s", len(text), e
        )
        kept = None
    return cap_text(text, limit, keep_tail=keep_tail, kept_at=kept)


def cap_deep(value: Any, limit: int) -> Any:
    """``value`` with every text inside it (lists, mappings) cut by :func:`cap_text`."""
    if isinstance(value, str):
        return cap_text(value, limit)
    if isinstance(value, cabc.Mapping):
        return {key: cap_deep(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [cap_deep(item, limit) for item in value]
    return value


def cap_fields(record: M, fields: tuple[str, ...], limit: int) -> M:
    """A copy of the record ``record`` with its text ``fields`` cut by :func:`cap_text` (the record
    itself when none is too long)."""
    update = {
        name: cap_text(text, limit)
        for name in fields
        if isinstance(text := getattr(record, name), str) and len(text) > limit
    }
    return record.model_copy(update=update) if update else record
