"""Where the transport thread's time goes, per stage, in µs per delivered event.

``python benchmarks/profile_transport.py [--events 20000] [--sender htevents-logging-handler]
[--batch N] [--clock cpu|wall] [--backlog] [--detail 3]``

Starts the benchmark collector in its own process on 127.0.0.1, then, in this process, sends
bursts of ``--events`` logged events (by default through ``HtEventsHandler``, as ``burst.py``
does) and waits for ``flush``:

1. a small warm-up burst (imports, caches, the first connection);
2. a burst without the profiler: the transport thread's own CPU time (read from outside
   through its thread CPU clock), the process's CPU and the calling thread's, per event;
3. the same burst with ``cProfile`` enabled inside the transport thread only. The hook wraps
   ``threading.Thread.run`` for the thread named ``htevents-transport`` (the name is the only
   internal it relies on), so no other thread is profiled; the profile ends when the thread
   does, at ``close()``. ``--clock cpu`` (the default) times with the thread's CPU clock, so
   waiting (for the GIL, the collector, the queue) costs nothing; ``--clock wall`` counts it.

Each profiled function is given a stage by its module path (and, for validation, its name:
see ``STAGES``); a function of no stage (a builtin, ``threading``, ``http.client``...) belongs
to the stage of whoever called it, split by the time each caller spent in it. What belongs to
no stage at all (the worker's own loop, and anything new) is ``other``, so the rows sum to the
total. ``--detail N`` lists the N functions that weigh most in each stage, which shows where a
new internal function landed. Profiling slows the thread down (every call is timed), the
more so for code made of many small calls, so the profiled µs are larger than the real ones;
the last column scales each stage's share to the thread's CPU measured without the profiler.

``--backlog`` holds the transport thread until every event is queued, then lets it go: the
profile of draining a backlog, without the calling thread competing for the GIL.

It needs Python 3.9 to 3.11: from 3.12, ``cProfile`` is built on ``sys.monitoring``, which
cannot be enabled for one thread only.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import re
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import fast_collector
import netguard
from burst import process_cpu_s
from procs import benchmark_collector
from sdks import OURS, make_sdk

THREAD_NAME = "htevents-transport"

#: A pstats function key: (file name, first line, function name).
Func = tuple[str, int, str]

# Functions that check a message, wherever they live: the names of today's checks, and any
# name that says it validates, checks or requires. Checks written inline in build_message
# count as "draft → message".
_VALIDATORS = re.compile(
    r"^(_gather|_mapping|_optional_str|id_text|bounded_dict|_?valid\w*|_?check\w*|_?requir\w*)$"
)


def _in(*fragments: str) -> Callable[[str, str], bool]:
    def match(path: str, name: str) -> bool:
        return any(fragment in path for fragment in fragments)

    return match


#: Stage -> what makes a function part of it (matched on its path with "/" separators and its
#: name), first match wins. Order matters: validation is picked out of the message modules,
#: the queue functions out of the worker. Helper modules used by several stages (``_time.py``:
#: a message's timestamp, and the request's ``sentAt``; ``_identity.py``, ``_diagnostics.py``)
#: have no stage of their own: they count for their caller's.
STAGES: list[tuple[str, Callable[[str, str], bool]]] = [
    (
        "validation",
        lambda path, name: (
            "htevents_logging/" in path and (bool(_VALIDATORS.match(name)) or "valid" in path)
        ),
    ),
    (
        # The message's wire form too, though the message model (_message.py) makes it.
        "encoding",
        lambda path, name: (
            "htevents_logging/_encoding.py" in path
            or "/json/" in path
            or ("htevents_logging/_message.py" in path and name.startswith("encode"))
        ),
    ),
    (
        "draft → message",
        _in(
            "htevents_logging/_frontends/",
            "htevents_logging/_message.py",
            "htevents_logging/_client.py",
        ),
    ),
    ("batching", _in("htevents_logging/_transport/batcher.py")),
    (
        "sending",
        _in(
            "htevents_logging/_transport/sender.py",
            "htevents_logging/_transport/channel.py",
            "htevents_logging/_transport/http11.py",
            "htevents_logging/_transport/exporters.py",
            "htevents_logging/_transport/spool.py",
            "/requests/",
            "/urllib3/",
            "/http/client.py",
        ),
    ),
    ("outcomes", _in("htevents_logging/_transport/ledger.py")),
    (
        "queue (take, linger)",
        lambda path, name: (
            "htevents_logging/_transport/worker.py" in path
            and name in ("dequeue", "timed_get", "_linger_while_busy", "_time_left")
        ),
    ),
]
STAGE_NAMES = [name for name, _ in STAGES]
OTHER = "other"


def classify(func: Func) -> Optional[str]:
    """The stage a profiled function belongs to, or None (it belongs to its callers')."""
    path, _, name = func
    path = path.replace("\\", "/")
    for stage, match in STAGES:
        if match(path, name):
            return stage
    return None


def _label(func: Func) -> str:
    path, line, name = func
    if path == "~":
        return name
    parts = path.replace("\\", "/").split("/")
    short = "/".join(parts[-2:]) if parts[-2:-1] != ["htevents_logging"] else parts[-1]
    return f"{short}:{line}({name})"


@dataclass
class Attribution:
    """Profiled seconds per stage, and per (stage, function) for the detail."""

    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    functions: dict[tuple[str, Func], float] = field(default_factory=lambda: defaultdict(float))

    def add(self, stage: str, func: Func, seconds: float) -> None:
        self.stages[stage] += seconds
        self.functions[(stage, func)] += seconds

    @property
    def total(self) -> float:
        return sum(self.stages.values())


def attribute(stats: dict[Func, Any]) -> Attribution:
    """Split every function's own time (pstats ``tottime``) among the stages.

    A function with a stage gives it all its own time. One without gives its own time to its
    direct callers, in proportion to the time it spent under each (the caller edges of the
    profile), and a caller without a stage passes its share on to its own callers, in
    proportion to its cumulative time under each; what reaches no stage is ``other``.
    """
    memo: dict[Func, dict[str, float]] = {}

    def owners(func: Func, visiting: frozenset[Func]) -> dict[str, float]:
        stage = classify(func)
        if stage is not None:
            return {stage: 1.0}
        if func in memo:
            return memo[func]
        entry = stats.get(func)
        callers: dict[Func, tuple[Any, ...]] = entry[4] if entry else {}
        if not callers or func in visiting:
            return {OTHER: 1.0}
        weights = _weights(callers, 3)
        out: dict[str, float] = defaultdict(float)
        for caller, weight in weights.items():
            for owner, share in owners(caller, visiting | {func}).items():
                out[owner] += weight * share
        memo[func] = dict(out)
        return memo[func]

    result = Attribution()
    for func, (_cc, _nc, tottime, _ct, callers) in stats.items():
        stage = classify(func)
        if stage is not None:
            result.add(stage, func, tottime)
            continue
        if not callers:
            result.add(OTHER, func, tottime)
            continue
        for caller, weight in _weights(callers, 2).items():
            for owner, share in owners(caller, frozenset({func})).items():
                result.add(owner, func, tottime * weight * share)
    return result


def _weights(callers: dict[Func, tuple[Any, ...]], index: int) -> dict[Func, float]:
    """Each caller's part, by the edge's time (``index`` 2: own time, 3: cumulative), or by
    its number of calls when no time was measured."""
    total = sum(edge[index] for edge in callers.values())
    if total > 0:
        return {caller: edge[index] / total for caller, edge in callers.items()}
    calls = sum(edge[0] for edge in callers.values()) or 1
    return {caller: edge[0] / calls for caller, edge in callers.items()}


def profile_stats(profiler: cProfile.Profile) -> dict[Func, Any]:
    """The pstats-shaped figures of a finished profile (``snapshot_stats``, without the
    ``disable()`` that ``create_stats`` would call on this thread)."""
    profiler.snapshot_stats()
    stats: dict[Func, Any] = profiler.stats
    return stats


class ThreadHook:
    """Wraps ``threading.Thread.run`` for the first thread named ``name`` started while it is
    installed: that thread runs under ``profiler`` (enabled and disabled in the thread
    itself), after waiting for :meth:`release` when ``hold`` is set (at most 120 s)."""

    def __init__(self, name: str, profiler: Optional[cProfile.Profile], hold: bool) -> None:
        self.name = name
        self.profiler = profiler
        self.thread: Optional[threading.Thread] = None
        self.ended = threading.Event()
        self._go = threading.Event()
        if not hold:
            self._go.set()

    def release(self) -> None:
        self._go.set()

    @contextmanager
    def installed(self) -> Iterator[ThreadHook]:
        original = threading.Thread.run
        hook = self

        def run(self: threading.Thread) -> None:
            if self.name != hook.name or hook.thread is not None:
                return original(self)
            hook.thread = self
            hook._go.wait(120.0)
            profiler = hook.profiler
            if profiler is not None:
                profiler.enable()
            try:
                return original(self)
            finally:
                if profiler is not None:
                    profiler.disable()
                hook.ended.set()

        threading.Thread.run = run  # type: ignore[method-assign]
        try:
            yield self
        finally:
            threading.Thread.run = original  # type: ignore[method-assign]
            self._go.set()  # never leave a thread held


def thread_cpu_s(thread: Optional[threading.Thread]) -> Optional[float]:
    """CPU seconds a running thread has used (its POSIX thread CPU clock), read from outside."""
    if thread is None or thread.ident is None or not hasattr(time, "pthread_getcpuclockid"):
        return None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except OSError:  # it has ended
        return None


@dataclass
class Run:
    """One burst: events delivered, CPU per event, and the profile when there was one."""

    delivered: int
    seconds: float
    transport_cpu_s: Optional[float]
    process_cpu_s: float
    calling_cpu_s: float
    stats: Optional[dict[Func, Any]] = None

    def per_event_us(self, seconds: Optional[float]) -> Optional[float]:
        return None if seconds is None or not self.delivered else seconds / self.delivered * 1e6


def run_burst(
    url: str,
    sender: str,
    events: int,
    batch: Optional[int],
    *,
    profile: Optional[str] = None,
    backlog: bool = False,
) -> Run:
    """Send ``events`` through ``sender`` and flush; profile the transport thread when
    ``profile`` names a clock (``cpu`` or ``wall``)."""
    profiler = None
    if profile == "cpu":
        profiler = cProfile.Profile(time.thread_time)
    elif profile == "wall":
        profiler = cProfile.Profile()
    fast_collector.reset(url)
    hook = ThreadHook(THREAD_NAME, profiler, hold=backlog)
    with hook.installed():
        sdk = make_sdk(sender, url, batch=batch)
        loop = sdk.loop
        cpu_before, thread_before = process_cpu_s(), time.thread_time()
        start = time.perf_counter()
        loop(events)
        hook.release()
        flushed = sdk.flush(120.0)
        seconds = time.perf_counter() - start
        process_cpu = process_cpu_s() - cpu_before
        calling_cpu = time.thread_time() - thread_before
        transport_cpu = thread_cpu_s(hook.thread)
        sdk.close()
        if hook.thread is not None and not hook.ended.wait(30.0):
            raise RuntimeError("the transport thread did not end within 30 s of close()")
    if not flushed:
        raise RuntimeError("flush() timed out: the figures would not cover every event")
    if hook.thread is None:
        raise RuntimeError(f"no thread named {THREAD_NAME!r} was started: is it renamed?")
    delivered = int(fast_collector.stats(url)["events"])
    stats = None
    if profiler is not None:
        gc.collect()
        stats = profile_stats(profiler)
    return Run(delivered, seconds, transport_cpu, process_cpu, calling_cpu, stats)


def _fmt(value: Optional[float], spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def table(plain: Run, profiled: Run, clock: str, detail: int) -> str:
    """The Markdown table of stages (and the detail), with the unprofiled totals."""
    assert profiled.stats is not None
    split = attribute(profiled.stats)
    total = split.total
    real = plain.per_event_us(plain.transport_cpu_s)
    scaled = clock == "cpu" and real is not None
    head = "| stage | µs/event profiled | share |" + (" ≈ µs/event unprofiled |" if scaled else "")
    lines = [head, "|---|---:|---:|" + ("---:|" if scaled else "")]
    for stage in [*STAGE_NAMES, OTHER]:
        seconds = split.stages.get(stage, 0.0)
        share = seconds / total if total else 0.0
        row = f"| {stage} | {_fmt(profiled.per_event_us(seconds), '.2f')} | {share:.1%} |"
        if scaled:
            row += f" {share * (real or 0.0):.2f} |"
        lines.append(row)
    row = f"| **total (transport thread)** | {_fmt(profiled.per_event_us(total), '.2f')} | 100% |"
    lines.append(row + (f" {real:.2f} |" if scaled else ""))
    if detail:
        lines += ["", f"Heaviest functions of each stage (profiled µs/event, top {detail}):", ""]
        for stage in [*STAGE_NAMES, OTHER]:
            ranked = sorted(
                ((seconds, func) for (s, func), seconds in split.functions.items() if s == stage),
                reverse=True,
            )[:detail]
            shown = ", ".join(
                f"{_label(func)} {_fmt(profiled.per_event_us(seconds), '.2f')}"
                for seconds, func in ranked
                if seconds > 0
            )
            lines.append(f"- {stage}: {shown or '—'}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per burst")
    parser.add_argument(
        "--sender", choices=OURS, default="htevents-logging-handler", help="which way in"
    )
    parser.add_argument("--batch", type=int, default=None, help="default: shipped (15)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument(
        "--backlog", action="store_true", help="queue every event before the thread starts"
    )
    parser.add_argument("--detail", type=int, default=3, help="functions listed per stage")
    args = parser.parse_args(argv)
    if not 0 < args.events <= 100_000:
        parser.error("--events must be between 1 and 100,000 (the shipped queue bound)")
    if sys.version_info >= (3, 12):
        parser.error(
            "needs Python 3.9-3.11: from 3.12 cProfile.enable() profiles every thread "
            "(sys.monitoring), not only the transport thread"
        )
    netguard.install()
    collector = benchmark_collector()
    with collector:
        url = collector.url
        run_burst(url, args.sender, min(1000, args.events), args.batch, backlog=args.backlog)
        plain = run_burst(url, args.sender, args.events, args.batch, backlog=args.backlog)
        profiled = run_burst(
            url, args.sender, args.events, args.batch, profile=args.clock, backlog=args.backlog
        )
    mode = "backlog (queued first, then drained)" if args.backlog else "live (sent as logged)"
    print(
        f"## Transport thread, per stage: {args.events:,} events through {args.sender}, "
        f"batch {args.batch or 'shipped default'}, {mode}, {args.clock} clock\n"
    )
    print(
        f"Without the profiler: transport thread {_fmt(plain.per_event_us(plain.transport_cpu_s))}"
        f" µs CPU/event; whole process {_fmt(plain.per_event_us(plain.process_cpu_s))} µs "
        f"CPU/event (calling thread {_fmt(plain.per_event_us(plain.calling_cpu_s))}); "
        f"{plain.delivered:,} delivered in {plain.seconds:.2f} s.\n"
        f"With the profiler: transport thread "
        f"{_fmt(profiled.per_event_us(profiled.transport_cpu_s))} µs CPU/event; "
        f"{profiled.delivered:,} delivered in {profiled.seconds:.2f} s.\n"
    )
    print(table(plain, profiled, args.clock, args.detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
