#!/usr/bin/env python
"""A/B: the same micro benchmarks on two checkouts of tgreen, interleaved.

For a before/after measurement of one change on a shared (noisy) machine:
each repetition runs every (checkout, benchmark, loop) child of this
directory's ``bench.py --child`` once (``TGREEN_BENCH_ROOT`` points it at the
checkout), in a shuffled order, so load hits both sides alike. Printed as
markdown: medians per wall second and per CPU second of the child (the
latter is steadier when other processes share the cores), and their
after/before ratios.

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

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py")


def run_child(root: str, bench: str, loop: str, duration: float) -> tuple[float, float]:
    """(per wall second, per CPU second) of one child run of this bench.py
    measuring the tgreen in ``root``."""
    env = dict(os.environ, TGREEN_BENCH_ROOT=os.path.abspath(root))
    out = subprocess.run([sys.executable, SCRIPT, "--child", bench, "tgreen", loop,
                          "--duration", str(duration)], cwd=root, capture_output=True,
                         text=True, timeout=300, check=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = os.path.join(os.path.abspath(root), "tgreen", "__init__.py")
    if os.path.abspath(result["module"]) != expected:
        raise SystemExit(f"ab.py: {root} imported tgreen from {result['module']}")
    return result["value"], result["cpu_value"]


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
    values: dict[tuple, list[tuple[float, float]]] = {c: [] for c in cells}
    for rep in range(args.reps):
        order = cells[:]
        random.shuffle(order)
        for side, bench, loop in order:
            values[(side, bench, loop)].append(run_child(roots[side], bench, loop, args.duration))
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    print("| benchmark | loop | before /s | after /s | ratio | before /CPU s | after /CPU s | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for bench in args.benchmarks.split(","):
        for loop in args.loops.split(","):
            cells_out = []
            for k in (0, 1):
                b = statistics.median(v[k] for v in values[("before", bench, loop)])
                a = statistics.median(v[k] for v in values[("after", bench, loop)])
                cells_out.append(f"{b:,.0f} | {a:,.0f} | {a / b:.3f}")
            print(f"| {bench} | {loop} | {' | '.join(cells_out)} |")


if __name__ == "__main__":
    main()
