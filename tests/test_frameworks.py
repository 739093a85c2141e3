"""The frameworks, proven: Flask (with SQLAlchemy's pool), Django's ORM (on
psycopg 3, and on psycopg2), Falcon and Bottle, each under tgreen-serve and
under gunicorn's ``-k tgreen.gunicorn.Worker``, one worker process each.

The apps live in ``tests/framework_apps/`` and are written the way each
framework's docs write one: none imports tgreen. The server patches the
standard library and the PostgreSQL drivers before the app loads, so their
blocking calls (``time.sleep``, ``requests`` to an upstream HTTP server, a
``pg_sleep`` query) hold only their request's greenlet. The proof: N
requests that each block DELAY seconds, sent at once, all come back right in
about the time of one, well under the SERIAL_FRACTION of N x DELAY that
serving them one after the other would take.

Each (framework, server) pair is one module-scoped fixture param: its server
starts once and the tests for it run against it.
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _serve_helpers import ROOT, Gunicorn, Serve
from servers import postgres_server  # noqa: F401 - pytest fixture

requests = pytest.importorskip("requests")
psycopg2 = pytest.importorskip("psycopg2")
pytest.importorskip("gunicorn")

APPS = Path(__file__).with_name("framework_apps")
N = 10                 # concurrent requests per test
DELAY = 0.5            # seconds each one blocks
SERIAL_FRACTION = 0.4  # of N * DELAY: one at a time would take 5 s, together ~0.5 s
POOL_REQUESTS = 200    # Flask + SQLAlchemy: greenlets sharing a pool of 20 + 10 overflow
POOL_SIZE = 20

# framework -> (app spec, extra environment, the driver its /db uses, pip name)
FRAMEWORKS = {
    "flask": ("flask_app:app", {}, "psycopg2", "flask"),
    "django-psycopg3": ("djsite.wsgi:application", {}, "psycopg", "django"),
    # A site with only psycopg2 installed: psycopg 3 hidden from the app, so
    # Django's backend falls back to psycopg2, as it documents.
    "django-psycopg2": ("djsite.wsgi:application", {"HIDE_PSYCOPG3": "1"}, "psycopg2", "django"),
    "falcon": ("falcon_app:app", {}, "psycopg", "falcon"),
    "bottle": ("bottle_app:app", {}, "psycopg2", "bottle"),
}
SERVERS = {
    "tgreen-serve": (Serve, ["--cores", str(POOL_REQUESTS + 50)]),
    "gunicorn": (Gunicorn, ["--workers", "1", "--worker-connections", str(POOL_REQUESTS + 50),
                            "--graceful-timeout", "2"]),
}

pytestmark = pytest.mark.timeout(120)


# -- the upstream HTTP server ----------------------------------------------------------


class _Slow(http.server.BaseHTTPRequestHandler):
    """GET /slow?i=I&d=D: answers {"i": I} after D seconds."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        time.sleep(float(query.get("d", ["0"])[0]))
        body = json.dumps({"i": int(query.get("i", ["0"])[0])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 256


@pytest.fixture(scope="module")
def upstream():
    server = _ThreadingServer(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_env(postgres_server):  # noqa: F811 - the fixture imported above
    """The apps' database settings; the table Django's ``shop.Item`` reads."""
    s = postgres_server
    env = {"PG_HOST": s.host, "PG_PORT": str(s.port), "PG_USER": s.info["user"],
           "PG_DB": s.info["dbname"]}
    _pg_query(env, "DROP TABLE IF EXISTS shop_item;"
                   " CREATE TABLE shop_item (id bigint PRIMARY KEY, name varchar(100) NOT NULL);"
                   f" INSERT INTO shop_item SELECT i, 'item-' || i FROM generate_series(0, {N - 1}) i")
    return env


def _pg_query(env: dict, sql: str) -> list | None:
    """Run ``sql`` in its own committed transaction; its rows, if it returns any."""
    conn = psycopg2.connect(host=env["PG_HOST"], port=env["PG_PORT"], user=env["PG_USER"],
                            dbname=env["PG_DB"])
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


# -- the servers -------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[(f, s) for f in FRAMEWORKS for s in SERVERS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def site(request, upstream, pg_env, tmp_path_factory):
    framework, server = request.param
    app, extra, driver, package = FRAMEWORKS[framework]
    pytest.importorskip(package)
    pytest.importorskip(driver)
    pythonpath = [str(APPS), str(ROOT)]
    if extra.get("HIDE_PSYCOPG3"):
        hidden = tmp_path_factory.mktemp("hide-psycopg3")
        (hidden / "psycopg.py").write_text(
            'raise ImportError("psycopg 3 is not installed on this site (tests/test_frameworks.py)")\n')
        pythonpath.insert(0, str(hidden))
    env = {**pg_env, "UPSTREAM_URL": upstream, "PYTHONPATH": os.pathsep.join(pythonpath)}
    cls, args = SERVERS[server]
    with cls(app, *args, "--chdir", str(APPS), env=env) as srv:
        srv.framework, srv.driver = framework, driver
        # Warm up: the first request of each kind imports and connects.
        for kind in ("sleep", "upstream", "db"):
            r = requests.get(f"{srv.url}/{kind}", params={"i": 0, "d": 0}, timeout=30)
            assert r.status_code == 200, (kind, r.status_code, r.text[:2000], srv.output()[-4000:])
        yield srv


def _at_once(srv, kind: str, n: int = N, delay: float = DELAY) -> tuple[list, float]:
    """GET /KIND?i=0..n-1&d=delay, all at once; (responses, wall time)."""
    def get(i: int):
        return requests.get(f"{srv.url}/{kind}", params={"i": i, "d": delay}, timeout=60)

    with ThreadPoolExecutor(n) as pool:
        t0 = time.monotonic()
        responses = list(pool.map(get, range(n)))
        elapsed = time.monotonic() - t0
    for r in responses:
        assert r.status_code == 200, (r.status_code, r.text[:2000], srv.output()[-4000:])
    return [r.json() for r in responses], elapsed


def _assert_concurrent(elapsed: float, n: int = N) -> None:
    serial = n * DELAY
    assert elapsed < SERIAL_FRACTION * serial, f"{n} requests of {DELAY}s took {elapsed:.2f}s"


# -- the tests -------------------------------------------------------------------------


def test_blocking_sleeps_in_the_app_run_concurrently(site):
    results, elapsed = _at_once(site, "sleep")
    assert results == [{"kind": "sleep", "i": i} for i in range(N)]
    _assert_concurrent(elapsed)


def test_requests_to_a_slow_upstream_run_concurrently(site):
    results, elapsed = _at_once(site, "upstream")
    assert results == [{"kind": "upstream", "i": i, "upstream": {"i": i}} for i in range(N)]
    _assert_concurrent(elapsed)


def test_pg_sleep_queries_run_concurrently(site):
    results, elapsed = _at_once(site, "db")
    for i, result in enumerate(results):
        if site.framework.startswith("django"):
            # The ORM read row i, and the backend used the driver this site has.
            assert result == {"kind": "db", "i": i, "db": f"item-{i}", "driver": site.driver}, result
        else:
            assert result == {"kind": "db", "i": i, "db": i}, result
    _assert_concurrent(elapsed)


def test_200_requests_share_sqlalchemys_pool_without_deadlock_or_leak(site, pg_env):
    """Flask + SQLAlchemy's QueuePool (20 + 10 overflow) on psycopg2: 200
    requests at once, 200 greenlets in one worker, queue for 30 connections
    (the pool's lock and condition are green), all answer, and afterwards the
    pool holds its 20 connections again, none checked out, and the server
    sees exactly those 20."""
    if site.framework != "flask":
        pytest.skip("the pool is the Flask app's (SQLAlchemy)")
    delay = 0.1
    results, elapsed = _at_once(site, "db", n=POOL_REQUESTS, delay=delay)
    assert results == [{"kind": "db", "i": i, "db": i} for i in range(POOL_REQUESTS)]
    # 200 / 30 connections x 0.1 s is ~0.7 s; one at a time would be 20 s.
    assert elapsed < 0.4 * POOL_REQUESTS * delay, elapsed
    assert requests.get(f"{site.url}/pool", timeout=10).json() == {
        "size": POOL_SIZE, "checkedin": POOL_SIZE, "checkedout": 0}
    deadline = time.monotonic() + 5
    while True:  # an overflow connection's close reaches the server a moment later
        count = _pg_query(pg_env, "SELECT count(*) FROM pg_stat_activity"
                                  " WHERE application_name = 'flask_app'")[0][0]
        if count == POOL_SIZE or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert count == POOL_SIZE
