"""Celery's gevent pool vs tgreen.celery.TaskPool: 400 tasks that each sleep 0.5 s.

    .venv/bin/pip install -e '.[test]' gevent
    .venv/bin/python benchmarks/celery/pool.py [--reps 3] [--tasks 400] [-c 200]

A real Redis (broker and result backend, started here on loopback) and real
worker processes (tests/test_celery_pool.py's ``Worker``: ``python -m
tgreen.celery``, ``celery worker -P gevent``). The tasks are queued on a queue
the worker does not consume yet; then ``add_consumer`` starts it, so the
client's publishing rate is not what is measured. Reported per run: the span
from the first task's start to the last task's end (1 s is ideal with -c 200;
serially it is 200 s), the wall time from ``add_consumer`` to the last
result, the peak number of tasks running at once, and the worker's CPU time
per task.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import redis  # noqa: E402
from servers import start_redis  # noqa: E402
from test_celery_pool import Worker, _client, _peak_overlap, _spans  # noqa: E402


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(url: str, via: str, tasks: int, concurrency: int) -> dict:
    redis.Redis.from_url(url).flushdb()
    client = _client(url)
    worker = Worker(Path(tempfile.mkdtemp()), url, via, "-c", str(concurrency), via=via).start(client)
    try:
        results = [client.send_task("capp.nap", (0.5,), queue="burst") for _ in range(tasks)]
        cpu0 = _cpu(worker.proc.pid)
        t0 = time.monotonic()
        client.control.add_consumer("burst", destination=[worker.name], reply=True, timeout=5)
        values = [r.get(timeout=300) for r in results]
        wall = time.monotonic() - t0
        cpu = _cpu(worker.proc.pid) - cpu0
    finally:
        worker.stop()
        client.close()
    span, _ = _spans(values)
    return {"span": span, "wall": wall, "peak": _peak_overlap(values), "cpu_ms_per_task": cpu / tasks * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("-c", "--concurrency", type=int, default=200)
    ap.add_argument("--pools", default="gevent,module", help="gevent, module (python -m tgreen.celery), custom")
    args = ap.parse_args()
    server = start_redis()
    try:
        url = f"redis://{server.host}:{server.port}/0"
        with open("/proc/loadavg") as f:
            print(f"load average at start: {f.read().split()[0]}")
        for rep in range(args.reps):
            for via in args.pools.split(","):
                r = run(url, via, args.tasks, args.concurrency)
                name = {"gevent": "celery -P gevent", "module": "python -m tgreen.celery",
                        "custom": "celery -P custom (tgreen)"}[via]
                print(f"{name:28} rep {rep + 1}: span {r['span']:.2f} s, wall {r['wall']:.2f} s, "
                      f"peak {r['peak']} at once, {r['cpu_ms_per_task']:.1f} ms CPU/task", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
