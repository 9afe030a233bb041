"""One end-to-end burst in its own process (run by ``run.py``).

``python benchmarks/burst.py SENDER --url URL --events 50000 [--batch B] [--queue Q]`` sends the
benchmark event ``--events`` times as fast as the calling thread can, then waits until the SDK
says everything was acknowledged (its ``flush``), and prints one JSON document:

* ``t0_mono``: ``time.monotonic()`` at the first call (comparable with the collector's clock);
* ``calls_s``: how long the calling thread took to make the calls;
* ``ack_s``: from the first call until ``flush`` returned (every accepted event acknowledged);
* ``flush_ok``: what ``flush`` returned (peers' ``flush`` has no timeout: always True);
* ``cpu_s``: the process's user + system CPU time (``getrusage(RUSAGE_SELF)``: every thread)
  from just before the first call until ``flush`` returned; ``run.py`` divides it by the
  events the collector counted (CPU per delivered event);
* ``calling_cpu_s``: the part of it the calling thread used (``time.thread_time()``): the rest
  is the SDK's background thread(s);
* ``maxrss_kib``: the process's peak RSS (``ru_maxrss``), read at the very end.

SENDER is one of ``sdks.SENDERS``: ``htevents-logging`` (``HtEvents.track()``),
``htevents-logging-handler``, ``htevents-logging-structlog``, or a peer.

SENDER ``floor`` sends nothing: it imports ``requests`` (which every SDK here uses) and reports
the peak RSS of an interpreter that did only that, the floor under every RSS figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any, Optional

import netguard
from sdks import SENDERS, make_sdk


def process_cpu_s() -> float:
    """User + system CPU seconds of this process so far, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def burst(sdk_name: str, url: str, events: int, batch: Optional[int], queue: Optional[int]) -> Any:
    sdk = make_sdk(sdk_name, url, batch=batch, queue=queue)
    loop = sdk.loop
    cpu_before = process_cpu_s()
    thread_before = time.thread_time()
    t0_mono = time.monotonic()
    start = time.perf_counter()
    loop(events)
    calls_s = time.perf_counter() - start
    flush_ok = sdk.flush(120.0)
    ack_s = time.perf_counter() - start
    cpu_s = process_cpu_s() - cpu_before
    calling_cpu_s = time.thread_time() - thread_before
    stats = sdk.stats()
    sdk.close()
    return {
        "t0_mono": t0_mono,
        "calls_s": calls_s,
        "ack_s": ack_s,
        "flush_ok": flush_ok,
        "cpu_s": cpu_s,
        "calling_cpu_s": calling_cpu_s,
        "stats": stats,
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sdk", choices=["floor", *SENDERS])
    parser.add_argument("--url", required=True, help="the collector's base URL (loopback)")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=None, help="default: the SDK's own")
    parser.add_argument("--queue", type=int, default=None, help="default: the SDK's own")
    args = parser.parse_args(argv)
    netguard.install()
    if args.sdk == "floor":
        import requests  # noqa: F401  (what every SDK here loads)

        result: dict[str, Any] = {}
    else:
        result = burst(args.sdk, args.url, args.events, args.batch, args.queue)
    result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
