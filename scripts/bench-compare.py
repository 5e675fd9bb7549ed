#!/usr/bin/env python3
"""Compares the edge and saga benchmarks of two builds: runs alternated, medians of N.

    scripts/bench-compare.py BEFORE_REV [--runs 5] [--seconds 10]

Builds BEFORE_REV in a git worktree (its own target directory, under $TMPDIR) and this checkout,
then runs, N times and alternating which build goes first: the edge benchmark with every client
on one account (a hot aggregate), the edge benchmark over 1000 accounts (a spread load), and
the saga benchmark (durable credits, orders until confirmed, transfers until completed, each
client on its own accounts). Prints each figure's median per build and the change. Nothing else
should run on the machine meanwhile: fsync and CPU time are shared.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(tree: Path, target: Path) -> dict:
    """Builds the two benchmarks in `tree` and returns their executables by name."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", "edge", "--bench", "sagas", "--no-run",
         "--message-format=json"],
        cwd=tree, env={**os.environ, "CARGO_TARGET_DIR": str(target)},
        check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            found[message["target"]["name"]] = message["executable"]
    for name in ("edge", "sagas"):
        if name not in found:
            sys.exit(f"no {name} benchmark executable in {tree}'s build output")
    return found


def edge(executable: str, accounts: int, seconds: int) -> dict:
    out = subprocess.run([executable, "--accounts", str(accounts), "--seconds", str(seconds)],
                         check=True, capture_output=True, text=True).stdout
    figures = {}
    for label, key in (("GET bare axum handler", "bare GET"),
                       ("GET /api/v1/accounts/{id}", "GET"),
                       ("POST /api/v1/accounts/{id}/credit", "credit")):
        line = next(l for l in out.splitlines() if l.startswith(label))
        rate, p50, p99 = line[len(label):].split()[:3]
        figures[f"{key} req/s"] = float(rate)
        figures[f"{key} p50 ms"] = float(p50)
        figures[f"{key} p99 ms"] = float(p99)
    # The node's GET against a bare axum handler on the same machine in the same minute: less
    # at the mercy of what else the machine does than either figure alone.
    figures["GET / bare GET %"] = 100 * figures["GET req/s"] / figures["bare GET req/s"]
    rss = re.search(r"node RSS: ([0-9.]+) MiB idle, ([0-9.]+) MiB with", out)
    if rss:
        figures["node RSS idle MiB"] = float(rss.group(1))
        figures[f"node RSS, {accounts} live MiB"] = float(rss.group(2))
    return figures


def sagas(executable: str, seconds: int) -> dict:
    out = subprocess.run([executable, "--seconds", str(seconds)],
                         check=True, capture_output=True, text=True).stdout
    figures = {}
    for label in ("durable credits", "orders until confirmed", "transfers until completed"):
        line = next(l for l in out.splitlines() if l.startswith(label))
        rate, p50, p99 = line[len(label):].split()[:3]
        figures[f"{label} /s"] = float(rate)
        figures[f"{label} p50 ms"] = float(p50)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="the git revision to compare this checkout with")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--only", choices=["edge", "sagas"], help="run one benchmark only")
    args = parser.parse_args()

    work = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "playhouse-bench-before"
    tree, target = work / "tree", work / "target"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before],
                       cwd=ROOT, check=True)
    else:
        subprocess.run(["git", "checkout", "--detach", args.before], cwd=tree, check=True)
    print(f"building {args.before} in {tree} and this checkout ...", flush=True)
    builds = {"before": build(tree, target), "after": build(ROOT, ROOT / "target")}

    results = {"before": {}, "after": {}}
    for run in range(args.runs):
        order = ["before", "after"] if run % 2 == 0 else ["after", "before"]
        for side in order:
            figures = {}
            if args.only != "sagas":
                for scope, accounts in (("hot", 1), ("spread", 1000)):
                    for key, value in edge(builds[side]["edge"], accounts, args.seconds).items():
                        figures[f"edge {scope}: {key}"] = value
            if args.only != "edge":
                figures.update({f"sagas: {k}": v
                                for k, v in sagas(builds[side]["sagas"], args.seconds).items()})
            for key, value in figures.items():
                results[side].setdefault(key, []).append(value)
            print(f"run {run + 1}/{args.runs} {side} done", flush=True)

    print(f"\nmedians of {args.runs} alternated runs, {args.seconds} s each; before = {args.before}")
    print(f"{'figure':<46} {'before':>10} {'after':>10} {'change':>8}")
    for key in results["before"]:
        before = statistics.median(results["before"][key])
        after = statistics.median(results["after"][key])
        change = (after - before) / before * 100 if before else float("nan")
        print(f"{key:<46} {before:>10.2f} {after:>10.2f} {change:>+7.1f}%")
    print("\nevery run (before | after):")
    for key in results["before"]:
        print(f"{key:<46} {results['before'][key]} | {results['after'][key]}")


if __name__ == "__main__":
    main()
