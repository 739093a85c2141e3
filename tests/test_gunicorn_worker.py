"""tgreen.gunicorn.Worker under real gunicorn processes: concurrency, the
arbiter's signals and timeout, --max-requests, --preload, --keep-alive, the
entry point and environ['gunicorn.socket'].

The apps never import tgreen: the worker patches the stdlib, so their
``time.sleep`` is green."""

from __future__ import annotations

import http.client
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from _serve_helpers import ROOT, free_port

pytest.importorskip("gunicorn")

APP = textwrap.dedent("""
    import os
    import socket
    import time

    IMPORTED_IN = os.getpid()
    SOCKET_AT_IMPORT = socket.socket.__module__

    def application(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/sleep":
            time.sleep(float(environ["QUERY_STRING"] or "1"))
        elif path == "/spin":
            while True:          # holds the loop: only the arbiter's --timeout ends it
                pass
        elif path == "/socket":
            sock = environ["gunicorn.socket"]
            host, port = sock.getpeername()[:2]
            body = f"{type(sock).__module__} {host} {port}".encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        body = f"{os.getpid()} {IMPORTED_IN} {SOCKET_AT_IMPORT}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
""")


class Gunicorn:
    """``gunicorn -k WORKER ARGS app:application`` on a free loopback port."""

    def __init__(self, tmp_path: Path, *args: str, worker: str = "tgreen.gunicorn.Worker",
                 client_tls: ssl.SSLContext | None = None) -> None:
        (tmp_path / "gapp.py").write_text(APP)
        self.client_tls = client_tls
        self.tmp_path = tmp_path
        self.port = free_port()
        self.log_path = tmp_path / "gunicorn.log"
        self.cmd = [sys.executable, "-m", "gunicorn", "-k", worker, "-b", f"127.0.0.1:{self.port}",
                    "--control-socket", str(tmp_path / "gunicorn.ctl"),
                    "--error-logfile", str(self.log_path), "--log-level", "info",
                    *args, "gapp:application"]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Gunicorn:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(self.cmd, cwd=self.tmp_path, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.get("/")
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gunicorn did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            # gunicorn 27's arbiter takes seconds to exit after it has stopped
            # its workers ("Shutting down"); the workers are what is tested.
            deadline = time.monotonic() + 15
            while self.proc.poll() is None and time.monotonic() < deadline:
                if "Shutting down: Master" in self.log():
                    try:
                        self.proc.wait(0.5)
                    except subprocess.TimeoutExpired:
                        break
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def get(self, path: str, timeout: float = 10, headers: dict | None = None) -> tuple[int, str, dict]:
        if self.client_tls is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=self.client_tls)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read().decode(), dict(resp.getheaders())
        finally:
            conn.close()

    def pid(self) -> int:
        return int(self.get("/")[1].split()[0])


def _concurrently(fn, n: int) -> list:
    results: list = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported by the assertion
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_workers_serve_100_one_second_sleeps_at_once(tmp_path):
    with Gunicorn(tmp_path, "-w", "2", "--worker-connections", "100") as g:
        t0 = time.monotonic()
        results = _concurrently(lambda i: g.get("/sleep?1", timeout=30), 100)
        elapsed = time.monotonic() - t0
        statuses = [r[0] if isinstance(r, tuple) else r for r in results]
        assert statuses == [200] * 100
        pids = {int(r[1].split()[0]) for r in results}
        assert g.proc.pid not in pids
        # Served one at a time by two workers this would take 50 s.
        assert elapsed < 8, elapsed


def test_worker_connections_bounds_the_requests_a_worker_serves_at_once(tmp_path):
    with Gunicorn(tmp_path, "-w", "1", "--worker-connections", "10") as g:
        t0 = time.monotonic()
        results = _concurrently(lambda i: g.get("/sleep?1", timeout=30)[0], 20)
        elapsed = time.monotonic() - t0
        assert results == [200] * 20      # the rest wait (backpressure), none is refused
        assert elapsed >= 1.9, elapsed      # 10 at a time: two rounds of 1 s at least


def test_the_stdlib_is_patched_before_the_app_is_imported_in_each_worker(tmp_path):
    with Gunicorn(tmp_path, "-w", "2") as g:
        pid, imported_in, socket_module = g.get("/")[1].split()
        assert socket_module == "tgreen.socket"
        assert pid == imported_in        # imported in the worker, not the arbiter


def test_preload_imports_the_app_patched_in_the_arbiter_and_workers_still_serve_concurrently(tmp_path):
    with Gunicorn(tmp_path, "-w", "2", "--preload") as g:
        pid, imported_in, socket_module = g.get("/")[1].split()
        assert socket_module == "tgreen.socket"
        assert int(imported_in) == g.proc.pid != int(pid)
        t0 = time.monotonic()
        results = _concurrently(lambda i: g.get("/sleep?1", timeout=30)[0], 40)
        assert results == [200] * 40
        assert time.monotonic() - t0 < 8


def test_the_entry_point_egg_tgreen_worker_names_the_worker(tmp_path):
    with Gunicorn(tmp_path, worker="egg:tgreen#worker") as g:
        status, body, _ = g.get("/")
        assert status == 200 and body.split()[2] == "tgreen.socket"
        assert "Using worker: egg:tgreen#worker" in g.log()


def test_environ_gunicorn_socket_is_the_connections_green_socket(tmp_path):
    with Gunicorn(tmp_path) as g:
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        conn.connect()
        client_port = conn.sock.getsockname()[1]
        conn.request("GET", "/socket")
        body = conn.getresponse().read().decode()
        conn.close()
        assert body == f"tgreen.socket 127.0.0.1 {client_port}"


def test_sigterm_drains_requests_in_flight_and_loses_none(tmp_path):
    with Gunicorn(tmp_path, "-w", "2", "--graceful-timeout", "20") as g:
        started = threading.Event()

        def slow(i: int) -> int:
            if i == 0:
                started.set()
            return g.get("/sleep?1.5", timeout=30)[0]

        box: list = []
        t = threading.Thread(target=lambda: box.append(_concurrently(slow, 30)))
        t.start()
        started.wait(5)
        time.sleep(0.5)          # every request is in a worker now
        g.signal(signal.SIGTERM)
        t.join(30)
        assert box and box[0] == [200] * 30
        assert g.proc.wait(20) == 0
        assert "finishing requests in flight" in g.log()


def test_sigquit_stops_the_workers_at_once(tmp_path):
    with Gunicorn(tmp_path, "--graceful-timeout", "30") as g:
        box: list = []
        t = threading.Thread(target=lambda: box.append(_concurrently(
            lambda i: g.get("/sleep?20", timeout=30), 5)))
        t.start()
        time.sleep(1)
        t0 = time.monotonic()
        g.signal(signal.SIGQUIT)
        t.join(30)
        g.proc.wait(20)
        assert time.monotonic() - t0 < 10        # not the 20 s sleep, not the 30 s graceful timeout
        assert all(isinstance(r, OSError) for r in box[0]), box


def test_a_cpu_bound_request_gets_the_worker_killed_by_the_arbiter_timeout_and_replaced(tmp_path):
    with Gunicorn(tmp_path, "-w", "1", "--timeout", "2") as g:
        first = g.pid()
        spin = threading.Thread(target=lambda: _concurrently(lambda i: g.get("/spin", timeout=30), 1))
        spin.start()
        deadline = time.monotonic() + 20
        pid = first
        while pid == first and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                pid = g.pid()
            except OSError:
                pass
        spin.join(30)
        assert pid != first
        assert "WORKER TIMEOUT" in g.log()


def test_a_worker_that_serves_max_requests_is_replaced_without_losing_a_request(tmp_path):
    with Gunicorn(tmp_path, "-w", "1", "--max-requests", "5") as g:
        pids = [g.pid() for _ in range(16)]      # each on a new connection; none may fail
        # A worker finishes the requests already accepted when it reaches
        # its limit, so under load it may serve a few more than 5.
        assert len(set(pids)) >= 2, pids
        assert "Autorestarting worker after current request." in g.log()


def test_keep_alive_zero_closes_every_connection_and_the_default_keeps_it_open(tmp_path):
    with Gunicorn(tmp_path, "--keep-alive", "0") as g:
        assert g.get("/")[2].get("Connection") == "close"
    with Gunicorn(tmp_path, "--keep-alive", "5") as g:
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        conn.request("GET", "/")
        r1 = conn.getresponse()
        r1.read()
        sock = conn.sock
        conn.request("GET", "/")
        r2 = conn.getresponse()
        r2.read()
        assert r1.status == r2.status == 200 and conn.sock is sock
        conn.close()


def test_sighup_replaces_the_workers_and_requests_in_flight_complete(tmp_path):
    with Gunicorn(tmp_path, "-w", "1", "--graceful-timeout", "20") as g:
        old = g.pid()
        box: list = []
        t = threading.Thread(target=lambda: box.append(_concurrently(
            lambda i: g.get("/sleep?1.5", timeout=30)[0], 10)))
        t.start()
        time.sleep(0.5)
        g.signal(signal.SIGHUP)
        t.join(30)
        assert box[0] == [200] * 10
        deadline = time.monotonic() + 15
        while g.pid() == old and time.monotonic() < deadline:
            time.sleep(0.2)
        assert g.pid() != old


def test_sigusr1_reopens_the_log_files_in_the_workers(tmp_path):
    with Gunicorn(tmp_path, "-w", "1") as g:
        moved = tmp_path / "gunicorn.log.1"
        g.log_path.rename(moved)
        g.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not g.log_path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)        # the arbiter forwards USR1 to the worker
        g.signal(signal.SIGTERM)
        g.proc.wait(20)
        # The worker's own line about draining lands in the new file.
        assert "finishing requests in flight" in g.log()
        assert "finishing requests in flight" not in moved.read_text()


def test_gunicorns_access_log_gets_a_line_per_request_in_its_format(tmp_path):
    access = tmp_path / "access.log"
    fmt = '%(h)s "%(r)s" %(s)s %(b)s "%(a)s" %({x-trace}i)s %({content-length}o)s'
    with Gunicorn(tmp_path, "--access-logfile", str(access), "--access-logformat", fmt) as g:
        status, body, _ = g.get("/?q=1", headers={"User-Agent": "probe/1", "X-Trace": "abc"})
        assert status == 200
        n = len(body.encode())
        want = f'127.0.0.1 "GET /?q=1 HTTP/1.1" 200 {n} "probe/1" abc {n}'
        deadline = time.monotonic() + 5
        while want not in access.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        # The last line (the one before is the fixture's readiness probe).
        assert access.read_text().splitlines()[-1] == want


def test_certfile_and_keyfile_serve_https(tmp_path):
    import shutil

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    client = ssl.create_default_context(cafile=str(cert))
    with Gunicorn(tmp_path, "--certfile", str(cert), "--keyfile", str(key), client_tls=client) as g:
        assert g.get("/sleep?0.1")[0] == 200
        # Plain HTTP on the TLS port is not served.
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=5)
        with pytest.raises((OSError, http.client.HTTPException)):
            conn.request("GET", "/")
            conn.getresponse()
        conn.close()


def test_reload_replaces_the_worker_when_the_app_file_changes(tmp_path):
    with Gunicorn(tmp_path, "-w", "1", "--reload") as g:
        first = g.pid()
        time.sleep(1.2)          # the poll reloader compares mtimes once a second
        app = tmp_path / "gapp.py"
        app.write_text(app.read_text() + "\n# changed\n")
        deadline = time.monotonic() + 20
        pid = first
        while pid == first and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                pid = g.pid()
            except OSError:
                pass
        assert pid != first
        assert "Worker reloading:" in g.log()
