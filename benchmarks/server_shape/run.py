"""Drive wrk against the server shapes of ``shapes.py``, interleaved.

    python benchmarks/server_shape/run.py [--duration 5] [--reps 2]

Prints one table row per (scenario, shape, loop): the median requests/s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable

SCENARIOS = {
    "keep-alive c100": ["-t2", "-c100"],
    "Connection: close c100": ["-t2", "-c100", "-H", "Connection: close"],
}


def wrk(port, args, duration):
    out = subprocess.run(["wrk", *args, f"-d{duration}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errs = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return float(m.group(1)) if m else 0.0, (errs.group(1) if errs else ""), non2xx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--shapes", default="greenlet,protocol,tgreen,raw")
    ap.add_argument("--loops", default="asyncio,uvloop")
    ns = ap.parse_args()
    variants = [(s, lp) for s in ns.shapes.split(",") for lp in ns.loops.split(",")]
    results = {}
    port = 18100
    for rep in range(ns.reps):
        for scen, args in SCENARIOS.items():
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for shape, lp in order:
                port += 1
                env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", ".."))
                p = subprocess.Popen([PY, os.path.join(HERE, "shapes.py"), shape, str(port), lp],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
                try:
                    wrk(port, args, 1)  # warm-up
                    rps, errs, _ = wrk(port, args, ns.duration)
                finally:
                    p.terminate()
                    p.wait()
                results.setdefault((scen, shape, lp), []).append(rps)
                print(f"{scen:24} {shape:9} {lp:8} {rps:10.0f} {errs}", file=sys.stderr)
    print("| scenario | shape | loop | req/s (median) | runs |")
    print("| --- | --- | --- | ---: | --- |")
    for (scen, shape, lp), v in results.items():
        runs = ", ".join(f"{x:.0f}" for x in v)
        print(f"| {scen} | {shape} | {lp} | {statistics.median(v):.0f} | {runs} |")


if __name__ == "__main__":
    main()
