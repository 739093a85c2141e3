#!/usr/bin/env python
"""What the blocking detector (``tgreen.monitor``) costs when it is on.

Two loop-bound workloads, each with the monitor off and on (threshold
100 ms), on asyncio's loop and on uvloop:

* ``switch``: ``sleep(0)`` across 100 greenlets (one loop turn wakes all 100);
* ``switch1``: ``sleep(0)`` in one greenlet: every switch is a whole loop
  turn, the worst case for a per-turn cost;
* ``pingpong``: socketpair echo of 1 KiB messages between two greenlets.

Each (workload, loop) runs in a fresh child process that alternates short
slices with the monitor off and on, so machine load hits both modes alike;
``--reps`` children per workload, medians reported. A last row prices one
loop turn directly: ``selector.select(0)`` bare and behind the wrapper. ``--write`` puts the table into ``benchmarks/RESULTS.md``
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


def child(bench: str, loop: str, duration: float, slices: int, threshold_ms: float) -> dict:
    """Run ``bench`` for ``duration`` seconds in ``slices`` alternating
    slices with the monitor off and on (same process, same load), and
    return both rates."""
    import time

    import tgreen
    import tgreen.monitor
    import tgreen.socket

    if loop == "uvloop":
        tgreen.use_uvloop()
    tgreen.sleep(0)
    hub = tgreen.get_hub()
    if bench == "select":
        return select_cost(hub, duration)
    result = {"off": [0, 0.0], "on": [0, 0.0], "reports": 0}

    def measure(one_round, per_round):
        one_round()  # warm up
        slice_len = duration / slices
        for i in range(slices):
            mode = "on" if i % 2 else "off"
            if mode == "on":
                tgreen.monitor.start(threshold_ms=threshold_ms)
            n, t0 = 0, time.perf_counter()
            while True:
                one_round()
                n += per_round
                elapsed = time.perf_counter() - t0
                if elapsed >= slice_len:
                    break
            if mode == "on":
                result["reports"] += tgreen.monitor.monitor_for(hub).reports
                tgreen.monitor.stop_all()
            result[mode][0] += n
            result[mode][1] += elapsed

    def switch(greenlets):
        def worker():
            for _ in range(SWITCHES_PER_GREENLET):
                tgreen.sleep(0)

        def one_round():
            tgreen.joinall([tgreen.spawn(worker) for _ in range(greenlets)])

        measure(one_round, greenlets * SWITCHES_PER_GREENLET)

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

        measure(one_round, PINGPONG_PER_ROUND)
        a.close()
        server.join()
        b.close()

    def driver():
        if bench == "switch":
            switch(GREENLETS)
        elif bench == "switch1":
            switch(1)
        else:
            pingpong()

    tgreen.spawn(driver).join()
    return {"off": result["off"][0] / result["off"][1],
            "on": result["on"][0] / result["on"][1], "reports": result["reports"]}


def select_cost(hub, duration: float) -> dict:
    """The per-turn price itself: ``selector.select(0)`` bare and behind the
    monitor's wrapper, in ns per call (asyncio's selector loop only)."""
    import time

    from tgreen.monitor import _Turns

    sel = hub.loop._selector
    wrapped = _Turns(sel)
    spent = {"off": 0.0, "on": 0.0}
    calls = {"off": 0, "on": 0}
    deadline = time.perf_counter() + duration
    while time.perf_counter() < deadline:  # short alternating blocks
        for mode, s in (("off", sel), ("on", wrapped)):
            t0 = time.perf_counter()
            for _ in range(500):
                s.select(0)
            spent[mode] += time.perf_counter() - t0
            calls[mode] += 500
    out = {m: spent[m] / calls[m] * 1e9 for m in spent}
    return {"off": out["off"], "on": out["on"], "reports": 0}


def fmt(rate: float) -> str:
    return f"{rate / 1e6:.2f}M" if rate >= 1e6 else f"{rate / 1e3:.1f}k"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=1.5, help="seconds per child")
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    ap.add_argument("--threshold-ms", type=float, default=100.0)
    ap.add_argument("--slices", type=int, default=10,
                    help="alternating off/on slices per child (default 10)")
    ap.add_argument("--child", nargs=2, metavar=("BENCH", "LOOP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        bench, loop = args.child
        print(json.dumps(child(bench, loop, args.duration, args.slices, args.threshold_ms)))
        return 0

    variants = [(b, lp) for b in BENCHES for lp in ("asyncio", "uvloop")] + [("select", "asyncio")]
    rates: dict = {(b, lp, m): [] for b, lp in variants for m in ("off", "on")}
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    env.pop("TGREEN_MONITOR_MS", None)
    load_before = os.getloadavg()
    for rep in range(args.reps):
        for b, lp in variants:
            out = subprocess.run([sys.executable, __file__, "--duration", str(args.duration),
                                  "--slices", str(args.slices),
                                  "--threshold-ms", str(args.threshold_ms), "--child", b, lp], capture_output=True, text=True, env=env,
                                 timeout=120)
            if out.returncode:
                raise SystemExit(f"child {(b, lp)} failed:\n{out.stderr}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            if res.get("reports"):
                print(f"note: {(b, lp)} reported {res['reports']} blocking episode(s)",
                      file=sys.stderr)
            rates[(b, lp, "off")].append(res["off"])
            rates[(b, lp, "on")].append(res["on"])
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    load_after = os.getloadavg()

    rows = [f"| workload | loop | monitor off | monitor on ({args.threshold_ms:g} ms) | on / off |",
            "|---|---|---:|---:|---:|"]
    for b, lp in variants:
        off = statistics.median(rates[(b, lp, "off")])
        on = statistics.median(rates[(b, lp, "on")])
        ratio = statistics.median(x / y for x, y in zip(rates[(b, lp, "on")],
                                                         rates[(b, lp, "off")]))
        if b == "select":
            rows.append(f"| select(0) call (ns, lower is better) | {lp} | {off:.0f} | "
                        f"{on:.0f} | {ratio:.2f} |")
        else:
            unit = "round trips/s" if b == "pingpong" else "switches/s"
            rows.append(f"| {b} ({unit}) | {lp} | {fmt(off)} | {fmt(on)} | {ratio:.2f} |")
    table = "\n".join(rows)
    spread = max((max(r) - min(r)) / statistics.median(r) for r in rates.values())
    ratio_spread = max(
        max(x / y for x, y in zip(rates[(b, lp, "on")], rates[(b, lp, "off")]))
        - min(x / y for x, y in zip(rates[(b, lp, "on")], rates[(b, lp, "off")]))
        for b, lp in variants)
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
            f"({args.reps} child processes per workload, each alternating {args.slices} "
            f"slices with the monitor off and on over ~{args.duration}s, so both modes see "
            "the same load; medians of the rates and of the per-child on/off ratios shown; "
            f"largest rate spread (max-min)/median {spread:.0%}, largest on/off ratio "
            f"spread {ratio_spread:.2f}). "
            f"Load average before: {' '.join(f'{x:.2f}' for x in load_before)}, after: "
            f"{' '.join(f'{x:.2f}' for x in load_after)}.\n\n{table}\n\n"
            "`select(0) call` is the per-turn price itself: one non-blocking "
            "`selector.select(0)`, bare and behind the monitor's wrapper. "
            "`switch` is `sleep(0)` across 100 greenlets (one loop turn wakes all 100); "
            "`switch1` is `sleep(0)` in a single greenlet, so every switch is a whole loop "
            "turn: the worst case for a per-turn cost. `pingpong` is a socketpair echo of 1 KiB "
            "messages between two greenlets. On asyncio's loop the monitor wraps the "
            "selector (two counter writes per loop turn, plus one Python call); on uvloop "
            "it adds a heartbeat timer every threshold/2. The watchdog thread wakes every "
            "threshold/2 and only reads, but each wake-up takes the GIL from the loop's "
            "thread; on a loaded machine that hand-off (the loop thread waiting to be "
            "scheduled again) is most of the cost.\n")
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
