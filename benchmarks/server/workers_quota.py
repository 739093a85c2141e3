"""Does ``tgreen-serve --workers 2`` scale when the load generator does not
take the CPU the second worker needs? Each worker gets a CPU budget of its own
(a cgroup v1 ``cpu`` quota, default 0.5 core), so on a 2-core machine 1 and
2 workers use 0.5 and 1.0 core and wrk keeps the rest.

    sudo .venv/bin/python benchmarks/server/workers_quota.py [--quota 0.5] [--reps 3]

Needs a writable /sys/fs/cgroup/cpu (root, cgroup v1). ``bench.py``'s
``workers_quota`` scenario calls ``run()`` in its interleaved rounds and puts
the ratio beside the on-box ``workers`` figure. This emulates "a
machine whose server cores are separate from the load generator's"; it is
not the 2-core on-box number of ``bench.py``'s ``workers`` scenario (see
RESULTS.md), which the machine itself bounds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CG = "/sys/fs/cgroup/cpu"
PERIOD_US = 10_000   # short: a long period throttles in bursts that stall every connection at once


def make_group(name: str, quota: float) -> str:
    path = os.path.join(CG, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
        f.write(str(PERIOD_US))
    with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as f:
        f.write(str(int(quota * PERIOD_US)))
    return path


def move(pid: int, group: str) -> None:
    with open(os.path.join(group, "cgroup.procs"), "w") as f:
        f.write(str(pid))


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(x) for x in out.split())


def run(workers: int, quota: float, port: int, duration: int) -> float:
    env = dict(os.environ, BENCH_GREEN="tgreen")
    proc = subprocess.Popen([sys.executable, "-m", "tgreen.serve", os.path.join(HERE, "apps.py") + ":hello",
                             "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--cores", "100"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    groups = []
    try:
        deadline = time.monotonic() + 10
        while len(children(proc.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        for i, pid in enumerate(children(proc.pid)):
            g = make_group(f"tgreen-bench-w{i + 1}", quota)
            groups.append(g)
            move(pid, g)
        subprocess.run(["wrk", "-t2", "-c100", "-d1s", f"http://127.0.0.1:{port}/"], capture_output=True)
        out = subprocess.run(["wrk", "-t2", "-c100", f"-d{duration}s", f"http://127.0.0.1:{port}/"],
                             capture_output=True, text=True).stdout
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        return float(m.group(1)) if m else float("nan")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for g in groups:
            for _ in range(50):
                try:
                    os.rmdir(g)
                    break
                except OSError:
                    time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quota", type=float, default=0.5, help="cores per worker")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=4)
    args = ap.parse_args()
    if not os.access(CG, os.W_OK) or shutil.which("wrk") is None:
        raise SystemExit(f"workers_quota: needs a writable {CG} (root, cgroup v1) and wrk")
    res: dict[int, list[float]] = {1: [], 2: []}
    port = 18900
    for rep in range(args.reps):
        for w in ((1, 2) if rep % 2 == 0 else (2, 1)):
            port += 1
            rps = run(w, args.quota, port, args.duration)
            res[w].append(rps)
            print(f"rep {rep + 1} workers={w} quota={args.quota} core each: {rps:,.0f} req/s", file=sys.stderr)
    m1, m2 = statistics.median(res[1]), statistics.median(res[2])
    print("| workers | CPU budget | req/s (median) | runs |\n| --- | --- | ---: | --- |")
    for w, m in ((1, m1), (2, m2)):
        print(f"| {w} | {w} x {args.quota:g} core | {m:,.0f} | {' / '.join(f'{x:,.0f}' for x in res[w])} |")
    print(f"\nw2 / w1 = {m2 / m1:.2f}x")


if __name__ == "__main__":
    main()
