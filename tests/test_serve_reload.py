"""tgreen-serve reloads without downtime: on SIGHUP (or a file change with
--reload) new workers import the app on the same sockets and the old ones
stop only once the new ones are up; code that fails to import leaves the old
workers serving and the master up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests
from _serve_helpers import ROOT, Serve, _env, free_port, write_app

APP = textwrap.dedent("""
    import os
    import tgreen

    IMPORT_DELAY = 0
    if IMPORT_DELAY:
        tgreen.sleep(IMPORT_DELAY)   # the new code takes a while to import

    def application(environ, start_response):
        if environ["PATH_INFO"] == "/sleep":
            tgreen.sleep(float(environ["QUERY_STRING"] or "0.2"))
        body = f"VERSION {os.getpid()}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
""")


def _version(url: str) -> tuple[str, int]:
    text = requests.get(url, headers={"Connection": "close"}, timeout=10).text
    version, pid = text.split()
    return version, int(pid)


def _wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class _Load:
    """Concurrent clients until stopped: half on fresh connections, half on
    keep-alive sessions, each request sleeping in the app. Every failure is
    recorded."""

    def __init__(self, url: str, clients: int = 8) -> None:
        self.url = url
        self.ok = 0
        self.versions: set[str] = set()
        self.failed: list = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i % 2 == 0,)) for i in range(clients)]

    def _run(self, keep_alive: bool) -> None:
        session = requests.Session() if keep_alive else None
        while not self._stop.is_set():
            try:
                if session is not None:
                    r = session.get(self.url + "/sleep?0.05", timeout=20)
                else:
                    r = requests.get(self.url + "/sleep?0.05", headers={"Connection": "close"},
                                     timeout=20)
                if r.status_code != 200:
                    raise AssertionError(f"status {r.status_code}: {r.text!r}")
                with self._lock:
                    self.ok += 1
                    self.versions.add(r.text.split()[0])
            except Exception as e:  # noqa: BLE001 (every failure counts, whatever it is)
                with self._lock:
                    self.failed.append(repr(e))
        if session is not None:
            session.close()

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_under_load_fails_no_request_and_serves_the_new_code(tmp_path, workers):
    app = write_app(tmp_path, APP)
    with Serve(app, "--workers", str(workers)) as srv:
        old = set(srv.wait_workers(workers))
        with _Load(srv.url) as load:
            _wait_for(lambda: load.ok > 20, what="the load to run")
            app.write_text(APP.replace("VERSION", "RELOADED"))
            os.kill(srv.pid, signal.SIGHUP)
            _wait_for(lambda: "RELOADED" in load.versions, what="the new code")
            ok_at_reload = load.ok
            _wait_for(lambda: load.ok > ok_at_reload + 40, what="more requests after the reload")
        assert load.failed == []
        assert load.versions == {"VERSION", "RELOADED"}
        _wait_for(lambda: not old & set(srv.workers()), what="the old workers to exit")
        assert len(srv.workers()) == workers
        out = srv.output()
        assert f"reloaded: {workers} new workers up" in out
        assert "respawning" not in out      # retired workers are not replaced


def test_old_workers_serve_while_the_new_code_imports(tmp_path):
    """The new code takes 3 s to import: meanwhile the old worker answers
    (with the old version), so a reload costs no waiting."""
    app = write_app(tmp_path, APP)
    with Serve(app) as srv:
        old_pid = srv.wait_workers(1)[0]
        app.write_text(APP.replace("IMPORT_DELAY = 0", "IMPORT_DELAY = 3").replace("VERSION", "RELOADED"))
        os.kill(srv.pid, signal.SIGHUP)
        new_pid = srv.wait_workers(2)   # the new worker is importing
        assert old_pid in new_pid
        t0 = time.monotonic()
        assert _version(srv.url) == ("VERSION", old_pid)
        assert time.monotonic() - t0 < 2.5   # answered while the import still runs
        _wait_for(lambda: _version(srv.url)[0] == "RELOADED", what="the new code")
        _wait_for(lambda: old_pid not in srv.workers(), what="the old worker to exit")


def test_a_request_in_flight_on_an_old_worker_completes_after_the_reload(tmp_path):
    app = write_app(tmp_path, APP)
    with Serve(app) as srv:
        result = []
        t = threading.Thread(target=lambda: result.append(
            requests.get(srv.url + "/sleep?2", timeout=20)))
        t.start()
        time.sleep(0.3)
        app.write_text(APP.replace("VERSION", "RELOADED"))
        os.kill(srv.pid, signal.SIGHUP)
        _wait_for(lambda: _version(srv.url)[0] == "RELOADED", what="the new code")
        t.join(20)
        assert result and result[0].status_code == 200 and result[0].text.startswith("VERSION")


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_with_broken_code_keeps_the_old_workers_serving(tmp_path, workers):
    app = write_app(tmp_path, APP)
    with Serve(app, "--workers", str(workers)) as srv:
        old = set(srv.wait_workers(workers))
        _wait_for(lambda: srv.output().count("serving on") == workers, what="the workers to boot")
        app.write_text(APP + "\nraise RuntimeError('half-written edit')\n")
        with _Load(srv.url, clients=4) as load:
            _wait_for(lambda: load.ok > 10, what="the load to run")
            os.kill(srv.pid, signal.SIGHUP)
            _wait_for(lambda: "reload failed" in srv.output(), what="the failed reload")
            ok_at_failure = load.ok
            _wait_for(lambda: load.ok > ok_at_failure + 20, what="requests after the failure")
        assert load.failed == []
        assert load.versions == {"VERSION"}
        assert srv.proc.poll() is None                       # the master is up
        _wait_for(lambda: set(srv.workers()) == old, what="the failed new workers to go")
        out = srv.output()
        assert "half-written edit" in out                    # the import error is logged
        assert "the old workers keep serving" in out
        # Fixed: the next SIGHUP reloads.
        app.write_text(APP.replace("VERSION", "RELOADED"))
        os.kill(srv.pid, signal.SIGHUP)
        _wait_for(lambda: _version(srv.url)[0] == "RELOADED", what="the fixed code")


def test_a_crashed_worker_is_respawned_after_a_failed_reload_keeps_the_server_up(tmp_path):
    """Broken code on disk after a failed reload: a worker that dies then
    cannot boot, but the master keeps retrying and keeps serving with the
    others instead of stopping."""
    app = write_app(tmp_path, APP)
    with Serve(app, "--workers", "2") as srv:
        a, b = srv.wait_workers(2)
        _wait_for(lambda: srv.output().count("serving on") == 2, what="the workers to boot")
        app.write_text("raise RuntimeError('still broken')\n")
        os.kill(srv.pid, signal.SIGHUP)
        _wait_for(lambda: "reload failed" in srv.output(), what="the failed reload")
        os.kill(a, signal.SIGKILL)
        _wait_for(lambda: "failed to boot (does the app still import?)" in srv.output(),
                  what="the failed respawn")
        assert srv.proc.poll() is None
        assert _version(srv.url) == ("VERSION", b)
        app.write_text(APP.replace("VERSION", "RELOADED"))
        _wait_for(lambda: len(srv.workers()) == 2 and a not in srv.workers(), what="the retry")


def test_reload_restarts_the_workers_when_a_source_file_changes(tmp_path):
    pytest.importorskip("watchfiles")
    app = write_app(tmp_path, APP)
    with Serve(app, "--reload") as srv:
        _wait_for(lambda: "--reload: watching Python files under" in srv.output(), what="the watcher")
        old = _version(srv.url)
        assert old[0] == "VERSION"
        app.write_text(APP.replace("VERSION", "RELOADED"))
        _wait_for(lambda: _version(srv.url)[0] == "RELOADED", what="the edited code")
        # A broken edit: the running worker keeps serving, the error is logged.
        app.write_text(APP.replace("VERSION", "BROKEN") + "\nraise SyntaxError('oops')\n")
        _wait_for(lambda: "reload failed" in srv.output(), what="the failed reload")
        assert _version(srv.url)[0] == "RELOADED"
        assert srv.proc.poll() is None
        out = srv.output()
        assert "a source file changed" in out
        assert "Warning" not in out   # the master does not import watchfiles before patching


def test_reload_without_watchfiles_is_one_line_and_exit_2(tmp_path):
    app = write_app(tmp_path, APP)
    code = ("import sys; sys.modules['watchfiles'] = None\n"   # as if it were not installed
            "from tgreen.serve import main\n"
            f"sys.exit(main([{str(app)!r}, '--reload', '--bind', '127.0.0.1:{free_port()}']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         cwd=ROOT, env=_env(), check=False)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "reload needs the watchfiles package" in out.stderr


def test_the_tornado_example_reloads_its_per_worker_port(tmp_path):
    """examples/wsgi_tornado.py listens on BASE + worker_id from a postfork
    hook; the new worker binds it beside the old one (reuse_port)."""
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "wsgi_tornado.py")
    base = free_port()
    with Serve(example, env={"TORNADO_PORT_BASE": str(base - 1)}) as srv:
        old = srv.wait_workers(1)[0]
        assert requests.get(srv.url + "/", timeout=10).status_code == 200
        os.kill(srv.pid, signal.SIGHUP)
        _wait_for(lambda: "reloaded: 1 new workers up" in srv.output() or "reload failed" in srv.output(),
                  what="the reload")
        assert "reload failed" not in srv.output()
        _wait_for(lambda: old not in srv.workers(), what="the old worker to exit")
        r = requests.get(f"http://127.0.0.1:{base}/tornado", timeout=10)
        assert r.status_code == 200 and f"pid {srv.workers()[0]}" in r.text


def test_reload_waits_for_a_fix_when_the_app_does_not_import_at_start(tmp_path):
    pytest.importorskip("watchfiles")
    app = write_app(tmp_path, "raise ImportError('not written yet')\n")
    with Serve(app, "--reload", wait_ready=False) as srv:
        _wait_for(lambda: "waiting for a source file to change (--reload)" in srv.output(),
                  what="the master to wait")
        _wait_for(lambda: "--reload: watching Python files under" in srv.output(), what="the watcher")
        assert srv.proc.poll() is None
        app.write_text(APP)
        srv.wait_listening(timeout=20)
        assert _version(srv.url)[0] == "VERSION"
