#!/usr/bin/env python3
"""A/B benchmark: ``scripts/bench.py`` of an older revision against the working tree, interleaved.

    .venv/bin/python scripts/bench_compare.py d1e4a43 --rounds 3 -- --runs 1 --frames 300

Each round runs the old revision's ``bench.py`` (from a ``git worktree`` of it, importing that
revision's package through ``PYTHONPATH``) and then this tree's, with the same arguments, on the
same machine minutes apart; the medians over rounds of each row are printed side by side with
their ratio. Each run also measures its own naive loop, so ``pipeline / naive`` is a ratio
taken within one process, the figure least disturbed by a noisy machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| (?P<label>[^|]+?) \| (?P<median>[0-9.]+) \|")
RATIO = re.compile(
    r"pipeline / naive = (?P<naive>[0-9.]+)x; pipeline / slowest stage \((?P<stage>\w+)\) = (?P<slowest>[0-9]+)%"
)


def run_bench(tree: Path, bench_args: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    res = subprocess.run(
        [sys.executable, str(tree / "scripts" / "bench.py"), *bench_args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        check=True,
    )
    rows: dict[str, float] = {}
    for line in res.stdout.splitlines():
        if m := ROW.match(line):
            rows[m["label"]] = float(m["median"])
        elif m := RATIO.search(line):
            rows["pipeline / naive (x)"] = float(m["naive"])
            rows[f"pipeline / slowest stage, {m['stage']} (%)"] = float(m["slowest"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("old", help="the older revision (commit, tag, branch)")
    ap.add_argument("--rounds", type=int, default=3)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:split])
    args.bench_args = argv[split + 1 :]  # everything after -- goes to bench.py
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old],
            check=True,
            capture_output=True,
        )
        try:
            results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
            for i in range(args.rounds):
                for name, tree in (("old", old_tree), ("new", ROOT)):
                    results[name].append(run_bench(tree, args.bench_args))
                    print(f"round {i + 1} {name}: {results[name][-1]}", file=sys.stderr, flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)],
                check=False,
            )
    labels = [k for k in results["new"][0] if all(k in r for r in results["old"] + results["new"])]
    print(
        f"old = {args.old}, new = working tree; {args.rounds} interleaved rounds of bench.py {' '.join(args.bench_args)}; medians"
    )
    print("| what | old | new | new / old |")
    print("|---|---|---|---|")
    for label in labels:
        old = statistics.median(r[label] for r in results["old"])
        new = statistics.median(r[label] for r in results["new"])
        print(f"| {label} | {old:.2f} | {new:.2f} | {new / old:.2f} |")


if __name__ == "__main__":
    main()
