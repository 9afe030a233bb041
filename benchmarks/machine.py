"""What the figures were measured on: interpreter, machine, load, versions."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from typing import Any, Optional

from sdks import PEERS, distribution_version

__all__ = ["describe", "load_average"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def load_average() -> Optional[list[float]]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews figures)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git(directory: str, *args: str) -> Optional[subprocess.CompletedProcess[str]]:
    try:
        return subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _git_commit(directory: str) -> Optional[str]:
    """The commit measured, marked when the package or the benchmarks differ from it (the
    figures would then belong to no commit)."""
    head = _git(directory, "rev-parse", "--short", "HEAD")
    commit = head.stdout.strip() if head is not None else ""
    if not commit:
        return None
    changed = _git(
        directory,
        "diff",
        "--quiet",
        "HEAD",
        "--",
        "htevents_logging",
        "benchmarks",
        ":(exclude)benchmarks/results*",
    )
    if changed is not None and changed.returncode == 1:
        return f"{commit} with uncommitted changes"
    return commit


def describe(repo_dir: str) -> dict[str, Any]:
    """Interpreter, OS, CPU, cores, memory, load, package versions, commit and time."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    versions = {
        name: distribution_version(name)
        for name in ("htevents-logging", "structlog", "requests", *PEERS.values())
    }
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "memory_gib": _memory_gib(),
        "load_average_start": load_average(),
        "versions": versions,
        "commit": _git_commit(repo_dir),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
    }
