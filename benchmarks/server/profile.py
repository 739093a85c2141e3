"""Where a tgreen-serve worker spends its time under one bench.py scenario.

    .venv/bin/python benchmarks/server/profile.py hello_ka [--loop uvloop] [--seconds 8] [--top 25]

Starts tgreen-serve the way bench.py does, loads it with the scenario's wrk
command, and samples the worker with ``py-spy record --format raw --nonblocking``
(``pip install py-spy``). Prints the share of samples per function, self and
inclusive, and writes the collapsed stacks to /tmp/tgreen-profile-SCENARIO.txt
(feed them to flamegraph.pl or speedscope).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=[s for s in bench.SCENARIOS if s != "memory"])
    ap.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument("--no-patch", action="store_true", help="tgreen-serve --no-patch")
    args = ap.parse_args()
    app, wrk_args, n, _, _ = bench.SCENARIOS[args.scenario]
    name = "tgreen-uvloop" if args.loop == "uvloop" else "tgreen"
    if args.no_patch:
        name = "tgreen-nopatch"
    logdir = f"/tmp/tgreen-profile-{os.getpid()}"
    os.makedirs(logdir, exist_ok=True)
    srv = bench.Server(name, app, n, logdir)
    out = f"/tmp/tgreen-profile-{args.scenario}-{name}.txt"
    try:
        srv.wait_ready()
        bench.check(srv.port, app)
        time.sleep(0.5)
        workers = [p for p in srv.pids() if p != srv.proc.pid]
        pid = workers[0] if workers else srv.proc.pid
        result = {}
        t = threading.Thread(target=lambda: result.update(
            bench.run_wrk(srv.port, wrk_args, args.seconds + 3)))
        t.start()
        time.sleep(1)
        cmd = [os.path.join(bench.VENV_BIN, "py-spy"), "record", "--pid", str(pid), "--format", "raw",
               "--rate", "250", "--duration", str(args.seconds), "--nonblocking", "--output", out]
        if args.native:
            cmd.append("--native")
        subprocess.run(cmd, capture_output=True)
        t.join()
    finally:
        srv.stop()
    print(f"{args.scenario} on {args.loop}: {result.get('rps', 0):,.0f} req/s under py-spy "
          f"(sampling slows it), stacks in {out}")
    self_c, incl_c, total = collections.Counter(), collections.Counter(), 0
    with open(out) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            count = int(count)
            frames = stack.split(";")[1:] if stack.startswith(("process", "thread")) else stack.split(";")
            frames = [fr for fr in frames if not fr.startswith(("process ", "thread "))]
            total += count
            if frames:
                self_c[frames[-1]] += count
            for fr in {fr.rsplit(":", 1)[0] + ")" for fr in frames}:   # per function, any line
                incl_c[fr] += count
    if not total:
        print("no samples")
        return
    possible = 250 * args.seconds
    print(f"{total} samples of {possible} possible: the worker was on-CPU ~{100 * total / possible:.0f}% "
          f"(py-spy drops idle samples)")
    print(f"\ntop {args.top} by self time:")
    for fr, c in self_c.most_common(args.top):
        print(f"  {100 * c / total:5.1f}%  {fr}")
    print(f"\ntop {args.top} by inclusive time:")
    for fr, c in incl_c.most_common(args.top):
        print(f"  {100 * c / total:5.1f}%  {fr}")


if __name__ == "__main__":
    main()
