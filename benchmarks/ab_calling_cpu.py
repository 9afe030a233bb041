"""A/B of the calling thread's own cost between two commits of the package.

``python benchmarks/ab_calling_cpu.py REV_A REV_B [--rounds 8]``

Each commit's ``htevents_logging`` is taken with ``git archive`` into a folder of its own. Each
round runs ``calling_cpu.stubbed`` once per commit, in a fresh interpreter that imports that
commit's package, alternating which goes first: a handler event record with the queue stubbed
(no thread, nothing sent) over ``NullHandler``, CPU clock, minimum of 30 blocks of 5,000. It
prints each commit's median and minimum over the rounds. A change of a few tens of ns on the
calling thread is below what a full run can tell apart; side by side, rounds alternating, it
shows.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile

from procs import BENCH_DIR

ONE_ROUND = """
import sys
sys.path.insert(0, sys.argv[1])
import netguard
netguard.install()
from calling_cpu import stubbed
best = stubbed(5000, 30)
print(best["ours"] - best["null"])
"""


def _extract(rev: str, into: str) -> None:
    archive = subprocess.run(
        ["git", "archive", rev, "htevents_logging"],
        cwd=BENCH_DIR.parent,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into)


def _over_null(tree: str) -> float:
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run(
        [sys.executable, "-c", ONE_ROUND, str(BENCH_DIR)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(done.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev_a")
    parser.add_argument("rev_b")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as top:
        trees = {rev: os.path.join(top, str(i)) for i, rev in enumerate([args.rev_a, args.rev_b])}
        for rev, tree in trees.items():
            _extract(rev, tree)
        figures: dict[str, list[float]] = {rev: [] for rev in trees}
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for rev in order:
                figures[rev].append(_over_null(trees[rev]))
    print("| commit | median µs over NullHandler | min | rounds |")
    print("|---|---:|---:|---|")
    for rev, values in figures.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {rev} | {statistics.median(values):.3f} | {min(values):.3f} | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
