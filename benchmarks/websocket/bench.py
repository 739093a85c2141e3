"""WebSocket memory per idle connection and broadcast time: tgreen vs gevent.

Each variant is one server process with one worker, started by this script
on a loopback port:

    tgreen-serve + tgreen.websocket      (apps_native.py)
    tgreen-serve + flask-sock            (apps_flask.py)
    gunicorn -k tgreen.gunicorn.Worker + flask-sock
    gunicorn -k gevent + flask-sock      (the comparison the issue asks for)

For each: warm up (10 connections, one broadcast), read the worker's VmRSS,
open N idle connections (asyncio ``websockets`` client in this process, no
compression, no client pings), wait until the app counts N, settle 1 s, read
VmRSS again: memory per connection = the difference / N. Then broadcast:
one client sends "broadcast PAYLOAD", the app sends PAYLOAD to every
connection from that one handler, and the time until all N clients have
received it is taken (median of ``--reps``; it includes this client's own
receiving, the same for every variant). ::

    .venv/bin/python benchmarks/websocket/bench.py                  # N=1000, 5 broadcasts
    .venv/bin/python benchmarks/websocket/bench.py -n 200 --reps 3 --variants tgreen-native,gevent

Prints a Markdown table (and the machine's load average before and after:
the numbers are only comparable within one run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import websockets.asyncio.client as ws_client

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(variant: str, port: int, n: int) -> list[str]:
    py = sys.executable
    bind = f"127.0.0.1:{port}"
    cores = str(n + 100)
    if variant == "tgreen-native":
        return [py, "-m", "tgreen.serve", str(HERE / "apps_native.py") + ":application",
                "--bind", bind, "--cores", cores, "--workers", "1", "--log-level", "warning"]
    if variant == "tgreen-flask":
        return [py, "-m", "tgreen.serve", str(HERE / "apps_flask.py") + ":app",
                "--bind", bind, "--cores", cores, "--workers", "1", "--log-level", "warning"]
    worker = {"gunicorn-tgreen-flask": "tgreen.gunicorn.Worker", "gevent": "gevent"}[variant]
    return [py, "-m", "gunicorn", "-k", worker, "-w", "1", "--worker-connections", cores,
            "-b", bind, "--chdir", str(HERE), "--log-level", "warning",
            "--control-socket", f"/tmp/tgreen-wsbench-{port}.ctl", "apps_flask:app"]


LABELS = {
    "tgreen-native": "tgreen-serve + tgreen.websocket",
    "tgreen-flask": "tgreen-serve + flask-sock",
    "gunicorn-tgreen-flask": "gunicorn -k tgreen.gunicorn.Worker + flask-sock",
    "gevent": "gunicorn -k gevent + flask-sock",
}


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=10) as r:
        return int(r.read())


def _wait_count(port: int, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _count(port) != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app counts {_count(port)} connections, expected {n}")
        time.sleep(0.1)


async def _open(url: str, n: int) -> list:
    conns: list = []
    for i in range(0, n, 100):
        conns += await asyncio.gather(*(
            ws_client.connect(url, compression=None, ping_interval=None, open_timeout=60,
                              max_queue=None)
            for _ in range(min(100, n - i))))
    return conns


async def _broadcast(conns: list, payload: str) -> float:
    t0 = time.perf_counter()
    await conns[0].send("broadcast " + payload)
    got = await asyncio.gather(*(asyncio.wait_for(c.recv(), 120) for c in conns))
    took = time.perf_counter() - t0
    assert all(g == payload for g in got), "a client got something else"
    return took


async def _close(conns: list) -> None:
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


def run_variant(variant: str, n: int, reps: int) -> dict:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(_cmd(variant, port, n), cwd=HERE, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _count(port)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{variant} did not start") from None
                time.sleep(0.1)
        workers = _children(proc.pid)
        if len(workers) != 1:
            raise RuntimeError(f"{variant}: expected one worker, found {workers}")
        worker = workers[0]
        url = f"ws://127.0.0.1:{port}/ws"
        payload = "p" * 100

        async def main() -> dict:
            warm = await _open(url, 10)
            _wait_count(port, 10)
            await _broadcast(warm, payload)
            await _close(warm)
            _wait_count(port, 0)
            await asyncio.sleep(0.5)
            rss0 = _rss(worker)
            t0 = time.perf_counter()
            conns = await _open(url, n)
            opened = time.perf_counter() - t0
            _wait_count(port, n)
            await asyncio.sleep(1.0)
            rss1 = _rss(worker)
            times = [await _broadcast(conns, payload) for _ in range(reps)]
            await _close(conns)
            return {"per_conn": (rss1 - rss0) / n, "rss0": rss0, "rss1": rss1, "open_s": opened,
                    "bcast": times}

        return asyncio.run(main())
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=1000, help="idle connections per variant (default 1000)")
    ap.add_argument("--reps", type=int, default=5, help="broadcasts per variant (default 5)")
    ap.add_argument("--variants", default=",".join(LABELS), help="comma-separated: " + ", ".join(LABELS))
    args = ap.parse_args()
    variants = args.variants.split(",")
    for v in variants:
        if v not in LABELS:
            print(f"bench.py: --variants: unknown variant {v!r} (one of {', '.join(LABELS)})",
                  file=sys.stderr)
            sys.exit(2)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # the servers inherit it
    load0 = os.getloadavg()
    results = {}
    for v in variants:
        results[v] = run_variant(v, args.n, args.reps)
        r = results[v]
        print(f"# {LABELS[v]}: {r['per_conn'] / 1024:.1f} KiB/conn, broadcast median "
              f"{statistics.median(r['bcast']) * 1000:.1f} ms ({', '.join(f'{t * 1000:.0f}' for t in r['bcast'])})",
              file=sys.stderr)
    load1 = os.getloadavg()
    print(f"\nN = {args.n} idle connections, {args.reps} broadcasts of 100 B, "
          f"python {sys.version.split()[0]}, load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}\n")
    print("| server + app | worker RSS before | RSS with N idle | memory per idle connection "
          "| broadcast to N (median) | broadcasts (ms) |")
    print("|---|---:|---:|---:|---:|---|")
    for v, r in results.items():
        print(f"| {LABELS[v]} | {r['rss0'] / 2**20:.1f} MiB | {r['rss1'] / 2**20:.1f} MiB "
              f"| {r['per_conn'] / 1024:.1f} KiB | {statistics.median(r['bcast']) * 1000:.1f} ms "
              f"| {', '.join(f'{t * 1000:.0f}' for t in r['bcast'])} |")


if __name__ == "__main__":
    main()
