"""log_error latency on a root that already holds many entries, for known and for new failures.

    python benchmarks/bench_log_error.py [--history 10000] [--samples 2000] [--tree DIR]

Two figures, p50 and p95 in milliseconds: ``known`` logs variants of failures the root has seen
(new numbers, ids and durations in a known template: the common case, one indexed look-up of its
pattern), ``new`` logs a failure text no one has seen (a new pattern: its cluster is made). The
history is written through ``log_error`` first (recurring failures of a few stages).

``--tree DIR`` measures another checkout of this project instead (for a before/after comparison:
``git worktree add /tmp/before <commit>``, then run both, alternating, several times; the machine's
noise is larger than most differences).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--history", type=int, default=10_000, help="entries written first")
    parser.add_argument("--samples", type=int, default=2_000, help="timed calls per figure")
    parser.add_argument("--tree", type=Path, help="measure this checkout instead")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.tree or Path(__file__).resolve().parents[1]))

    from rayvault.learning.errors import log_error
    from rayvault.learning.store import FileStore

    templates = [
        "Timeout after {n}.{m}s waiting for render job {h:08x}",
        "HTTP 429 Too Many Requests for https://api.example.com/v1/items/{n}",
        "FileNotFoundError: [Errno 2] No such file or directory: '/srv/videos/v{n}/scene_{m}.png'",
        "KeyError: 'choices' in response {h:08x}",
        "ffmpeg exited with status 1 after {n}.{m}s on clip {m}",
    ]
    stages = ["render", "research", "assets", "script", "render"]

    def text(i: int) -> tuple[str, str]:
        k = i % len(templates)
        return stages[k], templates[k].format(n=i % 997, m=i % 13, h=i * 7919)

    with tempfile.TemporaryDirectory(prefix="bench-log-error-") as folder:
        store = FileStore(Path(folder))
        for i in range(args.history):
            stage, failure = text(i)
            log_error(f"v{i % 50:03d}", stage, failure, store=store)

        def timed(make: object) -> list[float]:
            times = []
            for i in range(args.samples):
                stage, failure = make(args.history + i)  # type: ignore[operator]
                start = time.perf_counter()
                log_error(f"v{i % 50:03d}", stage, failure, store=store)
                times.append((time.perf_counter() - start) * 1e3)
            return times

        known = timed(text)
        new = timed(lambda i: ("script", f"reviewer flagged {_word(i)} before {_word(i * 31 + 7)}"))
        store.close()
    for name, times in (("known", known), ("new", new)):
        q = statistics.quantiles(times, n=20)
        print(
            f"log_error {name:5}  p50 {statistics.median(times):.3f} ms  p95 {q[18]:.3f} ms  "
            f"({args.samples} calls, {args.history} entries before, {args.tree or 'this tree'})"
        )


def _word(i: int) -> str:
    """A word without digits, different for every ``i`` (digits would be masked away)."""
    return "".join(chr(97 + (i // 26**k) % 26) for k in range(5))


if __name__ == "__main__":
    main()
