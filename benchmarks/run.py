"""The benchmark suite for "Fast on the calling thread": ``python benchmarks/run.py [--quick]``.

Starts a collector process on 127.0.0.1, measures the calling-thread cost of each front-end
and of the peer SDKs (one process per group), runs the end-to-end bursts through each of our
ways in (``HtEvents.track()``, ``HtEventsHandler``, the structlog processor) and through each
peer (one process per burst), stops the collector, and prints a Markdown report (also written to
``benchmarks/results.md``, raw figures to ``benchmarks/results.json``; ``--quick`` writes
``results-quick.*``). Progress goes to stderr. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import capacity
import fast_collector
import netguard
from analysis import analyze
from machine import describe, load_average
from procs import BENCH_DIR, ServerProcess, WorkerError, benchmark_collector, run_worker
from report import render
from sdks import PEERS, SDKS, SENDERS, distribution_version, is_ours


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run takes about 1.5 minutes on 2 cores (three rounds of
    twelve bursts), quick about 15 s."""

    calls: int  # calls per timed block
    repeats: int  # timed blocks per case
    burst: int  # events per end-to-end burst
    burst_repeats: int
    probe_requests: int  # collector capacity probe, bounded by count...
    probe_seconds: float  # ...and by time
    budget_s: float  # burst rounds that would end past this are skipped (and reported)


FULL = Plan(
    calls=5000,
    repeats=15,
    burst=50_000,
    burst_repeats=3,
    probe_requests=3000,
    probe_seconds=2.0,
    budget_s=420.0,
)
QUICK = Plan(
    calls=2000,
    repeats=5,
    burst=10_000,
    burst_repeats=1,
    probe_requests=400,
    probe_seconds=0.5,
    budget_s=60.0,
)


@dataclass(frozen=True)
class BurstConfig:
    key: str
    sdk: str
    settings: str
    batch: Optional[int] = None
    queue: Optional[int] = None


def burst_configs(senders: list[str], events: int) -> list[BurstConfig]:
    """Each of ours (track, handler, structlog) with shipped defaults (batch 15) and at batch
    100; each peer with its shipped defaults and at batch 100 with a queue that holds the
    whole burst."""
    configs = []
    for sdk in senders:
        if is_ours(sdk):
            configs.append(BurstConfig(f"{sdk}.defaults", sdk, "shipped defaults (batch 15)"))
            configs.append(BurstConfig(f"{sdk}.b100", sdk, "batch 100", batch=100))
        else:
            configs.append(BurstConfig(f"{sdk}.defaults", sdk, "shipped defaults"))
            queue = events + 1000
            configs.append(
                BurstConfig(f"{sdk}.b100", sdk, f"batch 100, queue {queue:,}", 100, queue)
            )
    return configs


class Suite:
    def __init__(self, plan: Plan, mode: str, command: str) -> None:
        self.plan = plan
        self.start = time.monotonic()
        self.errors: list[str] = []
        self.raw: dict[str, Any] = {
            "mode": mode,
            "command": command,
            "plan": dataclasses.asdict(plan),
            "machine": describe(str(BENCH_DIR.parent)),
            "percall": {},
            "capacity": {},
            "bursts": {},
        }
        self.sdks = [s for s in SDKS if s == "htevents-logging" or distribution_version(PEERS[s])]
        for peer in sorted(set(SDKS) - set(self.sdks)):
            self.errors.append(f"{peer} is not installed: pip install -e '.[bench]'")
        has_structlog = distribution_version("structlog") is not None
        if not has_structlog:
            self.errors.append("structlog is not installed: pip install -e '.[bench]'")
        self.senders = [
            s
            for s in SENDERS
            if (s in self.sdks or is_ours(s)) and (has_structlog or not s.endswith("structlog"))
        ]

    def log(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {text}", file=sys.stderr, flush=True)

    def attempt(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except (WorkerError, OSError, RuntimeError, ValueError) as error:
            self.errors.append(f"{what}: {error}")
            self.log(f"FAILED {what}: {error}")
            return {"error": str(error)}

    def probe(self, server: ServerProcess, path: str, batch: int) -> Any:
        plan = self.plan
        return capacity.probe(
            server.url, path, server.pid, batch, plan.probe_requests, plan.probe_seconds
        )

    def percall(self, url: str) -> None:
        plan = self.plan
        for group in ["stdlib", "structlog", "track"]:
            self.log(f"per-call: {group}")
            args = [group, "--url", url, "--calls", str(plan.calls), "--repeats", str(plan.repeats)]
            args += ["--sdks", ",".join(self.sdks)]
            self.raw["percall"][group] = self.attempt(
                f"per-call {group}", partial(run_worker, "percall.py", args, 240)
            )

    def one_burst(self, server: ServerProcess, config: BurstConfig) -> Any:
        args = [config.sdk, "--url", server.url, "--events", str(self.plan.burst)]
        if config.batch is not None:
            args += ["--batch", str(config.batch)]
        if config.queue is not None:
            args += ["--queue", str(config.queue)]
        fast_collector.reset(server.url)
        cpu_before = capacity.cpu_seconds(server.pid)
        result: dict[str, Any] = run_worker("burst.py", args, 240)
        collector_cpu = capacity.cpu_seconds(server.pid) - cpu_before
        counts = fast_collector.stats(server.url)
        delivered = counts["events"]
        result.update(
            delivered=delivered,
            events_per_s=delivered / result["ack_s"],
            cpu_us_per_event=result["cpu_s"] / delivered * 1e6 if delivered else None,
            calling_cpu_us_per_event=(
                result["calling_cpu_s"] / delivered * 1e6 if delivered else None
            ),
            collector_cpu_s=collector_cpu,
            collector_share=collector_cpu / result["ack_s"],
            collector_requests=counts["requests"],
            collector_bad_requests=counts["bad_requests"],
            collector_span_s=(counts["last_at"] - result["t0_mono"]) if counts["last_at"] else None,
        )
        return result

    def bursts(self, server: ServerProcess) -> None:
        configs = burst_configs(self.senders, self.plan.burst)
        for config in configs:
            self.raw["bursts"][config.key] = {
                **dataclasses.asdict(config),
                "events": self.plan.burst,
                "runs": [],
            }
        round_s = 0.0
        for round_ in range(self.plan.burst_repeats):  # round-robin: drift hits all alike
            elapsed = time.monotonic() - self.start
            if round_ and elapsed + round_s > self.plan.budget_s:
                self.errors.append(
                    f"skipped burst rounds {round_ + 1}-{self.plan.burst_repeats} to finish "
                    f"within {self.plan.budget_s:.0f} s (the machine is slow or busy)"
                )
                break
            round_start = time.monotonic()
            for config in configs:
                self.log(f"burst {round_ + 1}/{self.plan.burst_repeats}: {config.key}")
                run = self.attempt(f"burst {config.key}", partial(self.one_burst, server, config))
                self.raw["bursts"][config.key]["runs"].append(run)
            round_s = time.monotonic() - round_start
        floor = self.attempt(
            "RSS floor", lambda: run_worker("burst.py", ["floor", "--url", server.url], 60)
        )
        self.raw["rss_floor_kib"] = floor.get("maxrss_kib")

    def run(self) -> dict[str, Any]:
        fast = benchmark_collector()
        with fast:
            self.log(f"collector at {fast.url} (pid {fast.pid}); probing its capacity")
            self.raw["capacity"]["fast"] = {
                str(b): self.attempt(f"probe {b}", partial(self.probe, fast, "/v1/batch", b))
                for b in (15, 100)
            }
            self.percall(fast.url)
            self.bursts(fast)
        self.log("probing `htevents-logging collect` for comparison")
        package = ServerProcess(
            [sys.executable, "-m", "htevents_logging", "collect", "--port", "0"],
            "htevents-logging collect",
        )
        self.raw["capacity"]["package"] = {
            "100": self.attempt("probe package collector", lambda: self._probe_package(package))
        }
        self.raw["load_average_end"] = load_average()
        self.raw["elapsed_s"] = time.monotonic() - self.start
        self.raw["errors"] = self.errors
        return self.raw

    def _probe_package(self, package: ServerProcess) -> Any:
        with package:
            return self.probe(package, "/v1/batch", 100)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run (small figures)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR, help="where results.md/.json go")
    args = parser.parse_args(argv)
    netguard.install()
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    suite = Suite(QUICK if args.quick else FULL, "quick" if args.quick else "full", command)
    raw = suite.run()
    analysis = analyze(raw)
    raw["analysis"] = analysis["as_json"]
    markdown = render(raw, analysis)
    stem = "results-quick" if args.quick else "results"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.md").write_text(markdown + "\n", encoding="utf-8")
    (args.out_dir / f"{stem}.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    print(markdown)
    suite.log(f"wrote {args.out_dir / stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
