"""What --metrics-bind and the access log cost per request: tgreen-serve hello world
under wrk, before the change (a git revision) and after, metrics and access log on/off.

    .venv/bin/python benchmarks/server/metrics_cost.py --before 533a2a7 --reps 3 --duration 4

Each variant is a fresh ``tgreen-serve benchmarks/server/apps.py:hello --workers 1
--cores 100`` (the "before" one runs the revision's tree, extracted with ``git
archive`` into a temp dir, on the same interpreter); variants run round-robin,
the starting one rotating per repetition, wrk ``-t2 -c100`` keep-alive for
``--duration`` seconds after a 1 s warm-up. Reported: median req/s, and the
server's CPU per request (user+system of the server's processes during the
measured run / requests), which is steadier than req/s on a shared machine.
Also timed in-process: one call of the per-request metrics hook.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from bench import CLK_TCK, free_port, loadavg, run_wrk

VARIANTS = {
    # name: (tree, extra args)
    "before": ("before", []),
    "after": ("head", []),
    "after+metrics": ("head", ["--metrics-bind", "127.0.0.1:{mport}"]),
    "before+log": ("before", ["--access-log", "/dev/null"]),
    "after+log": ("head", ["--access-log", "/dev/null"]),
    "after+metrics+log": ("head", ["--metrics-bind", "127.0.0.1:{mport}", "--access-log",
                                             "/dev/null"]),
    "after+jsonlog": ("head", ["--access-log", "/dev/null", "--access-log-format", "json"]),
}


def tree_cpu(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its children (live ones)."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def run_variant(name: str, trees: dict, duration: int) -> dict:
    tree, extra = VARIANTS[name]
    port, mport = free_port(), free_port()
    args = [a.format(mport=mport) for a in extra]
    env = dict(os.environ, PYTHONPATH=trees[tree], BENCH_GREEN="tgreen")
    cmd = [sys.executable, "-m", "tgreen.serve", os.path.join(HERE, "apps.py:hello"), "--bind",
           f"127.0.0.1:{port}", "--workers", "1", "--cores", "100", "--log-level", "warning", *args]
    proc = subprocess.Popen(cmd, cwd=trees[tree], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        import socket

        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{name}: server did not start") from None
                time.sleep(0.05)
        warm = run_wrk(port, ["-t2", "-c100"], 1)   # warm-up
        cpu0 = tree_cpu(proc.pid)
        r = run_wrk(port, ["-t2", "-c100"], duration)
        cpu = tree_cpu(proc.pid) - cpu0
        r["us_per_req"] = cpu / r["requests"] * 1e6 if r["requests"] else float("nan")
        if "metrics" in name:
            import json
            import urllib.request

            stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{mport}/stats"))
            # wrk counts the responses it read; those in flight when it
            # stops (at most one per connection per run) reach the server too.
            r["counted"] = stats["requests_total"]
            r["wrk_total"] = warm["requests"] + r["requests"]
        return r
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def hook_ns() -> float:
    """CPU ns per call of the metrics hook (count + histogram + sum), in-process,
    less an empty call; best of 7 runs."""
    sys.path.insert(0, ROOT)
    from tgreen.wsgi.metrics import Block, Recorder

    class S:
        cfg = None
        loop = None

    class Req:
        method = "GET"
        start = time.monotonic()

    class Resp:
        code = 200

    rec = Recorder(Block(4), 0, S())
    hook = rec.make_hook(None)
    args = (None, Req(), Resp(), None)

    def nop(*a: object) -> None:
        pass

    n = 200_000

    def cpu(fn: object) -> float:
        t = time.process_time()
        for _ in range(n):
            fn(*args)  # type: ignore[operator]
        return time.process_time() - t

    best = min(cpu(hook) for _ in range(7))
    empty = min(cpu(nop) for _ in range(7))
    return (best - empty) / n * 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="533a2a7", help="git revision measured as 'before'")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    a = ap.parse_args()
    names = a.variants.split(",")
    tmp = tempfile.mkdtemp(prefix="tgreen-before-")
    try:
        archive = subprocess.run(["git", "archive", a.before], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        trees = {"before": tmp, "head": ROOT}
        print(f"load before: {loadavg()}", flush=True)
        results: dict[str, list[dict]] = {n: [] for n in names}
        for rep in range(a.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                r = run_variant(name, trees, a.duration)
                results[name].append(r)
                print(f"rep {rep + 1} {name}: {r['rps']:.0f} req/s, {r['us_per_req']:.1f} us CPU/req"
                      + (f", counted {r['counted']} (wrk read {r['wrk_total']})" if "counted" in r else ""),
                      flush=True)
        print(f"load after: {loadavg()}")
        print(f"metrics hook: {hook_ns():.0f} ns/call\n")
        base = statistics.median(r["rps"] for r in results[names[0]])
        base_cpu = statistics.median(r["us_per_req"] for r in results[names[0]])
        print(f"| variant | req/s (median) | runs | µs CPU / req (median) | runs | vs {names[0]} req/s | "
              f"vs {names[0]} CPU |")
        print("|---|---:|---|---:|---|---:|---:|")
        for name in names:
            rps = statistics.median(r["rps"] for r in results[name])
            cpu = statistics.median(r["us_per_req"] for r in results[name])
            runs = ", ".join(f"{r['rps']:.0f}" for r in results[name])
            cruns = ", ".join(f"{r['us_per_req']:.0f}" for r in results[name])
            print(f"| {name} | {rps:.0f} | {runs} | {cpu:.1f} | {cruns} | {rps / base:.2f} | "
                  f"{cpu / base_cpu:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
