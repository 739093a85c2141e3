"""The library examples run as documented, against real servers started on
loopback by ``servers.py``: Flask + requests + redis-py (served by
tgreen.wsgi, by green wsgiref, and by ``tgreen-serve``) and psycopg2."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from servers import free_port, postgres_server, redis_server  # noqa: F401, F811 - fixtures

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FLASK_EXAMPLE = EXAMPLES / "flask_requests_redis.py"
CLIENTS = 100  # concurrent /fetch requests, each waiting 0.2 s upstream

pytestmark = pytest.mark.timeout(120)


def _need(*modules: str) -> None:
    for m in modules:
        pytest.importorskip(m)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        return json.load(resp)


def _wait_until_up(base: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the example exited with {proc.returncode}:\n{proc.stderr.read()[-4000:]}")
        try:
            _get_json(base)
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("the example did not answer within 30 s")


def _fetch_concurrently(base: str) -> None:
    """CLIENTS requests at once (real threads in this unpatched process):
    all right, counted once each in Redis, and concurrent in the server."""
    before = _get_json(base + "stats")["fetches"]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as ex:
        results = list(ex.map(lambda _: _get_json(base + "fetch"), range(CLIENTS)))
    elapsed = time.monotonic() - started
    assert all(r["status"] == 200 and r["bytes"] > 0 for r in results), results[:3]
    assert sorted(r["fetches"] for r in results) == list(range(before + 1, before + CLIENTS + 1))
    assert _get_json(base + "stats")["fetches"] == before + CLIENTS
    print(f"{CLIENTS} concurrent /fetch in {elapsed:.2f} s")
    assert elapsed < 8.0, elapsed  # one after the other: CLIENTS x 0.2 s = 20 s


def _run_flask_example(redis_server, argv: list[str], base: str | None = None) -> None:
    env = dict(os.environ, REDIS_URL=f"redis://{redis_server.host}:{redis_server.port}/0")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=EXAMPLES.parent)
    try:
        if base is None:  # the example prints "serving on http://HOST:PORT/ (...)"
            line = proc.stdout.readline()
            if not line.startswith("serving on "):
                proc.kill()
                pytest.fail(f"unexpected first line {line!r}:\n{proc.communicate()[1][-4000:]}")
            base = line.split()[2]
        _wait_until_up(base, proc)
        _fetch_concurrently(base)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_flask_example_is_a_wsgi_module():
    """Importable as a WSGI module: ``application`` answers (Flask's test client)."""
    _need("flask", "redis", "requests")
    code = (
        "import runpy, sys\n"
        f"ns = runpy.run_path({str(FLASK_EXAMPLE)!r}, run_name='flask_example')\n"
        "import tgreen.monkey\n"
        "assert tgreen.monkey.is_module_patched('socket')\n"
        "resp = ns['application'].test_client().get('/slow?seconds=0.01')\n"
        "assert resp.status_code == 200 and resp.get_json() == {'slept': 0.01}, resp.data\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-4000:]


@pytest.mark.parametrize("server", ["tgreen", "wsgiref"])
def test_flask_example_serves_concurrently(redis_server, server):
    _need("flask", "redis", "requests")
    _run_flask_example(redis_server, [sys.executable, str(FLASK_EXAMPLE), "--port", "0",
                                      "--server", server])


def test_flask_example_under_tgreen_serve(redis_server):
    _need("flask", "redis", "requests")
    port = free_port()
    _run_flask_example(redis_server, [sys.executable, "-m", "tgreen.serve", str(FLASK_EXAMPLE),
                                      "--bind", f"127.0.0.1:{port}", "--cores", "1000"],
                       base=f"http://127.0.0.1:{port}/")


def test_psycopg2_example(postgres_server):
    _need("psycopg2")
    s = postgres_server
    dsn = f"host={s.host} port={s.port} user={s.info['user']} dbname={s.info['dbname']}"
    out = subprocess.run([sys.executable, str(EXAMPLES / "psycopg2_example.py"), dsn],
                         check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("50 queries of 0.2 s on 25 connections in "), out.stdout
    elapsed = float(lines[0].split(" in ")[1].split()[0])
    assert elapsed < 5.0, out.stdout  # two rounds of 0.2 s; one after the other: 10 s
    assert lines[1].startswith("pg_sleep(30) timed out after "), out.stdout
    assert 0.45 <= float(lines[1].split(" after ")[1].split()[0]) < 3.0, out.stdout  # not 30 s
    assert lines[2] == "queries still running in the server: 0", out.stdout
