#!/usr/bin/env python
"""What the blocking detector (``tgreen.monitor``) costs when it is on.

Two loop-bound workloads, each with the monitor off and on (threshold
100 ms), on asyncio's loop and on uvloop:

* ``switch``: ``sleep(0)`` across 100 greenlets (one loop turn wakes all 100);
* ``switch1``: ``sleep(0)`` in one greenlet: every switch is a whole loop
  turn, the worst case for a per-turn cost;
* ``pingpong``: socketpair echo of 1 KiB messages between two greenlets.

Every (workload, loop, monitor) variant runs in a fresh child process; the
variants are interleaved round-robin over ``--reps`` repetitions and the
median is reported. ``--write`` puts the table into ``benchmarks/RESULTS.md``
under "## Blocking detector cost".

Run with the project's venv:  ``.venv/bin/python benchmarks/monitor_cost.py --reps 5``
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
SECTION = "## Blocking detector cost"

GREENLETS = 100
SWITCHES_PER_GREENLET = 100
PINGPONG_MSG = 1024
PINGPONG_PER_ROUND = 500
BENCHES = ("switch", "switch1", "pingpong")


def child(bench: str, loop: str, monitor: bool, duration: float) -> dict:
    import time

    import tgreen
    import tgreen.monitor
    import tgreen.socket

    if loop == "uvloop":
        tgreen.use_uvloop()
    tgreen.sleep(0)
    if monitor:
        tgreen.monitor.start(threshold_ms=100)
    result = {}

    def timed(one_round, per_round):
        one_round()  # warm up
        n, t0 = 0, time.perf_counter()
        while True:
            one_round()
            n += per_round
            elapsed = time.perf_counter() - t0
            if elapsed >= duration:
                return n / elapsed

    def switch(greenlets):
        def worker():
            for _ in range(SWITCHES_PER_GREENLET):
                tgreen.sleep(0)

        def one_round():
            tgreen.joinall([tgreen.spawn(worker) for _ in range(greenlets)])

        return timed(one_round, greenlets * SWITCHES_PER_GREENLET)

    def pingpong():
        a, b = tgreen.socket.socketpair()
        msg = b"x" * PINGPONG_MSG

        def echo():
            while True:
                data = b.recv(65536)
                if not data:
                    break
                b.sendall(data)

        server = tgreen.spawn(echo)

        def one_round():
            for _ in range(PINGPONG_PER_ROUND):
                a.sendall(msg)
                got = len(a.recv(PINGPONG_MSG))
                while got < PINGPONG_MSG:
                    got += len(a.recv(PINGPONG_MSG - got))

        rate = timed(one_round, PINGPONG_PER_ROUND)
        a.close()
        server.join()
        b.close()
        return rate

    def driver():
        if bench == "switch":
            result["rate"] = switch(GREENLETS)
        elif bench == "switch1":
            result["rate"] = switch(1)
        else:
            result["rate"] = pingpong()

    tgreen.spawn(driver).join()
    if monitor:
        m = tgreen.monitor.monitor_for(tgreen.get_hub())
        result["reports"] = m.reports if m else None
        tgreen.monitor.stop_all()
    return result


def fmt(rate: float) -> str:
    return f"{rate / 1e6:.2f}M" if rate >= 1e6 else f"{rate / 1e3:.1f}k"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=1.5, help="seconds per child")
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    ap.add_argument("--child", nargs=3, metavar=("BENCH", "LOOP", "MONITOR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        bench, loop, mon = args.child
        print(json.dumps(child(bench, loop, mon == "on", args.duration)))
        return 0

    variants = [(b, lp, m) for b in BENCHES for lp in ("asyncio", "uvloop")
                for m in ("off", "on")]
    rates: dict = {v: [] for v in variants}
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    env.pop("TGREEN_MONITOR_MS", None)
    load_before = os.getloadavg()
    for rep in range(args.reps):
        for v in variants:
            out = subprocess.run([sys.executable, __file__, "--duration", str(args.duration),
                                  "--child", *v], capture_output=True, text=True, env=env,
                                 timeout=120)
            if out.returncode:
                raise SystemExit(f"child {v} failed:\n{out.stderr}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            if res.get("reports"):
                print(f"note: {v} reported {res['reports']} blocking episode(s)", file=sys.stderr)
            rates[v].append(res["rate"])
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    load_after = os.getloadavg()

    rows = ["| workload | loop | monitor off | monitor on (100 ms) | on / off |",
            "|---|---|---:|---:|---:|"]
    for b in BENCHES:
        unit = "round trips/s" if b == "pingpong" else "switches/s"
        for lp in ("asyncio", "uvloop"):
            off = statistics.median(rates[(b, lp, "off")])
            on = statistics.median(rates[(b, lp, "on")])
            rows.append(f"| {b} ({unit}) | {lp} | {fmt(off)} | {fmt(on)} | {on / off:.2f} |")
    table = "\n".join(rows)
    spread = max((max(r) - min(r)) / statistics.median(r) for r in rates.values())
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        head = "?"
    cmd = "python benchmarks/monitor_cost.py " + " ".join(a for a in (argv or sys.argv[1:]))
    text = (f"{SECTION}\n\n"
            f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on "
            f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), python "
            f"{platform.python_version()}, tgreen {head}. Command: `{cmd.strip()}` "
            f"({args.reps} repetitions of ~{args.duration}s per child process, variants "
            f"interleaved, median shown; largest spread (max-min)/median {spread:.0%}). "
            f"Load average before: {' '.join(f'{x:.2f}' for x in load_before)}, after: "
            f"{' '.join(f'{x:.2f}' for x in load_after)}.\n\n{table}\n\n"
            "`switch` is `sleep(0)` across 100 greenlets (one loop turn wakes all 100); "
            "`switch1` is `sleep(0)` in a single greenlet, so every switch is a whole loop "
            "turn: the worst case for a per-turn cost. `pingpong` is a socketpair echo of 1 KiB "
            "messages between two greenlets. On asyncio's loop the monitor wraps the "
            "selector (two counter writes per loop turn, plus one Python call); on uvloop "
            "it adds a heartbeat timer every 50 ms. The watchdog thread wakes every 25 ms "
            "and only reads.\n")
    print(text)
    if args.write:
        with open(RESULTS_MD, encoding="utf-8") as f:
            md = f.read()
        pattern = re.compile(re.escape(SECTION) + r"\n.*?(?=\n## |\Z)", re.S)
        if pattern.search(md):
            md = pattern.sub(lambda _m: text.rstrip("\n") + "\n", md)
        else:
            md = md.rstrip("\n") + "\n\n" + text
        with open(RESULTS_MD, "w", encoding="utf-8") as f:
            f.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
