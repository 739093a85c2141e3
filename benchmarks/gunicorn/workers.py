"""gunicorn's gevent worker vs tgreen.gunicorn.Worker (and sync for scale).

    .venv/bin/pip install -e '.[test]' gevent
    .venv/bin/python benchmarks/gunicorn/workers.py            # needs wrk

Two workers, --worker-connections 1000, the app of tests/test_gunicorn_worker.py
(it never imports tgreen or gevent; the worker patches the stdlib):
1. N concurrent requests that each time.sleep(1): wall time (about 1 s is ideal);
2. hello world, keep-alive, wrk -t2 -c100 -d8s: requests/s and p99 latency.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_gunicorn_worker import Gunicorn, _concurrently  # noqa: E402


def main() -> None:
    for worker in ("gevent", "tgreen.gunicorn.Worker", "sync"):
        args = ("-w", "2", "--worker-connections", "1000", "--no-control-socket")
        if worker != "sync":
            for n in (100, 400):
                with Gunicorn(Path(tempfile.mkdtemp()), *args, worker=worker) as g:
                    t0 = time.monotonic()
                    r = _concurrently(lambda i, g=g: g.get("/sleep?1", timeout=60), n)
                    wall = time.monotonic() - t0
                    ok = sum(1 for x in r if isinstance(x, tuple) and x[0] == 200)
                    print(f"{worker:24} {n} x sleep(1): {wall:.2f} s, {ok} ok")
        with Gunicorn(Path(tempfile.mkdtemp()), *args, worker=worker) as g:
            url = f"http://127.0.0.1:{g.port}/"
            subprocess.run(["wrk", "-t2", "-c100", "-d3s", url], capture_output=True)   # warm up
            out = subprocess.run(["wrk", "-t2", "-c100", "-d8s", "--latency", url],
                                 capture_output=True, text=True).stdout
            rps = re.search(r"Requests/sec:\s+(\S+)", out).group(1)
            p99 = re.search(r"99%\s+(\S+)", out).group(1)
            print(f"{worker:24} hello c100: {rps} req/s, p99 {p99}")


if __name__ == "__main__":
    main()
