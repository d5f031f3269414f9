"""The web app: pages and actions over one store (docs/web.md lists them with their URLs).

Pages read through the store's indexed queries (the event list asks for one page of events,
newest first, and counts the matches: never every event). Actions are POSTs that call the
library (``resolve_events``, ``tombstone_rule``, ``promote_rule``, ``acknowledge``) with the
actor, then redirect to a page (POST-redirect-GET). No GET changes anything: the reads that
could write are asked not to (the overview is ``revisit(dry_run=True)``, a batch's confirmation
``resolve_events`` without ``apply``, the gate page the read-only single checks). They run on
the store itself, not a ``read_only()`` view: a read-only file store keeps its index in memory,
per thread, rebuilt from the event log by each of the server's threads (seconds at 100k events).
"""

from __future__ import annotations

import difflib
import getpass
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rayvault.learning._ids import validate_identifier
from rayvault.learning.exceptions import (
    ErrorEntryNotFoundError,
    EventNotFoundError,
    InvalidIdentifierError,
    InvalidInputError,
    LearningError,
    RuleNotFoundError,
    SoulFileNotFoundError,
)
from rayvault.web import security

if TYPE_CHECKING:
    import jinja2

    from rayvault.learning.models import LearningEvent, Rule
    from rayvault.learning.store import Store
    from rayvault.learning.store.base import EventQuery

STATIC = Path(__file__).with_name("static")
#: Events per page of the event list (``?limit=`` up to :data:`MAX_PAGE`).
PAGE = 50
MAX_PAGE = 200
#: The event list counts its matches up to this many ("more than 1,000"): a count costs a walk
#: of the matches, which must not grow with the history.
COUNT_CAP = 1_000
#: Videos per page of the gate matrix.
GATE_VIDEOS = 100
#: Patterns listed on the patterns page (most frequent first).
PATTERNS_SHOWN = 200
#: The fixed messages a redirect after an action may show (``?done=``).
DONE = {
    "resolved": "Resolved.",
    "batch": "The events listed were resolved.",
    "tombstoned": "The rule was tombstoned.",
    "promoted": "The rule was promoted to the SOUL file.",
    "acked": "The gate change was acknowledged.",
}
EVENT_FILTERS = (
    "component",
    "severity",
    "status",
    "video",
    "agent",
    "date_from",
    "date_to",
    "pattern",
)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a container)
        return "unknown"


@dataclass
class Settings:
    """How the app runs (the ``serve`` command's options)."""

    store: Store
    read_only: bool = False
    #: Who the actions are recorded as, unless ``user_header`` names a header a request carries.
    user: str = field(default_factory=_os_user)
    #: A header set by an authenticating proxy with the user's name (e.g. ``X-Forwarded-User``).
    user_header: str | None = None
    #: Required from every non-loopback client when set (``RAYVAULT_WEB_TOKEN``).
    token: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class HttpError(Exception):
    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


# -- the app -------------------------------------------------------------------------------------
def create_app(settings: Settings) -> Starlette:
    """The ASGI app over ``settings.store``."""
    env = _environment()

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        page = env.get_template(name).render(
            request=request,
            settings=settings,
            csrf=settings.csrf,
            links=True,
            who=actor(request, settings),
            done=DONE.get(request.query_params.get("done", "")),
            **context,
        )
        return HTMLResponse(page, status_code=status)

    def page(
        handler: Callable[[Request, Settings], tuple[str, dict[str, Any]]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                name, context = await run_in_threadpool(handler, request, settings)
            except HttpError as e:
                return render(request, "error.html", e.status, message=e.message, hint=e.hint)
            except LearningError as e:
                status = _status(e)
                return render(request, "error.html", status, message=str(e), hint=e.hint)
            return render(request, name, **context)

        return endpoint

    def action(
        handler: Callable[[Request, Settings, Mapping[str, str]], str | tuple[str, dict[str, Any]]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if settings.read_only:
                return render(
                    request,
                    "error.html",
                    403,
                    message="This server is read-only (--read-only): it takes no action.",
                    hint=None,
                )
            form = await request.form()
            values = {k: v for k, v in form.items() if isinstance(v, str)}
            given = values.get(security.CSRF_FIELD) or request.headers.get(security.CSRF_HEADER)
            if not security.same(given, settings.csrf):
                return render(
                    request,
                    "error.html",
                    403,
                    message="Refused: this form carries no valid CSRF token.",
                    hint="reload the page and submit the form again",
                )
            try:
                outcome = await run_in_threadpool(handler, request, settings, values)
            except HttpError as e:
                return render(request, "error.html", e.status, message=e.message, hint=e.hint)
            except LearningError as e:
                return render(request, "error.html", _status(e), message=str(e), hint=e.hint)
            if isinstance(outcome, str):
                return RedirectResponse(outcome, status_code=303)
            name, context = outcome
            return render(request, name, **context)

        return endpoint

    routes = [
        Route("/", page(overview_page)),
        Route("/events", page(events_page)),
        Route("/events/resolve", page(batch_confirm_page), methods=["GET"]),
        Route("/events/resolve", action(batch_resolve), methods=["POST"]),
        Route("/events/{event_id}", page(event_page)),
        Route("/events/{event_id}/resolve", action(resolve_one), methods=["POST"]),
        Route("/patterns", page(patterns_page)),
        Route("/patterns/{fingerprint}", page(pattern_page)),
        Route("/agents", page(agents_page)),
        Route("/agents/{agent}", page(agent_page)),
        Route(
            "/agents/{agent}/rules/{rule_id}/tombstone", action(tombstone_action), methods=["POST"]
        ),
        Route("/agents/{agent}/rules/{rule_id}/promote", page(promote_page), methods=["GET"]),
        Route("/agents/{agent}/rules/{rule_id}/promote", action(promote_action), methods=["POST"]),
        Route("/gate", page(gate_page)),
        Route("/gate/{video_id}/{stage}", page(gate_cell_page)),
        Route("/gate/{video_id}/{stage}/ack", action(ack_action), methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(_Guard, settings=settings, render=render)]
    )


def _status(error: LearningError) -> int:
    if isinstance(error, InvalidIdentifierError | InvalidInputError):
        return 400
    if isinstance(
        error,
        EventNotFoundError | RuleNotFoundError | SoulFileNotFoundError | ErrorEntryNotFoundError,
    ):
        return 404
    return 500


class _Guard(BaseHTTPMiddleware):
    """The token for non-loopback clients, cross-site POSTs, and the security headers."""

    def __init__(self, app: Any, settings: Settings, render: Callable[..., HTMLResponse]) -> None:
        super().__init__(app)
        self.settings, self.render = settings, render

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        token = self.settings.token
        client = request.client.host if request.client else None
        if token and not security.is_loopback(client):
            given = (
                security.bearer(request.headers.get("authorization"))
                or request.cookies.get(security.TOKEN_COOKIE)
                or request.query_params.get("token")
            )
            if not security.same(given, token):
                return PlainTextResponse(
                    "401: this server needs its token (RAYVAULT_WEB_TOKEN): open it once with "
                    "?token=…, or send Authorization: Bearer …\n",
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if request.query_params.get("token") and request.method == "GET":
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                response: Response = RedirectResponse(target, status_code=303)
                response.set_cookie(security.TOKEN_COOKIE, token, httponly=True, samesite="strict")
                return response
        if request.method == "POST":
            origin = request.headers.get("origin")
            host = request.headers.get("host", "")
            if origin and origin != "null" and origin.split("://", 1)[-1] != host:
                return PlainTextResponse("403: refused a POST from another site\n", status_code=403)
        elif request.method not in ("GET", "HEAD"):
            return PlainTextResponse("405: method not allowed\n", status_code=405)
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", security.CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response


def _environment() -> jinja2.Environment:
    import jinja2

    from rayvault.learning._report_html import add_helpers

    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.PackageLoader("rayvault.web", "templates"),
                jinja2.PackageLoader("rayvault.learning", "templates"),
            ]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    add_helpers(env)
    env.filters["qs"] = lambda params: urlencode({k: v for k, v in params.items() if v})
    env.globals["PAGE"] = PAGE
    return env


def actor(request: Request, settings: Settings) -> str:
    """Who does this request's action: the proxy's header when configured and given, else the
    ``--user`` (default the OS user)."""
    if settings.user_header:
        value = request.headers.get(settings.user_header, "").strip()
        if value:
            return value
    return settings.user


# -- overview ------------------------------------------------------------------------------------
def overview_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    """The weekly report, live: the revisit's report for the window chosen, written nowhere."""
    from rayvault.learning.revisit import revisit

    store = s.store
    days = _int(request, "days", store.policies.LEARNING_REVISIT_INTERVAL_DAYS, 1, 3660)
    scope = request.query_params.get("scope") or "all"
    if scope != "all":
        validate_identifier(scope, "agent")
    report = revisit(scope, days, dry_run=True, store=s.store).report
    agents = sorted(report.agent_summaries)
    return "overview.html", {"report": report, "days": days, "scope": scope, "agents": agents}


# -- events --------------------------------------------------------------------------------------
def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be a whole number (got {raw!r})") from None
    if not low <= value <= high:
        raise HttpError(400, f"{name} must be between {low} and {high} (got {value})")
    return value


def _filters(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "").strip() for k in EVENT_FILTERS}


def event_query(store: Store, filters: Mapping[str, str]) -> EventQuery:
    """The store query of the event list's filters (validated as the CLI validates them)."""
    from rayvault.learning.events import build_query
    from rayvault.learning.registry import agent_query, to_datetime

    video = filters.get("video") or None
    agent = filters.get("agent") or None
    if video is not None:
        validate_identifier(video, "video id")
    query = build_query(
        store,
        video_id=video,
        component=filters.get("component") or None,
        severity=filters.get("severity") or None,
        status=filters.get("status") or None,
        fingerprint=filters.get("pattern") or None,
        date_from=to_datetime(filters.get("date_from") or None, "date_from"),
        date_to=to_datetime(filters.get("date_to") or None, "date_to", end_of_day=True),
    )
    if agent is not None:
        query = replace(query, agent_or_components=agent_query(agent, store).agent_or_components)
    return query


def events_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    """One page of the events matching the filters, newest first. The page after is asked for
    with ``before`` (the last timestamp shown) and ``skip`` (how many events of that timestamp
    were shown): a keyset on the store's (timestamp, sequence) index, as fast on page 1000 as
    on page 1."""
    from rayvault.learning._time import format_ts, parse_ts

    store = s.store
    filters = _filters(request)
    query = event_query(store, filters)
    limit = _int(request, "limit", PAGE, 1, MAX_PAGE)
    skip = _int(request, "skip", 0, 0, 10**6)
    before_text = request.query_params.get("before") or ""
    if before_text:
        try:
            before = parse_ts(before_text)
        except (ValueError, TypeError):
            raise HttpError(400, f"before must be a timestamp (got {before_text!r})") from None
        if query.date_to is None or before < query.date_to:
            query = replace(query, date_to=before)
    counted = query if not before_text else event_query(store, filters)
    total = store.count_events(replace(counted, limit=COUNT_CAP + 1))
    rows = store.query_events(replace(query, newest_first=True, limit=limit + skip))[skip:]
    more = None
    if len(rows) == limit:
        last = rows[-1].timestamp
        same_ts = sum(1 for e in rows if e.timestamp == last)
        carried = skip if before_text and query.date_to == last else 0
        more = {**filters, "before": format_ts(last), "skip": str(same_ts + carried)}
        if limit != PAGE:
            more["limit"] = str(limit)
    context = {
        "filters": filters,
        "events": rows,
        "total": min(total, COUNT_CAP),
        "capped": total > COUNT_CAP,
        "more": more,
        "first_page": not before_text,
        "batch": _batch_selection(filters),
    }
    partial = request.headers.get("hx-request") == "true"
    return ("_events_results.html" if partial else "events.html"), context


def _batch_selection(filters: Mapping[str, str]) -> dict[str, str] | None:
    """The filters as ``resolve_events`` takes them, or None when the list uses a filter it does
    not (status, agent, a start date) or none at all."""
    if any(filters.get(k) for k in ("status", "agent", "date_from")):
        return None
    chosen = {k: filters[k] for k in ("component", "severity", "video", "pattern") if filters[k]}
    if filters.get("date_to"):
        chosen["date_to"] = filters["date_to"]
    return chosen or None


def _resolve_kwargs(values: Mapping[str, str]) -> dict[str, Any]:
    from rayvault.learning.registry import to_datetime

    kwargs: dict[str, Any] = {
        "component": values.get("component") or None,
        "severity": values.get("severity") or None,
        "video_id": values.get("video") or None,
        "pattern": values.get("pattern") or None,
    }
    if values.get("date_to"):
        end = to_datetime(values["date_to"], "date_to", end_of_day=True)
        assert end is not None
        kwargs["before"] = end + timedelta(microseconds=1)
    return kwargs


def batch_confirm_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    """What resolving every open event of the filters would change (a dry run)."""
    from rayvault.learning.resolution import resolve_events

    filters = _filters(request)
    selection = _batch_selection(filters)
    if selection is None:
        raise HttpError(
            400,
            "a batch is chosen by component, severity, video, pattern and an end date only",
            hint="remove the status, agent and start-date filters",
        )
    plan = resolve_events(**_resolve_kwargs(selection), store=s.store)
    return "batch.html", {"plan": plan, "selection": selection, "filters": filters}


def batch_resolve(request: Request, s: Settings, values: Mapping[str, str]) -> str:
    from rayvault.learning.resolution import resolve_events

    selection = {k: values.get(k, "") for k in ("component", "severity", "video", "pattern")}
    selection["date_to"] = values.get("date_to", "")
    kwargs = _resolve_kwargs(selection)
    if not any(kwargs.values()):
        raise HttpError(400, "nothing selected: give at least one filter")
    expected = values.get("count", "")
    plan = resolve_events(**kwargs, store=s.store)
    if str(len(plan.events)) != expected:
        raise HttpError(
            409,
            f"the selection changed since it was confirmed ({expected or '?'} events then, "
            f"{len(plan.events)} now): nothing was resolved",
            hint="review the list again",
        )
    resolve_events(
        **kwargs,
        verification=values.get("verification") or None,
        apply=True,
        actor=actor(request, s),
        store=s.store,
    )
    back = {k: v for k, v in selection.items() if v}
    return "/events?" + urlencode({**back, "done": "batch"})


def _event_id(request: Request) -> str:
    return validate_identifier(request.path_params["event_id"], "event id")


def event_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    from rayvault.learning.store.base import ErrorQuery

    store = s.store
    event_id = _event_id(request)
    event = store.get_event(event_id)
    if event is None:
        raise EventNotFoundError(event_id)
    errors = store.query_errors(ErrorQuery(learning_event_ids=(event_id,)))
    if event.source_error_id and all(e.id != event.source_error_id for e in errors):
        source = store.get_error(event.source_error_id)
        if source is not None:
            errors.append(source)
    rule, where = _find_rule(store, event)
    delivered = _delivered_rules(event)
    extras = {k: v for k, v in (event.__pydantic_extra__ or {}).items()}
    return "event.html", {
        "event": event,
        "versions": version_rows(store.event_versions(event_id)),
        "errors": errors,
        "rule": rule,
        "rule_where": where,
        "delivered": delivered,
        "extras": extras,
    }


def version_rows(versions: Sequence[LearningEvent]) -> list[dict[str, Any]]:
    """The event page's version table, newest first: per version its number (1 = first
    recorded), when it was written (``updated``, else ``timestamp``), its status, and the fields
    whose values differ from the version before it (none for the first)."""
    from rayvault.learning.events import changed_fields

    rows = [
        {
            "number": number,
            "at": version.updated or version.timestamp,
            "status": version.status,
            "changed": changed,
        }
        for number, (version, changed) in enumerate(
            zip(versions, changed_fields(versions), strict=True), 1
        )
    ]
    rows.reverse()
    return rows


def _find_rule(store: Store, event: LearningEvent) -> tuple[Rule | None, str | None]:
    """The rule the event created: active in its agent's memory, or tombstoned."""
    if not event.rule_id or not event.agent:
        return None, None
    rule = next(
        (r for r in store.load_memory(event.agent).rules if r.rule_id == event.rule_id), None
    )
    if rule is not None:
        return rule, "active"
    stone = next(
        (t for t in store.load_tombstones(event.agent).tombstones if t.rule_id == event.rule_id),
        None,
    )
    return (stone, stone.kind) if stone is not None else (None, None)


def _delivered_rules(event: LearningEvent) -> list[str]:
    """The rules the closed loop delivered in the run that recorded the event (its steps)."""
    found: dict[str, None] = {}
    for step in event.loop_steps:
        for key in ("delivered_rule_ids", "rule_ids"):
            value = step.get(key)
            if isinstance(value, list):
                found.update((str(v), None) for v in value)
    return list(found)


def resolve_one(request: Request, s: Settings, values: Mapping[str, str]) -> str:
    from rayvault.learning.resolution import resolve_events

    event_id = _event_id(request)
    resolve_events(
        [event_id],
        verification=values.get("verification") or None,
        apply=True,
        actor=actor(request, s),
        store=s.store,
    )
    return f"/events/{event_id}?done=resolved"


# -- patterns ------------------------------------------------------------------------------------
def patterns_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    """Every pattern of the whole history, most frequent first (as ``get_patterns`` lists them,
    with a few videos each: the page does not show them), the first :data:`PATTERNS_SHOWN` with
    their state."""
    from rayvault.learning.regressions import pattern_states
    from rayvault.learning.store.base import EventQuery

    store = s.store
    patterns = store.event_patterns(EventQuery(), min_count=1, videos_limit=1)
    shown = patterns[:PATTERNS_SHOWN]
    since = datetime.now(UTC) - timedelta(days=store.policies.LEARNING_REVISIT_INTERVAL_DAYS)
    states = pattern_states(store, shown, since, whole_history=True)
    rules = _rules_by_fingerprint(store)
    return "patterns.html", {
        "patterns": [
            p.model_copy(update={"state": st}) for p, st in zip(shown, states, strict=True)
        ],
        "count": len(patterns),
        "rules": rules,
    }


def _rules_by_fingerprint(store: Store) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for agent in store.list_agents():
        for rule in store.load_memory(agent).rules:
            if rule.fingerprint:
                found.setdefault(rule.fingerprint, []).append((agent, rule.rule_id))
    return found


def pattern_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    from rayvault.learning.models import SEVERITIES
    from rayvault.learning.regressions import pattern_states
    from rayvault.learning.store.base import ErrorQuery, EventQuery

    store = s.store
    fingerprint = request.path_params["fingerprint"]
    if not isinstance(fingerprint, str) or not fingerprint.strip() or len(fingerprint) > 200:
        raise HttpError(400, "not a pattern fingerprint")
    query = EventQuery(fingerprint=fingerprint)
    found = store.event_patterns(query, min_count=1, videos_limit=20)
    if not found:
        raise HttpError(404, f"no pattern {fingerprint!r}")
    pattern = found[0]
    since = datetime.now(UTC) - timedelta(days=store.policies.LEARNING_REVISIT_INTERVAL_DAYS)
    # Counted over the pattern's whole history (no date filter): its own open count and start.
    [state] = pattern_states(store, [pattern], since, whole_history=True)
    timeline = store.event_timeline(query)
    days: list[dict[str, Any]] = []
    if timeline:
        day, end = min(timeline), max(timeline)
        while day <= end and len(days) < 400:
            counts = timeline.get(day, {})
            row: dict[str, Any] = {
                "date": day.isoformat(),
                **{v: counts.get(v, 0) for v in SEVERITIES},
            }
            row["total"] = sum(counts.values())
            days.append(row)
            day += timedelta(days=1)
    events = store.query_events(replace(query, newest_first=True, limit=20))
    errors = store.query_errors(ErrorQuery(fingerprint=fingerprint, newest_first=True, limit=20))
    rules = _rules_by_fingerprint(store).get(pattern.fingerprint, [])
    return "pattern.html", {
        "pattern": pattern,
        "state": state,
        "days": days,
        "events": events,
        "errors": errors,
        "rules": rules,
    }


# -- agents --------------------------------------------------------------------------------------
def agents_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    from rayvault.learning.stages import configured_agents

    store = s.store
    names = sorted(set(store.list_agents()) | set(configured_agents(store.policies)))
    rows = []
    for name in names:
        memory = store.load_memory(name)
        rows.append(
            {
                "agent": name,
                "rules": len(memory.rules),
                "tombstones": len(store.load_tombstones(name).tombstones),
                "soul": store.docs.find_soul(name) is not None,
            }
        )
    return "agents.html", {"agents": rows}


def _agent(request: Request, s: Settings) -> str:
    from rayvault.learning.stages import configured_agents

    agent = validate_identifier(request.path_params["agent"], "agent")
    known = set(s.store.list_agents()) | set(configured_agents(s.store.policies))
    if agent not in known:
        raise HttpError(404, f"unknown agent {agent!r}")
    return agent


def agent_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    from rayvault.learning.revisit import revalidate
    from rayvault.learning.soul import LEARNED_RULES_HEADING, is_promoted

    store = s.store
    agent = _agent(request, s)
    memory = store.load_memory(agent)
    tombstones = store.load_tombstones(agent).tombstones
    since = datetime.now(UTC) - timedelta(days=store.policies.LEARNING_REVISIT_INTERVAL_DAYS)
    reval = revalidate({agent: memory}, since, store=store)
    stale = {r.rule_id: r.reason for r in reval.stale}
    ineffective = {r.rule_id: r.proposal for r in reval.ineffective}
    soul_path = store.docs.find_soul(agent)
    soul_text = store.docs.read_soul(soul_path) if soul_path is not None else None
    learned = None
    if soul_text is not None and LEARNED_RULES_HEADING in soul_text:
        learned = soul_text[soul_text.index(LEARNED_RULES_HEADING) :]
    rules = [
        {
            "rule": r,
            "stale": stale.get(r.rule_id),
            "ineffective": ineffective.get(r.rule_id),
            "promoted": soul_text is not None and is_promoted(soul_text, r.rule_id),
        }
        for r in memory.rules
    ]
    return "agent.html", {
        "agent": agent,
        "rules": rules,
        "conflicts": reval.conflicts,
        "tombstones": list(reversed(tombstones)),
        "soul_file": store.docs.relative(soul_path) if soul_path is not None else None,
        "learned": learned,
    }


def _rule(request: Request, s: Settings, agent: str) -> Rule:
    rule_id = validate_identifier(request.path_params["rule_id"], "rule id")
    rule = next((r for r in s.store.load_memory(agent).rules if r.rule_id == rule_id), None)
    if rule is None:
        raise RuleNotFoundError(agent, rule_id)
    return rule


def tombstone_action(request: Request, s: Settings, values: Mapping[str, str]) -> str:
    from rayvault.learning.memory import tombstone_rule

    agent = _agent(request, s)
    rule = _rule(request, s, agent)
    tombstone_rule(
        agent, rule.rule_id, values.get("reason", ""), actor=actor(request, s), store=s.store
    )
    return f"/agents/{agent}?done=tombstoned#tombstones"


def promote_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    """The exact change promoting the rule makes to the SOUL file, as a unified diff."""
    from rayvault.learning.soul import insert_section, promotion_section, promotion_shortfall

    store = s.store
    agent = _agent(request, s)
    rule = _rule(request, s, agent)
    path = store.docs.find_soul(agent)
    if path is None:
        raise SoulFileNotFoundError(agent, store.docs.soul_candidates(agent))
    before = store.docs.read_soul(path)
    try:
        after = insert_section(before, rule.rule_id, promotion_section(rule, agent))
    except ValueError as e:
        raise InvalidInputError(f"{store.docs.relative(path)}: {e}") from e
    name = store.docs.relative(path)
    diff = list(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
        )
    )
    threshold = store.policies.LEARNING_PROMOTION_THRESHOLD_OCCURRENCES
    return "promote.html", {
        "agent": agent,
        "rule": rule,
        "soul_file": name,
        "diff": diff,
        "shortfall": promotion_shortfall(rule, threshold, store.policies),
    }


def promote_action(request: Request, s: Settings, values: Mapping[str, str]) -> str:
    from rayvault.learning.soul import promote_rule

    agent = _agent(request, s)
    rule = _rule(request, s, agent)
    promote_rule(agent, rule.rule_id, actor=actor(request, s), store=s.store)
    return f"/agents/{agent}?done=promoted#soul"


# -- gate ----------------------------------------------------------------------------------------
def gate_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    """Videos × stages: the latest gate run of each cell, from the videos' gate states."""
    store = s.store
    videos = store.list_gate_videos()
    start = _int(request, "start", 0, 0, max(0, len(videos)))
    shown = videos[start : start + GATE_VIDEOS]
    stages: dict[str, None] = dict.fromkeys(store.policies.LEARNING_STAGE_AGENTS)
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for video in shown:
        state = store.load_gate_state(video)
        latest: dict[str, dict[str, Any]] = {}
        for run in state.runs if state is not None else []:
            stage = str(run.get("stage", ""))
            latest[stage] = run
            stages.setdefault(stage, None)
        for ack in state.acks if state is not None else []:
            last = latest.get(str(ack.get("stage")))
            if last is not None and str(ack.get("at", "")) >= str(last.get("at", "")):
                latest[str(ack.get("stage"))] = {**last, "acked": ack}
        cells[video] = latest
    return "gate.html", {
        "stages": list(stages),
        "videos": shown,
        "cells": cells,
        "start": start,
        "total": len(videos),
        "next": start + GATE_VIDEOS if start + GATE_VIDEOS < len(videos) else None,
    }


def _video_stage(request: Request, s: Settings) -> tuple[str, str]:
    from rayvault.learning.stages import check_stage

    video = validate_identifier(request.path_params["video_id"], "video id")
    stage = check_stage(request.path_params["stage"], s.store.policies)
    return video, stage


def gate_cell_page(request: Request, s: Settings) -> tuple[str, dict[str, Any]]:
    """One video and stage: the gate's checks now (read only) and the acknowledgements."""
    from rayvault.learning.gate import (
        check_diff_policies,
        check_diff_soul,
        check_known_failures,
        check_regressions,
    )

    store = s.store
    video, stage = _video_stage(request, s)
    checks = [
        check_regressions(video, stage, store=store),
        check_known_failures(stage, store=store),
        check_diff_policies(video, stage, store=store),
        check_diff_soul(video, stage, store=store),
    ]
    state = store.load_gate_state(video)
    runs = [r for r in (state.runs if state else []) if r.get("stage") == stage]
    acks = [a for a in (state.acks if state else []) if a.get("stage") == stage]
    return "gate_cell.html", {
        "video": video,
        "stage": stage,
        "checks": checks,
        "runs": list(reversed(runs)),
        "acks": list(reversed(acks)),
    }


def ack_action(request: Request, s: Settings, values: Mapping[str, str]) -> str:
    from rayvault.learning.gate import acknowledge

    video, stage = _video_stage(request, s)
    acknowledge(
        video, stage, note=values.get("note") or None, actor=actor(request, s), store=s.store
    )
    return f"/gate/{video}/{stage}?done=acked"


__all__ = ["Settings", "create_app"]
