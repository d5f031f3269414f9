"""Write the labelled pipeline-failure set (``pipeline_failures.jsonl``) for the grouping benchmark.

Synthetic, written for this project (issue 13): each group is one failure as a pipeline engineer
would name it (same root cause, same fix), and its messages vary the way real occurrences of that
failure do (ids, paths, URLs, durations in several formats, timestamps, request ids, memory
addresses, with or without a traceback). The labels were fixed when the groups were written, before
any grouping code ran on the texts; README.md states the rules and lists the near-miss pairs.

Deterministic: every group draws from its own ``random.Random`` seeded with the set's seed and the
group's label (string seeds are hashed with SHA-512, not ``hash()``), so output is byte-identical
across runs and Python versions, and adding a group does not change the others' messages.

Usage: ``python benchmarks/data/pipeline_failures/generate.py [OUTPUT]`` (default: the committed
``pipeline_failures.jsonl`` next to this file). Standard library only.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

SEED = "rayvault-issue-13-pipeline-failures-v1"
OUTPUT = Path(__file__).resolve().parent / "pipeline_failures.jsonl"
START = datetime(2026, 10, 27, 6, 0, tzinfo=UTC)
SPAN_HOURS = 24 * 35


@dataclass(frozen=True)
class Env:
    """Where one pipeline worker runs: its code root, Python version and site-packages."""

    root: str
    py: int
    site: str
    std: str


@dataclass(frozen=True)
class Ctx:
    """What one message's renderer may vary: its random source, arrival time and worker."""

    rng: random.Random
    t: datetime
    env: Env


@dataclass(frozen=True)
class Group:
    stage: str
    label: str
    size: int
    render: Callable[[Ctx], str]
    bursty: bool


GROUPS: list[Group] = []

#: Deliberate near-misses: pairs of groups of one stage whose texts look alike but whose causes and
#: fixes differ. README.md explains each; the data test checks that both groups exist.
NEAR_MISSES: list[tuple[str, str]] = [
    ("research/conn-reset-by-peer", "research/conn-refused-flaresolverr"),
    ("research/conn-refused-flaresolverr", "research/dns-resolution-failed"),
    ("research/http-429-too-many-requests", "research/http-503-service-unavailable"),
    ("research/http-500-internal-server-error", "research/http-503-service-unavailable"),
    ("research/http-404-product-not-found", "research/http-429-too-many-requests"),
    ("research/read-timeout", "research/connect-timeout"),
    ("research/keyerror-price", "research/keyerror-choices"),
    ("research/json-empty-or-non-json-response", "research/captcha-robot-check"),
    ("script/openai-rate-limit-tpm", "script/openai-rate-limit-rpm"),
    ("script/openai-rate-limit-tpm", "script/openai-insufficient-quota"),
    ("script/pydantic-scriptoutput-title-missing", "script/pydantic-scriptoutput-title-not-string"),
    ("script/pydantic-scriptoutput-title-missing", "script/pydantic-scriptoutput-hook-missing"),
    ("script/json-empty-completion", "script/json-malformed-llm-output"),
    ("script/anthropic-overloaded-529", "script/anthropic-rate-limit-429"),
    ("script/openai-api-timeout", "script/openai-connection-error"),
    ("script-review/script-too-long", "script-review/script-too-short"),
    ("assets/file-not-found", "assets/permission-denied"),
    ("assets/reference-image-403-forbidden", "assets/reference-image-404-not-found"),
    ("assets/file-not-found", "assets/is-a-directory"),
    ("tts/elevenlabs-quota-exceeded", "tts/elevenlabs-voice-not-found"),
    ("render/ffmpeg-invalid-input-data", "render/ffmpeg-oom-killed"),
    ("render/ffmpeg-missing-input", "render/ffmpeg-output-dir-missing"),
    ("render/ffmpeg-timeout-expired", "render/render-job-timeout"),
    ("upload/tiktok-post-quota-exceeded", "upload/tiktok-file-too-large"),
    ("upload/youtube-api-quota-exceeded", "upload/tiktok-post-quota-exceeded"),
]


def group(
    stage: str, slug: str, size: int, *, bursty: bool = False
) -> Callable[[Callable[[Ctx], str]], Callable[[Ctx], str]]:
    """Register a renderer as the group ``stage/slug`` with ``size`` messages."""

    def register(render: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
        GROUPS.append(Group(stage, f"{stage}/{slug}", size, render, bursty))
        return render

    return register


# --- values that vary between occurrences -------------------------------------------------------

HEX = "0123456789abcdef"
UPPER_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def hexs(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(HEX) for _ in range(n))


def alnum(rng: random.Random, n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def asin(rng: random.Random) -> str:
    return "B0" + alnum(rng, 8, UPPER_ALNUM)


def uuid(rng: random.Random) -> str:
    h = hexs(rng, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{rng.choice('89ab')}{h[17:20]}-{h[20:]}"


def addr(rng: random.Random) -> str:
    return "0x7f" + hexs(rng, 10)


def ffaddr(rng: random.Random) -> str:
    return "0x55" + hexs(rng, 10)


def video_id(rng: random.Random) -> str:
    return rng.choice(
        [f"v{rng.randint(30, 140):03d}", f"v_{hexs(rng, 8)}", f"vid-{rng.randint(1000, 9999)}"]
    )


def run_dir(ctx: Ctx) -> str:
    day = ctx.t.strftime("%Y-%m-%d")
    base = ctx.rng.choice(["/data/runs", "/mnt/nas/rayvault/runs", "/var/lib/rayvault/runs"])
    return f"{base}/{day}/{video_id(ctx.rng)}"


def dur(rng: random.Random, seconds: float) -> str:
    """A duration as one of the formats pipelines and SDKs print."""
    style = rng.randrange(6)
    if seconds < 1 or (style == 0 and seconds < 10):
        return f"{round(seconds * 1000)}ms"
    if style == 1:
        return f"{seconds:.2f}s"
    if style == 2 and seconds >= 60:
        m, s = divmod(seconds, 60)
        return f"{int(m)}m{s:.1f}s"
    if style == 3:
        return f"{round(seconds)} seconds"
    if style == 4:
        return f"{round(seconds)}s"
    return f"{seconds:.1f}s"


def stamp(ctx: Ctx) -> str:
    """A log-line prefix with this message's time, in one of the formats workers use."""
    t = ctx.t + timedelta(milliseconds=ctx.rng.randint(0, 999))
    ms = t.microsecond // 1000
    return ctx.rng.choice(
        [
            f"{t:%Y-%m-%d %H:%M:%S},{ms:03d} ERROR",
            f"[{t:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z] ERROR",
            f"{t:%Y-%m-%dT%H:%M:%S}+00:00 error",
            f"{t:%b %d %H:%M:%S} worker-{ctx.rng.randint(1, 6)} rayvault[{ctx.rng.randint(1000, 65000)}]:",
        ]
    )


def clock(rng: random.Random, max_s: int = 900, ms: bool = False) -> str:
    s = rng.randint(3, max_s)
    base = rng.choice(
        [f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}", f"{s // 60}:{s % 60:02d}"]
    )
    return f"{base}.{rng.randint(0, 999):03d}" if ms else base


def words(n: int) -> str:
    return f"{n:,}" if n >= 1000 and n % 3 else str(n)


PRODUCTS = [
    "Anker 737 Power Bank",
    "Sony WH-1000XM5",
    "Dyson V15 Detect",
    "Ninja AF101 Air Fryer",
    "Breville Barista Express",
    "Kärcher WD 3",
    "De'Longhi Magnifica Evo",
    "Xiaomi Robot Vacuum S10+",
    "Roborock Q7 Max",
    "Bose QuietComfort Ultra",
    "Shark Navigator NV352",
    "Philips Sonicare 4100",
    "UGREEN Nexode 100W",
    "Samsung T7 Shield 2TB",
    "Logitech MX Master 3S",
    "Eufy RoboVac 11S",
    "Instant Pot Duo 7-in-1",
    "JBL Flip 6",
    "Garmin Forerunner 265",
    "Braun Series 9 Pro",
    "Apple AirPods Pro (2nd gen)",
    "Miele Complete C3",
    "TP-Link Deco X55",
    "Ring Video Doorbell 4",
    "Kindle Paperwhite (16 GB)",
    "パナソニック ナノケア EH-NA0J",
    "Midea U-Shaped 8,000 BTU",
]

TOPICS = [
    "best cordless vacuums 2026",
    "top 5 power banks under $60",
    "budget noise cancelling headphones",
    "air fryers compared",
    "espresso machines for beginners",
    "robot vacuums for pet hair",
    "USB-C chargers that won't fry your laptop",
    "best electric toothbrush (honest review)",
    "mesh Wi-Fi for big houses",
    "portable SSDs tested",
    "Die besten Nass-Trockensauger",
    "🔥 Black Friday tech deals",
]

MODELS_OPENAI = ["gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "gpt-4.1"]
MODELS_CLAUDE = [
    "claude-sonnet-4-20250514",
    "claude-3-7-sonnet-20250219",
    "claude-opus-4-1-20250805",
    "claude-sonnet-4-5-20250929",
]


def env_for(rng: random.Random) -> Env:
    root = rng.choice(["/app", "/opt/rayvault", "/home/ray/rayvault-pipeline", "/srv/pipeline"])
    py = rng.choice([11, 11, 12, 12, 13])
    if root == "/app":
        std = f"/usr/local/lib/python3.{py}"
        site = f"/usr/local/lib/python3.{py}/site-packages"
    else:
        std = f"/usr/lib/python3.{py}"
        site = f"{root}/.venv/lib/python3.{py}/site-packages"
    return Env(root, py, site, std)


# --- tracebacks and the ways a pipeline records an exception -----------------------------------

Frame = tuple[str, int, str, str]


def app(ctx: Ctx, *calls: tuple[str, str, str]) -> list[Frame]:
    """Frames in the pipeline's own code (``module path, function, source line``)."""
    return [
        (f"{ctx.env.root}/{path}", ctx.rng.randint(12, 480), func, code)
        for path, func, code in calls
    ]


#: Frames that several failures' tracebacks share (path, line range, function, code).
HTTPCORE_MAP_EXCEPTIONS = (
    "httpcore/_exceptions.py",
    (10, 14),
    "map_exceptions",
    "raise to_exc(exc) from exc",
)
HTTPX_MAP_EXCEPTIONS = (
    "httpx/_transports/default.py",
    (118, 118),
    "map_httpcore_exceptions",
    "raise mapped_exc(message) from exc",
)
JSON_LOADS = ("json/__init__.py", (346, 346), "loads", "return _default_decoder.decode(s)")
JSON_DECODE = (
    "json/decoder.py",
    (337, 338),
    "decode",
    "obj, end = self.raw_decode(s, idx=_w(s, 0).end())",
)
OPENAI_STATUS_ERROR = (
    "openai/_base_client.py",
    (919, 1594),
    "request",
    "raise self._make_status_error_from_response(err.response) from None",
)
SSL_READ = ("ssl.py", (1105, 1166), "read", "return self._sslobj.read(len, buffer)")


def lib(ctx: Ctx, *calls: tuple[str, tuple[int, int], str, str]) -> list[Frame]:
    """Frames in site-packages; the line varies with the installed version."""
    return [
        (f"{ctx.env.site}/{path}", ctx.rng.randint(*lines), func, code)
        for path, lines, func, code in calls
    ]


def std(ctx: Ctx, *calls: tuple[str, tuple[int, int], str, str]) -> list[Frame]:
    return [
        (f"{ctx.env.std}/{path}", ctx.rng.randint(*lines), func, code)
        for path, lines, func, code in calls
    ]


def frames_text(ctx: Ctx, frames: Sequence[Frame]) -> str:
    out = ["Traceback (most recent call last):"]
    for path, line, func, code in frames:
        out.append(f'  File "{path}", line {line}, in {func}')
        out.append(f"    {code}")
        # Python 3.11+ underlines the failing expression when it is part of the line.
        if ctx.env.py >= 11 and ("(" in code) and ctx.rng.random() < 0.45:
            start = next((i for i, c in enumerate(code) if c not in " "), 0)
            if code.startswith(("return ", "raise ")):
                start = code.index(" ") + 1
            elif " = " in code:
                start = code.index(" = ") + 3
            width = max(1, len(code.rstrip()) - start)
            # A caret line under the whole statement says nothing; Python leaves it out.
            if start:
                out.append("    " + " " * start + "^" * width)
    return "\n".join(out)


CAUSE = "\n\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT = "\n\nDuring handling of the above exception, another exception occurred:\n\n"


def traceback(ctx: Ctx, *parts: tuple[Sequence[Frame], str], links: Sequence[str] = ()) -> str:
    """A (possibly chained) traceback: each part is frames plus its ``Type: message`` lines."""
    text = ""
    for i, (frames, final) in enumerate(parts):
        if i:
            text += links[i - 1] if i - 1 < len(links) else CAUSE
        text += frames_text(ctx, frames) + "\n" + final
    return text


def short(final: str) -> str:
    """``pkg.mod.Type: msg`` → ``Type: msg`` (what ``f"{type(e).__name__}: {e}"`` records)."""
    head, sep, rest = final.partition(": ")
    name = head.rsplit(".", 1)[-1] if " " not in head else head
    return f"{name}{sep}{rest}" if sep else name


def message_only(final: str) -> str:
    """What ``str(e)`` records: the message without the type."""
    head, sep, rest = final.partition(": ")
    return rest if sep and " " not in head else final


def record(ctx: Ctx, tb: str, final: str, *, weights: Sequence[float] = (45, 25, 15, 10, 5)) -> str:
    """One way a pipeline records an exception: the whole traceback, the last exception's
    ``Type: message`` lines (qualified or short name), behind a log prefix, or ``str(e)``."""
    way = ctx.rng.choices(range(5), weights=weights)[0]
    if way == 0:
        return tb
    if way == 1:
        return final
    if way == 2:
        return short(final)
    if way == 3:
        step = ctx.rng.choice(["", f" attempt {ctx.rng.randint(1, 5)}/5:", " giving up:"])
        return f"{stamp(ctx)}{step} {short(final) if ctx.rng.random() < 0.5 else final}"
    return message_only(final)


def pick(rng: random.Random, *options: str) -> str:
    return rng.choice(options)


# --- research ------------------------------------------------------------------------------------


def research_url(rng: random.Random, a: str) -> str:
    key = alnum(rng, 32)
    domain = rng.choice(["amazon.com", "amazon.com", "amazon.de", "amazon.co.uk", "amazon.co.jp"])
    return rng.choice(
        [
            f"https://api.rainforestapi.com/request?api_key={key}&type=product&asin={a}&amazon_domain={domain}",
            f"https://api.keepa.com/product?key={key}&domain={rng.randint(1, 6)}&asin={a}&stats=90&offers=20",
            f"https://api.rainforestapi.com/request?api_key={key}&type=offers&asin={a}&amazon_domain={domain}&page={rng.randint(1, 4)}",
            f"https://serpapi.com/search.json?engine=amazon&amazon_domain={domain}&k={rng.choice(TOPICS).replace(' ', '+')}&api_key={key}",
        ]
    )


def httpx_frames(ctx: Ctx) -> list[Frame]:
    caller = ctx.rng.choice(
        [
            (
                "pipeline/stages/research.py",
                "discover_products",
                "offers = await fetch_offers(client, asin)",
            ),
            (
                "pipeline/stages/research.py",
                "verify_products",
                "data = await fetch_product(client, asin)",
            ),
            (
                "pipeline/research/keepa.py",
                "price_history",
                "resp = await self._get('product', params)",
            ),
        ]
    )
    return [
        *app(
            ctx,
            ("pipeline/run.py", "run_stage", "result = await stage.run(ctx)"),
            caller,
            ("pipeline/research/http.py", "get_json", "resp.raise_for_status()"),
        ),
        *lib(
            ctx,
            (
                "httpx/_models.py",
                (749, 829),
                "raise_for_status",
                "raise HTTPStatusError(message, request=request, response=self)",
            ),
        ),
    ]


def httpx_status(ctx: Ctx, code: int, reason: str) -> str:
    kind = "Client error" if code < 500 else "Server error"
    url = research_url(ctx.rng, asin(ctx.rng))
    final = (
        f"httpx.HTTPStatusError: {kind} '{code} {reason}' for url '{url}'\n"
        f"For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/{code}"
    )
    return record(ctx, traceback(ctx, (httpx_frames(ctx), final)), final)


@group("research", "http-429-too-many-requests", 100, bursty=True)
def _http_429(ctx: Ctx) -> str:
    return httpx_status(ctx, 429, "Too Many Requests")


@group("research", "http-404-product-not-found", 14)
def _http_404(ctx: Ctx) -> str:
    return httpx_status(ctx, 404, "Not Found")


@group("research", "http-503-service-unavailable", 22, bursty=True)
def _http_503(ctx: Ctx) -> str:
    return httpx_status(ctx, 503, "Service Unavailable")


@group("research", "http-500-internal-server-error", 9)
def _http_500(ctx: Ctx) -> str:
    return httpx_status(ctx, 500, "Internal Server Error")


def requests_frames(ctx: Ctx, raise_line: str) -> list[Frame]:
    return [
        *app(
            ctx,
            (
                "pipeline/stages/research.py",
                ctx.rng.choice(["discover_products", "scrape_listing"]),
                "html = fetch_page(url)",
            ),
            (
                "pipeline/research/scrape.py",
                "fetch_page",
                "r = session.get(url, timeout=TIMEOUT, headers=HEADERS)",
            ),
        ),
        *lib(
            ctx,
            (
                "requests/sessions.py",
                (600, 602),
                "get",
                'return self.request("GET", url, **kwargs)',
            ),
            (
                "requests/sessions.py",
                (587, 589),
                "request",
                "resp = self.send(prep, **send_kwargs)",
            ),
            ("requests/sessions.py", (701, 703), "send", "r = adapter.send(request, **kwargs)"),
            ("requests/adapters.py", (682, 713), "send", raise_line),
        ),
    ]


def urllib3_frames(ctx: Ctx) -> list[Frame]:
    return lib(
        ctx,
        ("urllib3/connectionpool.py", (787, 793), "urlopen", "response = self._make_request("),
        ("urllib3/connectionpool.py", (534, 537), "_make_request", "response = conn.getresponse()"),
        (
            "urllib3/connection.py",
            (507, 516),
            "getresponse",
            "httplib_response = super().getresponse()",
        ),
    )


def host_of(rng: random.Random) -> str:
    return rng.choice(["api.keepa.com", "api.rainforestapi.com", "serpapi.com", "www.amazon.com"])


@group("research", "read-timeout", 30)
def _read_timeout(ctx: Ctx) -> str:
    host = host_of(ctx.rng)
    secs = ctx.rng.choice([10, 15, 20, 30, 30, 60])
    msg = f"HTTPSConnectionPool(host='{host}', port=443): Read timed out. (read timeout={secs})"
    sock = urllib3_frames(ctx) + std(
        ctx,
        ("http/client.py", (1375, 1430), "getresponse", "response.begin()"),
        ("http/client.py", (318, 331), "begin", "version, status, reason = self._read_status()"),
        ("socket.py", (705, 720), "readinto", "return self._sock.recv_into(b)"),
        ("ssl.py", (1232, 1314), "recv_into", "return self.read(nbytes, buffer)"),
        SSL_READ,
    )
    final = f"requests.exceptions.ReadTimeout: {msg}"
    tb = traceback(
        ctx,
        (sock, "TimeoutError: The read operation timed out"),
        (
            lib(
                ctx,
                (
                    "urllib3/connectionpool.py",
                    (365, 367),
                    "_raise_timeout",
                    "raise ReadTimeoutError(",
                ),
            ),
            f"urllib3.exceptions.ReadTimeoutError: {msg}",
        ),
        (requests_frames(ctx, "raise ReadTimeout(e, request=request)"), final),
        links=[CAUSE, CONTEXT],
    )
    return record(ctx, tb, final)


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


@group("research", "connect-timeout", 8)
def _connect_timeout(ctx: Ctx) -> str:
    a = asin(ctx.rng)
    url = research_url(ctx.rng, a)
    host = url.split("/")[2]
    secs = ctx.rng.choice([5, 10, 10, 3.05])
    final = (
        f"requests.exceptions.ConnectTimeout: HTTPSConnectionPool(host='{host}', port=443): "
        f"Max retries exceeded with url: {path_of(url)} (Caused by ConnectTimeoutError("
        f"<urllib3.connection.HTTPSConnection object at {addr(ctx.rng)}>, "
        f"'Connection to {host} timed out. (connect timeout={secs})'))"
    )
    tb = traceback(ctx, (requests_frames(ctx, "raise ConnectTimeout(e, request=request)"), final))
    return record(ctx, tb, final)


@group("research", "conn-refused-flaresolverr", 12, bursty=True)
def _conn_refused(ctx: Ctx) -> str:
    host = pick(ctx.rng, "localhost", "127.0.0.1", "flaresolverr")
    port = pick(ctx.rng, "8191", "8191", "8192")
    conn = (
        f"<urllib3.connection.HTTPConnection object at {addr(ctx.rng)}>"
        if ctx.rng.random() < 0.6
        else f"HTTPConnection(host='{host}', port={port})"
    )
    final = (
        f"requests.exceptions.ConnectionError: HTTPConnectionPool(host='{host}', port={port}): "
        f"Max retries exceeded with url: /v1 (Caused by NewConnectionError('{conn}: "
        "Failed to establish a new connection: [Errno 111] Connection refused'))"
    )
    tb = traceback(
        ctx,
        (
            lib(
                ctx,
                (
                    "urllib3/connection.py",
                    (196, 205),
                    "_new_conn",
                    "sock = connection.create_connection(",
                ),
            ),
            "ConnectionRefusedError: [Errno 111] Connection refused",
        ),
        (
            requests_frames(ctx, "raise ConnectionError(e, request=request)"),
            final,
        ),
        links=[CONTEXT],
    )
    return record(ctx, tb, final)


@group("research", "dns-resolution-failed", 6, bursty=True)
def _dns(ctx: Ctx) -> str:
    url = research_url(ctx.rng, asin(ctx.rng))
    host = url.split("/")[2]
    final = (
        f"requests.exceptions.ConnectionError: HTTPSConnectionPool(host='{host}', port=443): "
        f"Max retries exceeded with url: {path_of(url)} (Caused by NameResolutionError("
        f'"<urllib3.connection.HTTPSConnection object at {addr(ctx.rng)}>: Failed to resolve '
        f"'{host}' ([Errno -3] Temporary failure in name resolution)\"))"
    )
    tb = traceback(ctx, (requests_frames(ctx, "raise ConnectionError(e, request=request)"), final))
    return record(ctx, tb, final)


@group("research", "conn-reset-by-peer", 16)
def _conn_reset(ctx: Ctx) -> str:
    final = (
        "requests.exceptions.ConnectionError: ('Connection aborted.', "
        "ConnectionResetError(104, 'Connection reset by peer'))"
    )
    tb = traceback(
        ctx,
        (
            urllib3_frames(ctx) + std(ctx, SSL_READ),
            "ConnectionResetError: [Errno 104] Connection reset by peer",
        ),
        (
            lib(
                ctx, ("urllib3/util/util.py", (38, 39), "reraise", "raise value.with_traceback(tb)")
            ),
            "urllib3.exceptions.ProtocolError: ('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))",
        ),
        (requests_frames(ctx, "raise ConnectionError(err, request=request)"), final),
        links=[CONTEXT, CONTEXT],
    )
    return record(ctx, tb, final)


@group("research", "ssl-certificate-expired", 3)
def _ssl(ctx: Ctx) -> str:
    a = asin(ctx.rng)
    final = (
        "requests.exceptions.SSLError: HTTPSConnectionPool(host='api.pricetracker.io', port=443): "
        f"Max retries exceeded with url: /v2/prices?asin={a}&days={ctx.rng.choice([30, 90, 180])} "
        "(Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] "
        f"certificate verify failed: certificate has expired (_ssl.c:{ctx.rng.choice([1006, 1000, 1028])})')))"
    )
    return record(
        ctx,
        traceback(ctx, (requests_frames(ctx, "raise SSLError(e, request=request)"), final)),
        final,
    )


def parse_frames(ctx: Ctx, code: str) -> list[Frame]:
    return app(
        ctx,
        ("pipeline/run.py", "run_stage", "result = await stage.run(ctx)"),
        (
            "pipeline/stages/research.py",
            ctx.rng.choice(["discover_products", "verify_products", "run"]),
            "products = [parse_offer(o) for o in offers]",
        ),
        ("pipeline/research/parse.py", "parse_offer", code),
    )


@group("research", "keyerror-price", 18)
def _keyerror_price(ctx: Ctx) -> str:
    code = ctx.rng.choice(
        [
            'price = offer["price"]["value"]',
            'return Offer(asin=o["asin"], price=o["price"], currency=cur)',
            'amount = float(item["price"])',
        ]
    )
    final = "KeyError: 'price'"
    tb = traceback(ctx, (parse_frames(ctx, code), final))
    out = record(ctx, tb, final, weights=(60, 25, 0, 15, 0))
    if out == final and ctx.rng.random() < 0.3:
        out += f" (asin={asin(ctx.rng)})"
    return out


@group("research", "keyerror-choices", 7)
def _keyerror_choices(ctx: Ctx) -> str:
    frames = app(
        ctx,
        ("pipeline/stages/research.py", "rank_products", "ranking = summarize_reviews(reviews)"),
        (
            "pipeline/research/llm.py",
            "summarize_reviews",
            'return resp.json()["choices"][0]["message"]["content"]',
        ),
    )
    final = "KeyError: 'choices'"
    return record(ctx, traceback(ctx, (frames, final)), final, weights=(60, 25, 0, 15, 0))


@group("research", "json-empty-or-non-json-response", 28)
def _json_empty(ctx: Ctx) -> str:
    decoder = std(
        ctx,
        JSON_LOADS,
        JSON_DECODE,
        (
            "json/decoder.py",
            (355, 355),
            "raw_decode",
            'raise JSONDecodeError("Expecting value", s, err.value) from None',
        ),
    )
    first = "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)"
    if ctx.rng.random() < 0.5:
        final = "requests.exceptions.JSONDecodeError: Expecting value: line 1 column 1 (char 0)"
        tb = traceback(
            ctx,
            (
                lib(
                    ctx,
                    (
                        "requests/models.py",
                        (971, 974),
                        "json",
                        "return complexjson.loads(self.text, **kwargs)",
                    ),
                )
                + decoder,
                first,
            ),
            (
                parse_frames(ctx, "data = r.json()")
                + lib(
                    ctx,
                    (
                        "requests/models.py",
                        (975, 978),
                        "json",
                        "raise RequestsJSONDecodeError(e.msg, e.doc, e.pos)",
                    ),
                ),
                final,
            ),
            links=[CONTEXT],
        )
    else:
        final = first
        tb = traceback(ctx, (parse_frames(ctx, "data = json.loads(resp.text)") + decoder, final))
    out = record(ctx, tb, final)
    if ctx.rng.random() < 0.3:
        body = ctx.rng.choice(
            [
                "''",
                "'<html>\\r\\n<head><title>502 Bad Gateway</title></head>\\r\\n<body>\\r\\n<center><h1>502 Bad Gateway</h1></center>\\r\\n<hr><center>nginx</center>...'",
                '\'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Just a moment...</title>...\'',
                "'\\n'",
            ]
        )
        out += f"\nresponse status={ctx.rng.choice([200, 200, 502, 204])} body[:200]={body}"
    return out


CAPTCHA_HEAD = (
    '<!doctype html><html lang="en-us" class="a-no-js" data-19ax5a9jf="dingo"><head>'
    '<meta charset="utf-8"><meta http-equiv="x-ua-compatible" content="ie=edge">'
    '<title dir="ltr">Amazon.com</title><meta name="viewport" content="width=device-width">'
    '<link rel="stylesheet" href="https://images-na.ssl-images-amazon.com/images/G/01/AUIClients/'
    'AmazonUI-3c913031596ca78a3768f4e934b1cc02ce238101.secure.min._V1_.css"><script>'
)
CAPTCHA_BODY = (
    '</script></head><body><div class="a-container a-padding-double-large" style="min-width:350px;'
    'padding:44px 0 !important"><div class="a-row a-spacing-double-large" style="width: 350px; '
    'margin: 0 auto"><div class="a-row a-spacing-medium a-text-center"><i class="a-icon a-logo">'
    '</i></div><div class="a-box a-alert a-alert-info a-spacing-base"><div class="a-box-inner">'
    '<i class="a-icon a-icon-alert"></i><h4>Enter the characters you see below</h4><p class='
    '"a-last">Sorry, we just need to make sure you\'re not a robot. For best results, please make '
    'sure your browser is accepting cookies.</p></div></div><div class="a-section"><h4>Type the '
    'characters you see in this image:</h4><img src="https://images-na.ssl-images-amazon.com/'
    'captcha/{cap}/Captcha_{img}.jpg"><form method="get" action="/errors/validateCaptcha" '
    'name=""><input type=hidden name="amzn" value="{amzn}" /><input type=hidden name="amzn-r" '
    'value="&#047;dp&#047;{asin}" /></form></div></div><div class="a-divider a-divider-section">'
    '<div class="a-divider-inner"></div></div><div class="a-text-center a-spacing-small '
    'a-size-mini"><a href="https://www.amazon.com/gp/help/customer/display.html/ref=footer_cou?'
    'ie=UTF8&nodeId=508088">Conditions of Use</a><span class="a-letter-space"></span>'
    '<a href="https://www.amazon.com/gp/help/customer/display.html/ref=footer_privacy?ie=UTF8&'
    'nodeId=468496">Privacy Policy</a></div><div class="a-text-center a-size-mini a-color-base">'
    "&copy; 1996-2026, Amazon.com, Inc. or its affiliates<script>if (true === true) { var ue_t0 = "
    "(+ new Date()), ue_csm = window, ue = { t0: ue_t0, d: function() { return (+new Date() - "
    'ue_t0); } }, ue_furl = "fls-na.amazon.com", ue_mid = "ATVPDKIKX0DER", ue_sid = '
    "(document.cookie.match(/session-id=([0-9-]+)/) || [])[1]; }</script></div>"
    "<!-- To discuss automated access to Amazon data please contact "
    "api-services-support@amazon.com. --></div></body></html>"
)


@group("research", "captcha-robot-check", 15)
def _captcha(ctx: Ctx) -> str:
    a = asin(ctx.rng)
    domain = ctx.rng.choice(["www.amazon.com", "www.amazon.de", "www.amazon.co.uk"])
    url = f"https://{domain}/dp/{a}" + ctx.rng.choice(
        ["", "?th=1", "?psc=1&smid=" + alnum(ctx.rng, 14, UPPER_ALNUM)]
    )
    head = f"CaptchaBlockedError: {domain} served a robot-check page for {url}"
    if ctx.rng.random() < 0.45:
        return head
    # Some workers dump the whole body into the error; the page's inline script varies in length.
    js = "".join(
        f"window.ue_{alnum(ctx.rng, 4).lower()}=function(a,b){{return a&&b?{ctx.rng.randint(1, 999)}:0}};"
        for _ in range(ctx.rng.randint(5, 235))
    )
    fill = {
        "{cap}": alnum(ctx.rng, 10).lower(),
        "{img}": alnum(ctx.rng, 8).lower(),
        "{amzn}": alnum(ctx.rng, 24),
        "{asin}": a,
    }
    body = CAPTCHA_BODY
    for key, value in fill.items():
        body = body.replace(key, value)
    body = CAPTCHA_HEAD + js + body
    return f"{head}; status={ctx.rng.choice([200, 503])}; body={body}"


@group("research", "openai-context-length-exceeded", 11)
def _openai_ctx(ctx: Ctx) -> str:
    used = ctx.rng.randint(128_400, 310_000)
    final = (
        "openai.BadRequestError: Error code: 400 - {'error': {'message': \"This model's maximum "
        f"context length is 128000 tokens. However, your messages resulted in {used} tokens. "
        "Please reduce the length of the messages.\", 'type': 'invalid_request_error', "
        "'param': 'messages', 'code': 'context_length_exceeded'}}"
    )
    frames = app(
        ctx,
        (
            "pipeline/stages/research.py",
            "rank_products",
            "summary = await summarize(reviews[asin])",
        ),
        (
            "pipeline/research/llm.py",
            "summarize",
            "resp = await client.chat.completions.create(model=MODEL, messages=msgs)",
        ),
    ) + openai_lib(ctx, async_=True)
    return record(ctx, traceback(ctx, (frames, final)), final)


@group("research", "openai-invalid-api-key", 4)
def _openai_auth(ctx: Ctx) -> str:
    final = (
        "openai.AuthenticationError: Error code: 401 - {'error': {'message': 'Incorrect API key "
        f"provided: sk-proj-{'*' * 156}{alnum(ctx.rng, 4)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.', 'type': 'invalid_request_error', "
        "'param': None, 'code': 'invalid_api_key'}}"
    )
    frames = app(
        ctx,
        (
            "pipeline/research/llm.py",
            "summarize",
            "resp = await client.chat.completions.create(model=MODEL, messages=msgs)",
        ),
    ) + openai_lib(ctx, async_=True)
    return record(ctx, traceback(ctx, (frames, final)), final)


@group("research", "missing-product-price", 24)
def _missing_price(ctx: Ctx) -> str:
    a, p = asin(ctx.rng), ctx.rng.choice(PRODUCTS)
    return ctx.rng.choice(
        [
            f"missing product price for {a}",
            f"missing product price for {a} ({p})",
            f"missing product price for {a} ({p}) — research returned price=null",
            f"missing product price for {a}: offers list empty on {ctx.rng.choice(['amazon.com', 'amazon.de', 'amazon.co.uk'])}",
            f"QA research {video_id(ctx.rng)}: missing product price for {a}, rank #{ctx.rng.randint(1, 5)} in products.json",
        ]
    )


@group("research", "asin-is-accessory", 12)
def _accessory(ctx: Ctx) -> str:
    a = asin(ctx.rng)
    pairs = [
        ("replacement filter kit", "cordless vacuum"),
        ("charging dock", "robot vacuum"),
        ("silicone case", "wireless earbuds"),
        ("ear pads (2 pairs)", "over-ear headphones"),
        ("brush heads 4-pack", "electric toothbrush"),
        ("milk frothing jug", "espresso machine"),
        ("parchment liners 100 pcs", "air fryer"),
    ]
    acc, prod = ctx.rng.choice(pairs)
    return ctx.rng.choice(
        [
            f"ASIN {a} is accessories, not the product: listing is a {acc} (expected {prod})",
            f"ASIN {a} was accessories not {prod}: '{ctx.rng.choice(PRODUCTS)} {acc}' at ${ctx.rng.randint(6, 39)}.{ctx.rng.randint(0, 99):02d}",
            f"{video_id(ctx.rng)}: ASIN {a} is accessories ({acc}), detected by price anomaly (${ctx.rng.randint(5, 30)} vs category median ${ctx.rng.randint(90, 400)})",
        ]
    )


@group("research", "product-unavailable", 10)
def _unavailable(ctx: Ctx) -> str:
    a, p = asin(ctx.rng), ctx.rng.choice(PRODUCTS)
    since = (ctx.t - timedelta(days=ctx.rng.randint(1, 9))).strftime("%Y-%m-%d")
    return ctx.rng.choice(
        [
            f"product unavailable: {a} ({p}) is out of stock on amazon.com",
            f"product unavailable: {a} ({p}) — 'Currently unavailable. We don't know when or if this item will be back in stock.'",
            f"product unavailable: {a} out of stock since {since}",
        ]
    )


# --- script --------------------------------------------------------------------------------------


def openai_lib(ctx: Ctx, *, async_: bool) -> list[Frame]:
    aw = "await " if async_ else ""
    return lib(
        ctx,
        (
            "openai/resources/chat/completions/completions.py",
            (914, 2585),
            "create",
            f"return {aw}self._post(",
        ),
        (
            "openai/_base_client.py",
            (1242, 1794),
            "post",
            f"return {aw}self.request(cast_to, opts, stream=stream, stream_cls=stream_cls)",
        ),
        OPENAI_STATUS_ERROR,
    )


def script_llm_frames(ctx: Ctx) -> list[Frame]:
    caller = ctx.rng.choice(
        [
            (
                "pipeline/stages/script.py",
                "write_script",
                "draft = await llm.complete(prompt, schema=ScriptOutput)",
            ),
            (
                "pipeline/stages/script.py",
                "revise_script",
                "draft = await llm.complete(critique_prompt, schema=ScriptOutput)",
            ),
            ("pipeline/stages/script.py", "write_hook", "hook = await llm.complete(hook_prompt)"),
        ]
    )
    return app(
        ctx,
        ("pipeline/run.py", "run_stage", "result = await stage.run(ctx)"),
        caller,
        (
            "pipeline/llm/openai_client.py",
            "complete",
            "resp = await self.client.chat.completions.create(**kwargs)",
        ),
    ) + openai_lib(ctx, async_=True)


def org(rng: random.Random) -> str:
    return rng.choice(["org-Qx7Lr2mB8vT1yKc4Nd9PzWfa", "org-3hJk9PqRs0TuVw1XyZa2Bc4D"])


def retry_in(rng: random.Random) -> str:
    return rng.choice(
        [
            f"{rng.randint(1, 999)}ms",
            f"{rng.uniform(0.1, 9.9):.3g}s",
            f"{rng.randint(1, 40)}.{rng.randint(0, 999)}s",
            f"{rng.randint(1, 12)}m{rng.uniform(0, 59):.1f}s",
        ]
    )


@group("script", "openai-rate-limit-tpm", 124, bursty=True)
def _tpm(ctx: Ctx) -> str:
    rng = ctx.rng
    model = rng.choice([*MODELS_OPENAI[:2], "gpt-4o-mini"])
    limit = rng.choice([30000, 30000, 450000, 800000, 200000])
    used = rng.randint(int(limit * 0.8), limit)
    msg = (
        f"Rate limit reached for {model} in organization {org(rng)} on tokens per min (TPM): "
        f"Limit {limit}, Used {used}, Requested {rng.randint(400, 16000)}. Please try again in "
        f"{retry_in(rng)}. Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    if rng.random() < 0.3:
        msg += " You can increase your rate limit by adding a payment method to your account at https://platform.openai.com/account/billing."
    final = (
        f"openai.RateLimitError: Error code: 429 - {{'error': {{'message': '{msg}', 'type': 'tokens', "
        "'param': None, 'code': 'rate_limit_exceeded'}}"
    )
    return record(ctx, traceback(ctx, (script_llm_frames(ctx), final)), final)


@group("script", "openai-rate-limit-rpm", 22, bursty=True)
def _rpm(ctx: Ctx) -> str:
    rng = ctx.rng
    model = rng.choice([*MODELS_OPENAI[:2], "gpt-4o-mini"])
    limit = rng.choice([500, 500, 5000, 10000])
    msg = (
        f"Rate limit reached for {model} in organization {org(rng)} on requests per min (RPM): "
        f"Limit {limit}, Used {limit}, Requested 1. Please try again in {retry_in(rng)}. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    final = (
        f"openai.RateLimitError: Error code: 429 - {{'error': {{'message': '{msg}', 'type': 'requests', "
        "'param': None, 'code': 'rate_limit_exceeded'}}"
    )
    return record(ctx, traceback(ctx, (script_llm_frames(ctx), final)), final)


@group("script", "openai-insufficient-quota", 15, bursty=True)
def _quota(ctx: Ctx) -> str:
    final = (
        "openai.RateLimitError: Error code: 429 - {'error': {'message': 'You exceeded your current "
        "quota, please check your plan and billing details. For more information on this error, "
        "read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.', "
        "'type': 'insufficient_quota', 'param': None, 'code': 'insufficient_quota'}}"
    )
    return record(ctx, traceback(ctx, (script_llm_frames(ctx), final)), final)


def trunc_repr(value: str) -> str:
    """pydantic-core's ``input_value``: reprs over 50 characters keep 25 + ``...`` + 24."""
    return value if len(value) <= 50 else value[:25] + "..." + value[-24:]


def script_dict(rng: random.Random, drop: str) -> str:
    topic = rng.choice(TOPICS)
    fields = {
        "title": f"{topic.title()} — {rng.randint(3, 7)} Picks",
        "hook": rng.choice(
            [
                "Stop buying the wrong one.",
                "I tested all of them so you don't have to.",
                "This one surprised me.",
            ]
        ),
        "scenes": f"[{{'n': 1, 'text': 'Number {rng.randint(1, 5)}: the {rng.choice(PRODUCTS)}'}}]",
        "duration_seconds": str(rng.randint(420, 780)),
        "cta": "https://amzn.to/" + alnum(rng, 7),
    }
    del fields[drop]
    keys = list(fields)
    rng.shuffle(keys)
    parts = [
        f"'{k}': {fields[k] if k in ('scenes', 'duration_seconds') else repr(fields[k])}"
        for k in keys
    ]
    return "{" + ", ".join(parts) + "}"


def pydantic_record(ctx: Ctx, model: str, body: str) -> str:
    final = f"pydantic_core._pydantic_core.ValidationError: 1 validation error for {model}\n{body}"
    frames = app(
        ctx,
        ("pipeline/run.py", "run_stage", "result = await stage.run(ctx)"),
        (
            "pipeline/stages/script.py",
            ctx.rng.choice(["write_script", "revise_script"]),
            "script = parse_script(raw)",
        ),
        (
            "pipeline/stages/script.py",
            "parse_script",
            ctx.rng.choice(
                ["return ScriptOutput.model_validate(data)", "return ScriptOutput(**data)"]
            ),
        ),
    ) + lib(
        ctx,
        (
            "pydantic/main.py",
            (193, 705),
            ctx.rng.choice(["model_validate", "__init__"]),
            "validated_self = self.__pydantic_validator__.validate_python(data, self_instance=self)",
        ),
    )
    return record(ctx, traceback(ctx, (frames, final)), final, weights=(45, 30, 20, 5, 0))


def pyd_version(rng: random.Random) -> str:
    return rng.choice(["2.7", "2.8", "2.9", "2.10", "2.11"])


@group("script", "pydantic-scriptoutput-title-missing", 40)
def _pyd_title_missing(ctx: Ctx) -> str:
    value = trunc_repr(script_dict(ctx.rng, "title"))
    body = (
        f"title\n  Field required [type=missing, input_value={value}, input_type=dict]\n"
        f"    For further information visit https://errors.pydantic.dev/{pyd_version(ctx.rng)}/v/missing"
    )
    return pydantic_record(ctx, "ScriptOutput", body)


@group("script", "pydantic-scriptoutput-hook-missing", 9)
def _pyd_hook_missing(ctx: Ctx) -> str:
    value = trunc_repr(script_dict(ctx.rng, "hook"))
    body = (
        f"hook\n  Field required [type=missing, input_value={value}, input_type=dict]\n"
        f"    For further information visit https://errors.pydantic.dev/{pyd_version(ctx.rng)}/v/missing"
    )
    return pydantic_record(ctx, "ScriptOutput", body)


@group("script", "pydantic-scriptoutput-title-not-string", 6)
def _pyd_title_type(ctx: Ctx) -> str:
    titles = [f"{t.title()}" for t in ctx.rng.sample(TOPICS, 2)]
    value, kind = ctx.rng.choice(
        [
            (trunc_repr(repr(titles)), "list"),
            (trunc_repr(repr({"text": titles[0], "alt": titles[1]})), "dict"),
            ("None", "NoneType"),
        ]
    )
    body = (
        f"title\n  Input should be a valid string [type=string_type, input_value={value}, input_type={kind}]\n"
        f"    For further information visit https://errors.pydantic.dev/{pyd_version(ctx.rng)}/v/string_type"
    )
    return pydantic_record(ctx, "ScriptOutput", body)


def decoder_frames(ctx: Ctx, msg: str) -> list[Frame]:
    return app(
        ctx,
        (
            "pipeline/stages/script.py",
            ctx.rng.choice(["write_script", "revise_script"]),
            "data = json.loads(raw)",
        ),
    ) + std(
        ctx,
        JSON_LOADS,
        JSON_DECODE,
        (
            "json/decoder.py",
            (353, 355),
            "raw_decode",
            "obj, end = self.scan_once(s, idx)"
            if "Expecting value" not in msg
            else 'raise JSONDecodeError("Expecting value", s, err.value) from None',
        ),
    )


SENTENCES = [
    "It charges fast and runs quiet.",
    "The battery lasts all day, but the app is clunky.",
    "Build quality is solid for the price.",
    "If you have pets, this is the one to get.",
    "It's loud on the max setting — around 78 dB in my test.",
    "Setup took under five minutes.",
    "The dock is bigger than you'd expect, so measure your shelf.",
    "At this price, it's hard to argue with.",
    "Skip it if you need USB-C passthrough.",
    "Customer support answered in two days.",
]


def fake_script_json(rng: random.Random, scenes: int) -> str:
    out = [
        '{\n  "title": "'
        + rng.choice(TOPICS).title()
        + '",\n  "hook": "Stop buying the wrong one.",\n  "scenes": ['
    ]
    for i in range(scenes):
        p = rng.choice(PRODUCTS)
        out.append(
            f'\n    {{"n": {i + 1}, "product": "{p}", "asin": "{asin(rng)}", "text": "Number {i + 1}: the {p}. '
            + " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(3, 9)))
            + f'", "broll": ["scene_{i + 1:02d}a.png", "scene_{i + 1:02d}b.png"]}},'
        )
    return "".join(out)


@group("script", "json-malformed-llm-output", 34)
def _json_malformed(ctx: Ctx) -> str:
    rng = ctx.rng
    line, col = rng.randint(2, 140), rng.randint(1, 220)
    char = rng.randint(40, 14000)
    msg = rng.choice(
        [
            f"Expecting ',' delimiter: line {line} column {col} (char {char})",
            f"Expecting ',' delimiter: line {line} column {col} (char {char})",
            f"Unterminated string starting at: line {line} column {col} (char {char})",
            f"Expecting property name enclosed in double quotes: line {line} column {col} (char {char})",
            f"Extra data: line {line} column {col} (char {char})",
        ]
    )
    final = f"json.decoder.JSONDecodeError: {msg}"
    out = record(
        ctx, traceback(ctx, (decoder_frames(ctx, msg), final)), final, weights=(40, 35, 20, 5, 0)
    )
    if rng.random() < 0.25:
        # The worker appends the raw completion it could not parse; long scripts make long lines.
        raw = fake_script_json(rng, rng.randint(1, 22))
        out += f"\nraw completion ({len(raw)} chars): {raw!r}"
    return out


@group("script", "json-empty-completion", 12)
def _json_empty_completion(ctx: Ctx) -> str:
    msg = "Expecting value: line 1 column 1 (char 0)"
    final = f"json.decoder.JSONDecodeError: {msg}"
    out = record(
        ctx, traceback(ctx, (decoder_frames(ctx, msg), final)), final, weights=(40, 35, 20, 5, 0)
    )
    if ctx.rng.random() < 0.3:
        out += f"\nraw completion: {ctx.rng.choice(['None', repr(''), repr(chr(10))])} (finish_reason={ctx.rng.choice(['stop', 'content_filter'])!r})"
    return out


def anthropic_frames(ctx: Ctx) -> list[Frame]:
    return app(
        ctx,
        ("pipeline/run.py", "run_stage", "result = await stage.run(ctx)"),
        (
            "pipeline/stages/script.py",
            ctx.rng.choice(["write_script", "critique_script", "revise_script"]),
            "draft = await llm.complete(prompt, schema=ScriptOutput)",
        ),
        (
            "pipeline/llm/anthropic_client.py",
            "complete",
            "msg = await self.client.messages.create(**kwargs)",
        ),
    ) + lib(
        ctx,
        (
            "anthropic/resources/messages/messages.py",
            (930, 2210),
            "create",
            "return await self._post(",
        ),
        (
            "anthropic/_base_client.py",
            (1290, 1890),
            "post",
            "return await self.request(cast_to, opts, stream=stream, stream_cls=stream_cls)",
        ),
        (
            "anthropic/_base_client.py",
            (1085, 1640),
            "request",
            "raise self._make_status_error_from_response(err.response) from None",
        ),
    )


def req_id(rng: random.Random) -> str:
    return "req_011CV" + alnum(rng, 18)


@group("script", "anthropic-overloaded-529", 40, bursty=True)
def _overloaded(ctx: Ctx) -> str:
    rid = f", 'request_id': '{req_id(ctx.rng)}'" if ctx.rng.random() < 0.7 else ""
    cls = ctx.rng.choice(["InternalServerError", "OverloadedError"])
    final = f"anthropic.{cls}: Error code: 529 - {{'type': 'error', 'error': {{'type': 'overloaded_error', 'message': 'Overloaded'}}{rid}}}"
    return record(ctx, traceback(ctx, (anthropic_frames(ctx), final)), final)


@group("script", "anthropic-rate-limit-429", 18, bursty=True)
def _anthropic_rate(ctx: Ctx) -> str:
    rng = ctx.rng
    limit = rng.choice(
        [
            "40,000 input tokens",
            "80,000 input tokens",
            "16,000 output tokens",
            "400,000 input tokens",
        ]
    )
    rid = f", 'request_id': '{req_id(rng)}'" if rng.random() < 0.7 else ""
    final = (
        "anthropic.RateLimitError: Error code: 429 - {'type': 'error', 'error': {'type': 'rate_limit_error', "
        f"'message': 'This request would exceed the rate limit for your organization ({uuid(rng)}) of "
        f"{limit} per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can "
        "see the response headers for current usage. Please reduce the prompt length or the maximum tokens "
        "requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales "
        f"to discuss your options for a rate limit increase.'}}{rid}}}"
    )
    return record(ctx, traceback(ctx, (anthropic_frames(ctx), final)), final)


@group("script", "anthropic-prompt-too-long", 10)
def _prompt_too_long(ctx: Ctx) -> str:
    n = ctx.rng.randint(200_012, 262_000)
    rid = f", 'request_id': '{req_id(ctx.rng)}'" if ctx.rng.random() < 0.5 else ""
    final = (
        "anthropic.BadRequestError: Error code: 400 - {'type': 'error', 'error': {'type': "
        f"'invalid_request_error', 'message': 'prompt is too long: {n} tokens > 200000 maximum'}}{rid}}}"
    )
    return record(ctx, traceback(ctx, (anthropic_frames(ctx), final)), final)


@group("script", "anthropic-invalid-api-key", 2)
def _anthropic_auth(ctx: Ctx) -> str:
    final = "anthropic.AuthenticationError: Error code: 401 - {'type': 'error', 'error': {'type': 'authentication_error', 'message': 'invalid x-api-key'}}"
    return record(ctx, traceback(ctx, (anthropic_frames(ctx), final)), final)


@group("script", "llm-call-asyncio-timeout", 20)
def _asyncio_timeout(ctx: Ctx) -> str:
    rng = ctx.rng
    if ctx.env.py == 11:
        inner = std(ctx, ("asyncio/tasks.py", (490, 490), "wait_for", "return fut.result()"))
        outer_std = std(
            ctx,
            (
                "asyncio/tasks.py",
                (492, 492),
                "wait_for",
                "raise exceptions.TimeoutError() from exc",
            ),
        )
    else:
        inner = std(ctx, ("asyncio/tasks.py", (520, 520), "wait_for", "return await fut"))
        outer_std = std(
            ctx,
            ("asyncio/tasks.py", (519, 519), "wait_for", "async with timeouts.timeout(timeout):"),
            ("asyncio/timeouts.py", (115, 116), "__aexit__", "raise TimeoutError from exc_val"),
        )
    caller = app(
        ctx,
        ("pipeline/run.py", "run_stage", "result = await stage.run(ctx)"),
        (
            "pipeline/stages/script.py",
            rng.choice(["write_script", "revise_script", "critique_script"]),
            "draft = await asyncio.wait_for(llm.complete(prompt), timeout=LLM_TIMEOUT)",
        ),
    )
    tb = traceback(
        ctx, (inner, "asyncio.exceptions.CancelledError"), (caller + outer_std, "TimeoutError")
    )
    return ctx.rng.choice(
        [
            tb,
            tb,
            "TimeoutError",
            "asyncio.exceptions.TimeoutError",
            f"{stamp(ctx)} script step timed out: TimeoutError (limit {dur(rng, rng.choice([60, 90, 120, 180]))})",
        ]
    )


@group("script", "openai-api-timeout", 14)
def _api_timeout(ctx: Ctx) -> str:
    final = "openai.APITimeoutError: Request timed out."
    tb = traceback(
        ctx,
        (
            lib(ctx, HTTPCORE_MAP_EXCEPTIONS),
            "httpcore.ReadTimeout: The read operation timed out",
        ),
        (
            lib(ctx, HTTPX_MAP_EXCEPTIONS),
            "httpx.ReadTimeout: The read operation timed out",
        ),
        (
            script_llm_frames(ctx)[:-1]
            + lib(
                ctx,
                (
                    "openai/_base_client.py",
                    (1549, 1581),
                    "request",
                    "raise APITimeoutError(request=request) from err",
                ),
            ),
            final,
        ),
    )
    return record(ctx, tb, final)


@group("script", "openai-connection-error", 9)
def _api_conn(ctx: Ctx) -> str:
    final = "openai.APIConnectionError: Connection error."
    first = ctx.rng.choice(
        [
            (
                "httpcore.RemoteProtocolError: Server disconnected without sending a response.",
                "httpx.RemoteProtocolError: Server disconnected without sending a response.",
            ),
            (
                "httpcore.ConnectError: [Errno 104] Connection reset by peer",
                "httpx.ConnectError: [Errno 104] Connection reset by peer",
            ),
        ]
    )
    tb = traceback(
        ctx,
        (
            lib(ctx, HTTPCORE_MAP_EXCEPTIONS),
            first[0],
        ),
        (
            lib(ctx, HTTPX_MAP_EXCEPTIONS),
            first[1],
        ),
        (
            script_llm_frames(ctx)[:-1]
            + lib(
                ctx,
                (
                    "openai/_base_client.py",
                    (1559, 1591),
                    "request",
                    "raise APIConnectionError(request=request) from err",
                ),
            ),
            final,
        ),
    )
    return record(ctx, tb, final)


@group("script", "model-refused", 8)
def _refused(ctx: Ctx) -> str:
    rng = ctx.rng
    refusal = rng.choice(
        [
            "I'm sorry, but I can't help with that.",
            "I'm sorry, I can't assist with that request.",
            "I can’t help create marketing content that makes medical claims about this product.",
            "I'm unable to write a script comparing these products as requested.",
        ]
    )
    return rng.choice(
        [
            f"LLMRefusalError: {rng.choice(MODELS_OPENAI)} refused the script prompt for '{rng.choice(TOPICS)}': \"{refusal}\"",
            f"LLMRefusalError: model refused ({rng.choice(MODELS_OPENAI)}, video {video_id(rng)}): {refusal!r}",
        ]
    )


@group("script", "completion-truncated-max-tokens", 10)
def _truncated(ctx: Ctx) -> str:
    rng = ctx.rng
    n = rng.choice([2048, 4096, 4096, 8192, 16384])
    model = rng.choice([*MODELS_OPENAI, "gpt-4o-mini", *MODELS_CLAUDE])
    reason = "'max_tokens'" if model.startswith("claude") else "'length'"
    key = "stop_reason" if model.startswith("claude") else "finish_reason"
    return f"OutputTruncatedError: completion stopped at the token limit ({key}={reason}, output_tokens={n}, model='{model}', video={video_id(rng)})"


# --- script-review -------------------------------------------------------------------------------


@group("script-review", "script-too-long", 40)
def _too_long(ctx: Ctx) -> str:
    rng = ctx.rng
    mx = rng.choice([1800, 1800, 1500, 2000])
    n = rng.randint(mx + 40, mx + 1400)
    wpm = rng.choice([150, 160, 165])
    return rng.choice(
        [
            f"script too long: {words(n)} words (max {words(mx)})",
            f"script too long: {words(n)} words (max {words(mx)})",
            f"script too long: {n} words, limit {mx}; intro alone is {rng.randint(180, 480)} words",
            f"script too long — est. runtime {n // wpm}m{n % wpm * 60 // wpm:02d}s at {wpm} wpm (target ≤ {mx // wpm}m)",
            f"QA {video_id(rng)}: script too long ({words(n)}/{words(mx)} words), trim scenes {rng.randint(2, 4)}–{rng.randint(5, 7)}",
        ]
    )


@group("script-review", "script-too-short", 10)
def _too_short(ctx: Ctx) -> str:
    rng = ctx.rng
    mn = rng.choice([1200, 1200, 1000])
    n = rng.randint(300, mn - 30)
    return rng.choice(
        [
            f"script too short: {words(n)} words (min {words(mn)})",
            f"script too short: {n} words, minimum {mn}; scene {rng.randint(2, 6)} has {rng.randint(12, 40)} words",
            f"QA {video_id(rng)}: script too short ({words(n)}/{words(mn)} words)",
        ]
    )


@group("script-review", "unsupported-claim", 20)
def _claim(ctx: Ctx) -> str:
    rng = ctx.rng
    claim = rng.choice(
        [
            ("battery lasts {a} hours", "{b} hours", (20, 60)),
            ("charges a laptop to 50% in {a} minutes", "{b} minutes", (20, 45)),
            ("suction of {a} Pa", "{b} Pa", (2000, 12000)),
            ("weighs just {a} g", "{b} g", (180, 900)),
        ]
    )
    a = rng.randint(*claim[2])
    b = a - rng.randint(3, max(4, a // 4))
    said = claim[0].format(a=a)
    truth = claim[1].format(b=b)
    return rng.choice(
        [
            f"unsupported claim in scene {rng.randint(1, 7)}: '{said}' but research says {truth} ({asin(rng)})",
            f"unsupported claim: script says “{said}”, spec sheet for {rng.choice(PRODUCTS)} says {truth}",
        ]
    )


@group("script-review", "banned-phrase", 12)
def _banned(ctx: Ctx) -> str:
    rng = ctx.rng
    phrase = rng.choice(
        [
            "game-changer",
            "game changer",
            "must-have",
            "best ever",
            "no-brainer",
            "revolutionary",
            "you won't believe",
        ]
    )
    return rng.choice(
        [
            f"banned phrase '{phrase}' used in scene {rng.randint(1, 7)} (line {rng.randint(3, 90)})",
            f"banned phrase '{phrase}' used {rng.randint(2, 4)} times (scenes {rng.randint(1, 3)}, {rng.randint(4, 7)})",
        ]
    )


# --- assets --------------------------------------------------------------------------------------

COLORS = ["red", "blue", "black", "white", "silver", "matte grey", "rose-gold", "green"]
THINGS = [
    "car",
    "truck",
    "kettle",
    "vacuum",
    "headphones",
    "power bank",
    "air fryer",
    "robot vacuum",
    "toothbrush",
]


@group("assets", "image-hallucination", 104)
def _hallucination(ctx: Ctx) -> str:
    rng = ctx.rng
    p = rng.choice(PRODUCTS)
    c1, c2 = rng.sample(COLORS, 2)
    t1, t2 = rng.choice(THINGS), rng.choice(THINGS)
    n = rng.randint(1, 9)
    detail = rng.choice(
        [
            f"generated thumbnail shows a {c1} {t1} but script describes a {c2} {t2}",
            f"scene {n} shows a {c1} {p} but the product is {c2}",
            f"scene_{n:02d}.png adds a second charging dock that does not exist on the {p}",
            f"{p} rendered with {rng.randint(3, 6)} USB ports, the real unit has {rng.randint(1, 2)} ({asin(rng)})",
            f"logo reads '{rng.choice(['Sonny', 'Dysen', 'Anlker', 'Bosse', 'Ninjia', 'Xiaiomi'])}' instead of the brand (scene {n}, {rng.uniform(0.5, 60):.1f}s)",
            f"extra buttons on the {p} remote in scene {n} (real remote has {rng.randint(3, 8)})",
            f"product shown with a cable/handle that is not in the reference photos ({asin(rng)}, scene {n})",
            f"{p}: display shows '{rng.randint(10, 99)}:{rng.randint(10, 59)}' and a {c1} ring that the real model lacks",
        ]
    )
    lead = rng.choice(
        [
            "image hallucination: ",
            "image hallucination: ",
            "Image hallucination: ",
            "IMAGE HALLUCINATION — ",
            f"[QA {video_id(rng)}] image hallucination: ",
        ]
    )
    return lead + detail


@group("assets", "image-content-policy-violation", 15)
def _content_policy(ctx: Ctx) -> str:
    rid = f"req_{hexs(ctx.rng, 32)}"
    final = (
        "openai.BadRequestError: Error code: 400 - {'error': {'code': 'content_policy_violation', "
        "'message': 'Your request was rejected as a result of our safety system. Your prompt may "
        "contain text that is not allowed by our safety system.', 'param': None, 'type': "
        "'invalid_request_error'}}"
    )
    frames = app(
        ctx,
        (
            "pipeline/stages/assets.py",
            ctx.rng.choice(["generate_scene_images", "generate_thumbnail_bg"]),
            "img = await images.generate(prompt, size=SIZE)",
        ),
        (
            "pipeline/assets/images.py",
            "generate",
            "resp = await self.client.images.generate(model=self.model, prompt=prompt, size=size, n=1)",
        ),
    ) + lib(
        ctx,
        ("openai/resources/images.py", (260, 1390), "generate", "return await self._post("),
        (
            "openai/_base_client.py",
            (1242, 1794),
            "post",
            "return await self.request(cast_to, opts, stream=stream, stream_cls=stream_cls)",
        ),
        OPENAI_STATUS_ERROR,
    )
    out = record(ctx, traceback(ctx, (frames, final)), final)
    return out + (f" (x-request-id: {rid})" if ctx.rng.random() < 0.3 else "")


@group("assets", "dzine-generation-wait-timeout", 30)
def _playwright(ctx: Ctx) -> str:
    rng = ctx.rng
    ms = rng.choice([60000, 90000, 120000, 120000, 180000])
    log = ['  - waiting for locator("div.result-grid img.generated-image").first to be visible']
    for _ in range(rng.randint(0, 4)):
        log.append(
            f'    {rng.randint(1, 40)} × locator resolved to {rng.randint(0, 3)} elements. Proceeding with the first one: <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" class="generated-image placeholder"/>'
        )
    final = (
        f"playwright._impl._errors.TimeoutError: Locator.wait_for: Timeout {ms}ms exceeded.\nCall log:\n"
        + "\n".join(log)
    )
    frames = app(
        ctx,
        (
            "pipeline/stages/assets.py",
            "generate_scene_images",
            "path = await dzine.generate(page, prompt, ref_image)",
        ),
        (
            "pipeline/assets/dzine.py",
            "generate",
            'await page.locator("div.result-grid img.generated-image").first.wait_for(state="visible", timeout=GEN_TIMEOUT_MS)',
        ),
    ) + lib(
        ctx,
        (
            "playwright/async_api/_generated.py",
            (17800, 18100),
            "wait_for",
            "await self._impl_obj.wait_for(timeout=timeout, state=state)",
        ),
        (
            "playwright/_impl/_locator.py",
            (700, 720),
            "wait_for",
            "await self._frame.wait_for_selector(",
        ),
        (
            "playwright/_impl/_connection.py",
            (520, 560),
            "wrap_api_call",
            "raise rewrite_error(error, f\"{parsed_st['apiName']}: {error}\") from None",
        ),
    )
    out = record(ctx, traceback(ctx, (frames, final)), final, weights=(40, 35, 15, 10, 0))
    if rng.random() < 0.3:
        out = (
            f"dzine {video_id(rng)} scene {rng.randint(1, 8)} (progress {rng.randint(5, 95)}%): "
            + out
        )
    return out


@group("assets", "identical-images-generative-expand", 8)
def _identical(ctx: Ctx) -> str:
    rng = ctx.rng
    a, b = sorted(rng.sample(range(1, 10), 2))
    return rng.choice(
        [
            f"identical images from generative expand: scene_{a:02d}.png and scene_{b:02d}.png (phash distance 0)",
            f"identical images from generative expand: {rng.randint(2, 4)} of {rng.randint(4, 6)} outputs share sha256 {hexs(rng, 12)}… ({video_id(rng)})",
        ]
    )


@group("assets", "phone-ghost-in-background", 6)
def _ghost(ctx: Ctx) -> str:
    rng = ctx.rng
    return rng.choice(
        [
            f"phone ghost in background: faint second phone visible behind the product in scene {rng.randint(1, 8)}",
            f"phone ghost in bg after bg-remove ({video_id(rng)}, scene_{rng.randint(1, 8):02d}.png, {rng.randint(20, 60)}% opacity)",
        ]
    )


def asset_path(ctx: Ctx) -> str:
    rng = ctx.rng
    name = rng.choice(
        [
            f"scene_{rng.randint(1, 9):02d}.png",
            f"ref_{asin(rng)}.jpg",
            "thumb_bg.png",
            f"scene_{rng.randint(1, 9):02d}_bgremoved.png",
        ]
    )
    return rng.choice(
        [
            f"{run_dir(ctx)}/images/{name}",
            f"assets/{video_id(rng)}/{name}",
            f"./output/{video_id(rng)}/images/{name}",
            f"/tmp/dzine_{alnum(rng, 8).lower()}/{name}",
        ]
    )


def asset_frames(ctx: Ctx, code: str) -> list[Frame]:
    return app(
        ctx,
        (
            "pipeline/stages/assets.py",
            ctx.rng.choice(["collect_assets", "prepare_references", "generate_scene_images"]),
            code,
        ),
    )


@group("assets", "file-not-found", 25)
def _fnf(ctx: Ctx) -> str:
    path = asset_path(ctx)
    final = f"FileNotFoundError: [Errno 2] No such file or directory: '{path}'"
    frames = asset_frames(
        ctx,
        ctx.rng.choice(
            ["with open(path, 'rb') as f:", "img = Image.open(path)", "shutil.copy(path, dest)"]
        ),
    )
    return record(ctx, traceback(ctx, (frames, final)), final, weights=(45, 35, 10, 10, 0))


@group("assets", "permission-denied", 8)
def _perm(ctx: Ctx) -> str:
    path = asset_path(ctx)
    final = f"PermissionError: [Errno 13] Permission denied: '{path}'"
    frames = asset_frames(
        ctx,
        ctx.rng.choice(["img.save(path)", "with open(path, 'wb') as f:", "shutil.copy(src, path)"]),
    )
    return record(ctx, traceback(ctx, (frames, final)), final, weights=(45, 35, 10, 10, 0))


@group("assets", "is-a-directory", 3)
def _isdir(ctx: Ctx) -> str:
    path = ctx.rng.choice(
        ["assets/", f"./output/{video_id(ctx.rng)}/images", f"{run_dir(ctx)}/images/"]
    )
    final = f"IsADirectoryError: [Errno 21] Is a directory: '{path}'"
    return record(
        ctx,
        traceback(ctx, (asset_frames(ctx, "with open(path, 'rb') as f:"), final)),
        final,
        weights=(50, 50, 0, 0, 0),
    )


@group("assets", "downloaded-file-not-an-image", 10)
def _unidentified(ctx: Ctx) -> str:
    rng = ctx.rng
    target = rng.choice(
        [
            f"'/tmp/dzine_dl_{alnum(rng, 8).lower()}.webp'",
            f"<_io.BytesIO object at {addr(rng)}>",
            f"'{asset_path(ctx)}'",
        ]
    )
    final = f"PIL.UnidentifiedImageError: cannot identify image file {target}"
    frames = asset_frames(ctx, "img = Image.open(io.BytesIO(resp.content))") + lib(
        ctx, ("PIL/Image.py", (3280, 3536), "open", "raise UnidentifiedImageError(msg)")
    )
    return record(ctx, traceback(ctx, (frames, final)), final)


def cdn_image_url(rng: random.Random) -> str:
    return rng.choice(
        [
            f"https://m.media-amazon.com/images/I/{rng.randint(41, 81)}{alnum(rng, 9)}._AC_SL1500_.jpg",
            f"https://images-na.ssl-images-amazon.com/images/I/{rng.randint(41, 81)}{alnum(rng, 9)}.jpg",
        ]
    )


def download_frames(ctx: Ctx) -> list[Frame]:
    return app(
        ctx,
        (
            "pipeline/stages/assets.py",
            "prepare_references",
            "refs = [download_reference(u) for u in product.image_urls]",
        ),
        ("pipeline/assets/download.py", "download_reference", "r.raise_for_status()"),
    ) + lib(
        ctx,
        (
            "requests/models.py",
            (1021, 1026),
            "raise_for_status",
            "raise HTTPError(http_error_msg, response=self)",
        ),
    )


@group("assets", "reference-image-403-forbidden", 12, bursty=True)
def _ref_403(ctx: Ctx) -> str:
    final = f"requests.exceptions.HTTPError: 403 Client Error: Forbidden for url: {cdn_image_url(ctx.rng)}"
    return record(ctx, traceback(ctx, (download_frames(ctx), final)), final)


@group("assets", "reference-image-404-not-found", 5)
def _ref_404(ctx: Ctx) -> str:
    final = f"requests.exceptions.HTTPError: 404 Client Error: Not Found for url: {cdn_image_url(ctx.rng)}"
    return record(ctx, traceback(ctx, (download_frames(ctx), final)), final)


# --- thumbnail -----------------------------------------------------------------------------------


@group("thumbnail", "text-unreadable", 15)
def _unreadable(ctx: Ctx) -> str:
    rng = ctx.rng
    ratio = f"{rng.uniform(1.1, 3.9):.1f}:1"
    return rng.choice(
        [
            f"thumbnail text unreadable: contrast ratio {ratio} (min 4.5:1)",
            f"thumbnail text unreadable at 168x94 preview: '{rng.choice(TOPICS).upper()}' over busy background (contrast {ratio})",
            f"thumbnail text unreadable: {rng.randint(9, 14)} words, font {rng.randint(28, 48)}px at 1280x720",
        ]
    )


@group("thumbnail", "truncated-image-file", 6)
def _trunc_img(ctx: Ctx) -> str:
    final = f"OSError: image file is truncated ({ctx.rng.randint(1, 900)} bytes not processed)"
    frames = app(
        ctx, ("pipeline/stages/thumbnail.py", "compose", "bg = Image.open(bg_path).convert('RGB')")
    ) + lib(ctx, ("PIL/ImageFile.py", (280, 300), "load", "raise OSError(msg)"))
    return record(ctx, traceback(ctx, (frames, final)), final, weights=(50, 40, 10, 0, 0))


@group("thumbnail", "font-file-missing", 3)
def _font(ctx: Ctx) -> str:
    font = ctx.rng.choice(
        [
            "Montserrat-ExtraBold.ttf",
            "fonts/Anton-Regular.ttf",
            "/usr/share/fonts/truetype/bebas/BebasNeue-Regular.ttf",
        ]
    )
    frames = app(
        ctx,
        (
            "pipeline/stages/thumbnail.py",
            "compose",
            f'font = ImageFont.truetype("{font}", {ctx.rng.choice([96, 110, 128])})',
        ),
    ) + lib(
        ctx,
        ("PIL/ImageFont.py", (797, 860), "truetype", "return freetype(font)"),
        ("PIL/ImageFont.py", (227, 260), "__init__", "self.font = core.getfont("),
    )
    return traceback(ctx, (frames, "OSError: cannot open resource"))


@group("thumbnail", "wrong-dimensions", 2)
def _thumb_size(ctx: Ctx) -> str:
    w, h = ctx.rng.choice([(1280, 719), (1279, 720), (1024, 576)])
    return f"thumbnail wrong size: {w}x{h} (expected 1280x720)"


# --- tts -----------------------------------------------------------------------------------------

NAMES = [
    "Nguyen",
    "Hyundai",
    "Xiaomi",
    "Łódź",
    "Kärcher",
    "De'Longhi",
    "Huawei",
    "Roborock",
    "Saoirse",
    "Şahin",
    "Miele",
    "Porsche",
    "Gigabyte",
    "Qi2",
    "Wi-Fi 6E",
    "Sennheiser",
    "Ærø",
]


@group("tts", "mispronounced-name", 36)
def _mispronounced(ctx: Ctx) -> str:
    rng = ctx.rng
    name = rng.choice(NAMES)
    at = clock(rng, ms=rng.random() < 0.2)
    return rng.choice(
        [
            f"TTS mispronounced '{name}' at {at}",
            f"TTS mispronounced '{name}' at {at}",
            f"TTS mispronounced “{name}” at {at} (voice: {rng.choice(['Rachel', 'Adam', 'Brian', 'Charlotte'])})",
            f"TTS mispronounced '{name}' at {at}: said '{name.lower()[:3]}-{rng.choice(['UN', 'mee', 'ock', 'ay'])}-{rng.choice(['die', 'la', 'er'])}'",
            f"{video_id(rng)} voiceover: TTS mispronounced '{name}' at {at} and {clock(rng)}",
        ]
    )


def eleven_frames(ctx: Ctx) -> list[Frame]:
    return app(
        ctx,
        (
            "pipeline/stages/tts.py",
            ctx.rng.choice(["synthesize_voiceover", "synthesize_scene"]),
            "audio = client.text_to_speech.convert(voice_id=voice_id, text=chunk, model_id=MODEL)",
        ),
    ) + lib(
        ctx,
        (
            "elevenlabs/text_to_speech/client.py",
            (120, 1400),
            "convert",
            "raise ApiError(status_code=_response.status_code, body=_response_json)",
        ),
    )


def eleven_headers(rng: random.Random, t: datetime) -> str:
    return (
        f"headers: {{'date': '{t:%a, %d %b %Y %H:%M:%S} GMT', 'server': 'uvicorn', 'content-length': '{rng.randint(150, 260)}', "
        f"'content-type': 'application/json', 'request-id': '{alnum(rng, 20)}', 'access-control-allow-origin': '*', "
        f"'via': '1.1 google', 'alt-svc': 'h3=\":443\"; ma=2592000,h3-29=\":443\"; ma=2592000'}}, "
    )


@group("tts", "elevenlabs-quota-exceeded", 12, bursty=True)
def _eleven_quota(ctx: Ctx) -> str:
    rng = ctx.rng
    left = rng.randint(0, 3000)
    need = left + rng.randint(50, 4000)
    headers = eleven_headers(rng, ctx.t) if rng.random() < 0.5 else ""
    final = (
        f"elevenlabs.core.api_error.ApiError: {headers}status_code: 401, body: {{'detail': {{'status': 'quota_exceeded', "
        f"'message': 'This request exceeds your quota of {rng.choice([100000, 500000, 2000000])}. You have {left} credits "
        f"remaining, while {need} credits are required for this request.'}}}}"
    )
    return record(ctx, traceback(ctx, (eleven_frames(ctx), final)), final)


@group("tts", "elevenlabs-voice-not-found", 5)
def _eleven_voice(ctx: Ctx) -> str:
    rng = ctx.rng
    headers = eleven_headers(rng, ctx.t) if rng.random() < 0.5 else ""
    voice = rng.choice(["21m00Tcm4TlvDq8ikWAM", "pNInz6obpgDQGcFmaJgB", alnum(rng, 20)])
    final = (
        f"elevenlabs.core.api_error.ApiError: {headers}status_code: 404, body: {{'detail': {{'status': 'voice_not_found', "
        f"'message': 'A voice with voice_id {voice} does not exist.'}}}}"
    )
    return record(ctx, traceback(ctx, (eleven_frames(ctx), final)), final)


@group("tts", "audio-clipping", 8)
def _clipping(ctx: Ctx) -> str:
    rng = ctx.rng
    return rng.choice(
        [
            f"audio clipping detected: peak {rng.choice(['+', '-'])}{rng.uniform(0, 0.9):.1f} dBFS at {clock(rng)}",
            f"audio clipping detected in voiceover_{video_id(rng)}.wav: {rng.randint(2, 80)} clipped samples between {clock(rng)} and {clock(rng)}",
        ]
    )


@group("tts", "silence-gap", 10)
def _silence(ctx: Ctx) -> str:
    rng = ctx.rng
    gap = rng.uniform(2.1, 9.5)
    return rng.choice(
        [
            f"silence gap of {gap:.1f}s at {clock(rng)} in voiceover",
            f"silence gap of {round(gap * 1000)}ms at {clock(rng, ms=True)} (threshold 2s)",
            f"silence gap of {dur(rng, gap)} between scene {rng.randint(1, 4)} and scene {rng.randint(5, 8)} ({video_id(rng)})",
        ]
    )


@group("tts", "httpx-read-timeout", 18)
def _tts_timeout(ctx: Ctx) -> str:
    final = "httpx.ReadTimeout: The read operation timed out"
    tb = traceback(
        ctx,
        (
            lib(ctx, HTTPCORE_MAP_EXCEPTIONS),
            "httpcore.ReadTimeout: The read operation timed out",
        ),
        (
            eleven_frames(ctx)[:1] + lib(ctx, HTTPX_MAP_EXCEPTIONS),
            final,
        ),
    )
    out = record(ctx, tb, final, weights=(45, 35, 10, 10, 0))
    if ctx.rng.random() < 0.25:
        out += f" (chunk {ctx.rng.randint(1, 30)}/{ctx.rng.randint(30, 60)}, {ctx.rng.randint(400, 2500)} chars)"
    return out


# --- render --------------------------------------------------------------------------------------


def ffmpeg_cmd(ctx: Ctx, src: str, dst: str) -> list[str]:
    rng = ctx.rng
    args = ["ffmpeg", "-y", "-hide_banner"]
    if rng.random() < 0.4:
        args += ["-loglevel", "error"]
    args += ["-i", src]
    if rng.random() < 0.5:
        args += ["-i", f"{src.rsplit('/', 2)[0]}/audio/voiceover.mp3"]
    args += rng.choice(
        [
            [
                "-vf",
                "scale=1080:1920,setsar=1",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-crf",
                str(rng.randint(18, 23)),
            ],
            ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", "30", "-c:a", "aac", "-b:a", "192k"],
            [
                "-filter_complex",
                f"[0:v]zoompan=z='min(zoom+0.0015,1.5)':d={rng.randint(90, 300)}:s=1920x1080[v]",
                "-map",
                "[v]",
                "-c:v",
                "libx264",
            ],
            ["-c:v", "libx264", "-movflags", "+faststart", "-c:a", "copy"],
        ]
    )
    return [*args, dst]


def scene_paths(ctx: Ctx) -> tuple[str, str]:
    d = run_dir(ctx)
    n = ctx.rng.randint(1, 12)
    src = ctx.rng.choice(
        [
            f"{d}/scenes/scene_{n:02d}.mp4",
            f"{d}/images/scene_{n:02d}.png",
            f"{d}/broll/{alnum(ctx.rng, 11)}.mp4",
        ]
    )
    dst = ctx.rng.choice(
        [f"{d}/out/scene_{n:02d}.mp4", f"{d}/out/final.mp4", f"{d}/render/part_{n:03d}.mp4"]
    )
    return src, dst


def called_process(ctx: Ctx, cmd: list[str], code: int, stderr: str | None) -> str:
    final = (
        f"subprocess.CalledProcessError: Command '{cmd!r}' returned non-zero exit status {code}."
    )
    frames = app(
        ctx,
        (
            "pipeline/stages/render.py",
            ctx.rng.choice(["render_scene", "concat_scenes", "mux_audio"]),
            "run_ffmpeg(cmd)",
        ),
        (
            "pipeline/render/ffmpeg.py",
            "run_ffmpeg",
            "subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT)",
        ),
    ) + std(
        ctx, ("subprocess.py", (571, 577), "run", "raise CalledProcessError(retcode, process.args,")
    )
    rng = ctx.rng
    way = rng.randrange(4)
    if way == 0:
        text = traceback(ctx, (frames, final))
    elif way == 1:
        text = final
    elif way == 2:
        text = short(final)
    else:
        text = f"RenderError: ffmpeg failed (exit {code}) for {cmd[-1]}"
    if stderr is not None:
        text += rng.choice(["\nstderr:\n", "\n--- ffmpeg stderr (tail) ---\n", "\n"]) + stderr
    return text


def ff_banner_noise(ctx: Ctx, src: str) -> str:
    rng = ctx.rng
    if rng.random() < 0.5 or not src.endswith(".mp4"):
        return ""
    return (
        f"Input #0, mov,mp4,m4a,3gp,3g2,mj2, from '{src}':\n"
        f"  Duration: 00:00:{rng.randint(3, 59):02d}.{rng.randint(0, 99):02d}, start: 0.000000, bitrate: {rng.randint(800, 9000)} kb/s\n"
        f"  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 1920x1080, {rng.randint(800, 9000)} kb/s, 30 fps\n"
    )


@group("render", "ffmpeg-invalid-input-data", 35)
def _ff_invalid(ctx: Ctx) -> str:
    rng = ctx.rng
    src, dst = scene_paths(ctx)
    lead = rng.choice(
        [
            f"[mov,mp4,m4a,3gp,3g2,mj2 @ {ffaddr(rng)}] moov atom not found\n",
            f"[png @ {ffaddr(rng)}] Invalid PNG signature 0x3C21444F43545950.\n",
            f"[h264 @ {ffaddr(rng)}] Invalid NAL unit size ({rng.randint(1000, 99999)} > {rng.randint(100, 999)}).\n",
            "",
        ]
    )
    return called_process(
        ctx, ffmpeg_cmd(ctx, src, dst), 1, f"{lead}{src}: Invalid data found when processing input"
    )


@group("render", "ffmpeg-missing-input", 20)
def _ff_missing(ctx: Ctx) -> str:
    src, dst = scene_paths(ctx)
    cmd = ffmpeg_cmd(ctx, src, dst)
    inputs = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-i"]
    return called_process(ctx, cmd, 1, f"{ctx.rng.choice(inputs)}: No such file or directory")


@group("render", "ffmpeg-output-dir-missing", 6)
def _ff_outdir(ctx: Ctx) -> str:
    rng = ctx.rng
    src, dst = scene_paths(ctx)
    stderr = ff_banner_noise(ctx, src) + (
        f"[out#0/mp4 @ {ffaddr(rng)}] Error opening output {dst}: No such file or directory\n"
        f"Error opening output file {dst}.\nError opening output files: No such file or directory"
    )
    return called_process(ctx, ffmpeg_cmd(ctx, src, dst), 1, stderr)


@group("render", "ffmpeg-oom-killed", 15)
def _ff_oom(ctx: Ctx) -> str:
    rng = ctx.rng
    src, dst = scene_paths(ctx)
    cmd = ffmpeg_cmd(ctx, src, dst)
    f = rng.randint(200, 9000)
    progress = (
        f"frame= {f:5d} fps={rng.randint(8, 60):3d} q={rng.uniform(20, 32):.1f} size= {rng.randint(1000, 90000):7d}kB "
        f"time=00:0{rng.randint(0, 5)}:{rng.randint(10, 59)}.{rng.randint(10, 99)} bitrate={rng.uniform(800, 9000):.1f}kbits/s speed={rng.uniform(0.3, 2.5):.2f}x"
    )
    if rng.random() < 0.25:
        # Run without a shell, the kernel's SIGKILL shows as a signal, not as 128 + 9.
        final = f"subprocess.CalledProcessError: Command '{cmd!r}' died with <Signals.SIGKILL: 9>."
        return final + (f"\n{progress}" if rng.random() < 0.5 else "")
    return called_process(ctx, cmd, 137, progress if rng.random() < 0.6 else None)


@group("render", "ffmpeg-odd-dimensions", 10)
def _ff_odd(ctx: Ctx) -> str:
    rng = ctx.rng
    src, dst = scene_paths(ctx)
    w, h = rng.choice([(1081, 1920), (1080, 1917), (721, 1280), (1919, 1080), (607, 1080)])
    stderr = ff_banner_noise(ctx, src) + (
        f"[libx264 @ {ffaddr(rng)}] {'width' if w % 2 else 'height'} not divisible by 2 ({w}x{h})\n"
        "Error initializing output stream 0:0 -- Error while opening encoder for output stream #0:0 - "
        "maybe incorrect parameters such as bit_rate, rate, width or height\nConversion failed!"
    )
    return called_process(ctx, ffmpeg_cmd(ctx, src, dst), 1, stderr)


@group("render", "ffmpeg-timeout-expired", 25)
def _ff_timeout(ctx: Ctx) -> str:
    src, dst = scene_paths(ctx)
    cmd = ffmpeg_cmd(ctx, src, dst)
    secs = ctx.rng.choice(["300", "300", "600", "900", "1800", "120.0"])
    final = f"subprocess.TimeoutExpired: Command '{cmd!r}' timed out after {secs} seconds"
    frames = app(
        ctx,
        (
            "pipeline/stages/render.py",
            ctx.rng.choice(["render_scene", "concat_scenes"]),
            "run_ffmpeg(cmd)",
        ),
        (
            "pipeline/render/ffmpeg.py",
            "run_ffmpeg",
            "subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT)",
        ),
    ) + std(
        ctx,
        (
            "subprocess.py",
            (550, 556),
            "run",
            "stdout, stderr = process.communicate(input, timeout=timeout)",
        ),
        (
            "subprocess.py",
            (1209, 1222),
            "communicate",
            "stdout, stderr = self._communicate(input, endtime, timeout)",
        ),
        (
            "subprocess.py",
            (2115, 2160),
            "_communicate",
            "self._check_timeout(endtime, orig_timeout, stdout, stderr)",
        ),
        ("subprocess.py", (1253, 1270), "_check_timeout", "raise TimeoutExpired("),
    )
    return record(ctx, traceback(ctx, (frames, final)), final, weights=(40, 35, 15, 10, 0))


@group("render", "render-job-timeout", 102, bursty=True)
def _job_timeout(ctx: Ctx) -> str:
    rng = ctx.rng
    job = rng.choice([hexs(rng, 8), uuid(rng), hexs(rng, 4) + "…"])
    waited = rng.choice(
        [rng.uniform(30, 32), rng.uniform(59, 61), rng.uniform(120, 900), rng.uniform(0.5, 0.99)]
    )
    tail = rng.choice(
        [
            "",
            "",
            f" (status=RENDERING, {rng.randint(1, 99)}% done)",
            f" (status=QUEUED, position {rng.randint(1, 14)})",
            f" on {rng.choice(['render-01', 'render-02', 'gpu-a10-3', 'davinci-ws'])}.lan",
        ]
    )
    text = f"Timeout after {dur(rng, waited)} waiting for render job {job}{tail}"
    return rng.choice([text, text, f"{stamp(ctx)} {text}", f"RenderTimeoutError: {text}"])


@group("render", "duplicate-scene", 20)
def _dup_scene(ctx: Ctx) -> str:
    rng = ctx.rng
    a = rng.uniform(1, 60)
    b = a + rng.uniform(5, 300)
    return rng.choice(
        [
            f"duplicate scene detected at {a:.1f}s and {b:.1f}s",
            f"duplicate scene detected at {a:.1f}s and {b:.1f}s",
            f"duplicate scene detected: scene {rng.randint(1, 4)} ({clock(rng, 60)}) and scene {rng.randint(5, 12)} ({clock(rng, 600)}) are {rng.uniform(95, 100):.1f}% similar",
            f"duplicate scene detected in {video_id(rng)} at {dur(rng, a)} and {dur(rng, b)}",
        ]
    )


@group("render", "disk-full", 3)
def _disk(ctx: Ctx) -> str:
    dst = scene_paths(ctx)[1]
    final = f"OSError: [Errno 28] No space left on device: '{dst}'"
    return record(
        ctx,
        traceback(
            ctx,
            (
                app(
                    ctx, ("pipeline/stages/render.py", "concat_scenes", "shutil.copyfile(tmp, dst)")
                ),
                final,
            ),
        ),
        final,
        weights=(50, 50, 0, 0, 0),
    )


@group("render", "davinci-media-offline", 5)
def _offline(ctx: Ctx) -> str:
    rng = ctx.rng
    return f"render job {hexs(rng, 8)} failed: Resolve reported status 'Failed' (Media Offline: {rng.randint(1, 6)} clip(s) in timeline '{video_id(rng)}_main', first at {clock(rng, 600)})"


# --- upload --------------------------------------------------------------------------------------


@group("upload", "youtube-api-quota-exceeded", 25, bursty=True)
def _yt_quota(ctx: Ctx) -> str:
    rng = ctx.rng
    vid = alnum(rng, 11)
    url = rng.choice(
        [
            "https://youtube.googleapis.com/upload/youtube/v3/videos?part=snippet%2Cstatus&notifySubscribers=false&alt=json&uploadType=resumable",
            f"https://youtube.googleapis.com/upload/youtube/v3/thumbnails/set?videoId={vid}&alt=json&uploadType=media",
            "https://youtube.googleapis.com/youtube/v3/playlistItems?part=snippet&alt=json",
        ]
    )
    quota = 'The request cannot be completed because you have exceeded your <a href="/youtube/v3/getting-started#quota">quota</a>.'
    final = (
        f'googleapiclient.errors.HttpError: <HttpError 403 when requesting {url} returned "{quota}". '
        f"Details: \"[{{'message': '{quota}', 'domain': 'youtube.quota', 'reason': 'quotaExceeded'}}]\">"
    )
    frames = app(
        ctx,
        (
            "pipeline/stages/publish.py",
            rng.choice(["upload_video", "set_thumbnail", "add_to_playlist"]),
            "response = request.execute()"
            if rng.random() < 0.5
            else "status, response = request.next_chunk()",
        ),
    ) + lib(
        ctx,
        (
            "googleapiclient/_helpers.py",
            (130, 130),
            "positional_wrapper",
            "return wrapped(*args, **kwargs)",
        ),
        (
            "googleapiclient/http.py",
            (938, 1068),
            "next_chunk",
            "return self._process_response(resp, content)",
        ),
        (
            "googleapiclient/http.py",
            (1094, 1100),
            "_process_response",
            "raise HttpError(resp, content, uri=self.uri)",
        ),
    )
    return record(ctx, traceback(ctx, (frames, final)), final)


def tiktok_prefix(rng: random.Random) -> str:
    return f"UploadError: tiktok upload of {video_id(rng)}_{rng.choice(['final', 'short', 'v2'])}.mp4 rejected"


@group("upload", "tiktok-post-quota-exceeded", 9)
def _tt_quota(ctx: Ctx) -> str:
    rng = ctx.rng
    n = rng.choice([15, 20])
    return f"{tiktok_prefix(rng)}: quota exceeded ({n}/{n} posts in 24h for @{rng.choice(['rayvault.deals', 'rayvault_tech', 'ray.reviews'])}, resets in {dur(rng, rng.uniform(600, 80000))})"


@group("upload", "tiktok-file-too-large", 6)
def _tt_large(ctx: Ctx) -> str:
    rng = ctx.rng
    size = rng.uniform(4.01, 6.5)
    return (
        f"{tiktok_prefix(rng)}: file too large ({size:.2f} GB, max 4 GB)"
        if rng.random() < 0.6
        else f"{tiktok_prefix(rng)}: file too large ({round(size * 1024)} MB > 4096 MB)"
    )


@group("upload", "oauth-token-revoked", 10)
def _invalid_grant(ctx: Ctx) -> str:
    final = (
        "google.auth.exceptions.RefreshError: ('invalid_grant: Token has been expired or revoked.', "
        "{'error': 'invalid_grant', 'error_description': 'Token has been expired or revoked.'})"
    )
    frames = app(
        ctx, ("pipeline/stages/publish.py", "youtube_client", "creds.refresh(Request())")
    ) + lib(
        ctx,
        ("google/oauth2/credentials.py", (409, 440), "refresh", ") = reauth.refresh_grant("),
        (
            "google/oauth2/reauth.py",
            (366, 370),
            "refresh_grant",
            "_client._handle_error_response(response_data, retryable_error)",
        ),
        (
            "google/oauth2/_client.py",
            (68, 72),
            "_handle_error_response",
            "raise exceptions.RefreshError(",
        ),
    )
    return record(ctx, traceback(ctx, (frames, final)), final)


@group("upload", "broken-pipe", 4)
def _broken_pipe(ctx: Ctx) -> str:
    final = "BrokenPipeError: [Errno 32] Broken pipe"
    frames = app(
        ctx,
        ("pipeline/stages/publish.py", "upload_video", "status, response = request.next_chunk()"),
    ) + std(ctx, ("ssl.py", (1180, 1211), "sendall", "v = self.send(byte_view[count:])"))
    out = record(ctx, traceback(ctx, (frames, final)), final, weights=(50, 30, 0, 20, 0))
    return out + (
        f" (chunk {ctx.rng.randint(3, 400)} of {ctx.rng.randint(400, 900)}, {ctx.rng.randint(8, 64)} MiB)"
        if ctx.rng.random() < 0.4
        else ""
    )


# --- arrival order and output ---------------------------------------------------------------------


def arrival_times(rng: random.Random, g: Group) -> list[datetime]:
    """When each message of ``g`` arrives: rate limits and outages come in bursts, the rest spread
    over the whole period."""
    if not g.bursty:
        return [START + timedelta(seconds=rng.uniform(0, SPAN_HOURS * 3600)) for _ in range(g.size)]
    centers = [rng.uniform(0, SPAN_HOURS * 3600) for _ in range(max(2, g.size // 12))]
    return [
        START + timedelta(seconds=rng.choice(centers) + abs(rng.gauss(0, 900)))
        for _ in range(g.size)
    ]


def build() -> list[dict[str, str]]:
    """Every message of every group, in arrival order."""
    rows: list[tuple[datetime, str, int, dict[str, str]]] = []
    for g in GROUPS:
        rng = random.Random(f"{SEED}:{g.label}")
        for i, t in enumerate(arrival_times(rng, g)):
            ctx = Ctx(rng, t, env_for(rng))
            rows.append(
                (t, g.label, i, {"stage": g.stage, "text": g.render(ctx), "group": g.label})
            )
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [r[3] for r in rows]


def write(path: Path) -> int:
    """Write the set to ``path`` (UTF-8 JSON lines); returns the number of messages."""
    rows = build()
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_bytes(data.encode("utf-8"))
    return len(rows)


def main(argv: Sequence[str]) -> int:
    out = Path(argv[0]) if argv else OUTPUT
    n = write(out)
    print(f"wrote {n} messages in {len(GROUPS)} groups to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
