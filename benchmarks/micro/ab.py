#!/usr/bin/env python
"""A/B: the same micro benchmarks on two checkouts of tgreen, interleaved.

For a before/after measurement of one change on a shared (noisy) machine:
each repetition runs every (checkout, benchmark, loop) child of
``bench.py --child`` once, in a shuffled order, so load hits both sides
alike; the medians and the after/before ratio are printed as markdown.

    git worktree add --detach /tmp/before main~1
    .venv/bin/python benchmarks/micro/ab.py /tmp/before . --reps 7
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys


def run_child(root: str, bench: str, loop: str, duration: float) -> float:
    script = os.path.join(root, "benchmarks", "micro", "bench.py")
    out = subprocess.run([sys.executable, script, "--child", bench, "tgreen", loop,
                          "--duration", str(duration)], cwd=root, capture_output=True,
                         text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = os.path.join(os.path.abspath(root), "tgreen", "__init__.py")
    if os.path.abspath(result["module"]) != expected:
        raise SystemExit(f"ab.py: {root} imported tgreen from {result['module']}")
    return result["value"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", help="checkout measured as 'before'")
    ap.add_argument("after", help="checkout measured as 'after'")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=1.5)
    ap.add_argument("--benchmarks", default="pingpong,pingpong_main,bulk")
    ap.add_argument("--loops", default="asyncio,uvloop")
    args = ap.parse_args()
    cells = [(side, bench, loop) for side in ("before", "after")
             for bench in args.benchmarks.split(",") for loop in args.loops.split(",")]
    roots = {"before": args.before, "after": args.after}
    values: dict[tuple, list[float]] = {c: [] for c in cells}
    for rep in range(args.reps):
        order = cells[:]
        random.shuffle(order)
        for side, bench, loop in order:
            values[(side, bench, loop)].append(run_child(roots[side], bench, loop, args.duration))
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    print("| benchmark | loop | before | after | after / before |")
    print("|---|---|---:|---:|---:|")
    for bench in args.benchmarks.split(","):
        for loop in args.loops.split(","):
            b = statistics.median(values[("before", bench, loop)])
            a = statistics.median(values[("after", bench, loop)])
            print(f"| {bench} | {loop} | {b:,.0f} | {a:,.0f} | {a / b:.3f} |")


if __name__ == "__main__":
    main()
