"""tgreen-serve patches the standard library by default (like gunicorn's gevent
worker), so a plain blocking app that never imports tgreen serves requests
concurrently; --no-patch serves it one request at a time and says so once."""

from __future__ import annotations

import concurrent.futures
import http.server
import textwrap
import threading
import time

import requests
from _serve_helpers import Serve, write_app

# Never imports tgreen: time.sleep and urllib, as ordinary app code does.
# Each request reports how many requests of this worker were in flight
# when it started and when it ended: evidence of overlap that does not
# depend on how fast the machine is.
PLAIN_APP = textwrap.dedent("""
    import os
    import time
    import urllib.request

    in_flight = 0
    peak = 0

    def application(environ, start_response):
        global in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            time.sleep(1)
            body = urllib.request.urlopen(os.environ["UPSTREAM"], timeout=20).read()
            peak = max(peak, in_flight)
        finally:
            in_flight -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body + b" peak=%d" % peak]
""")


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"upstream"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _upstream() -> http.server.ThreadingHTTPServer:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _five_at_once(url: str) -> tuple[list[str], float]:
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(5) as ex:
        bodies = list(ex.map(lambda _: requests.get(url, timeout=30).text, range(5)))
    return bodies, time.monotonic() - t0


def test_a_plain_blocking_app_serves_requests_concurrently_by_default(tmp_path):
    app = write_app(tmp_path, PLAIN_APP)
    up = _upstream()
    try:
        env = {"UPSTREAM": f"http://127.0.0.1:{up.server_address[1]}/"}
        with Serve(app, env=env) as srv:
            bodies, took = _five_at_once(srv.url)
    finally:
        up.shutdown()
    assert all(b.startswith("upstream peak=") for b in bodies), bodies
    # The last request to finish saw all five inside the app at once.
    assert max(int(b.rsplit("=", 1)[1]) for b in bodies) == 5, bodies
    assert took < 4.0  # sanity: one at a time is 5 s and more


def test_no_patch_serves_one_request_at_a_time_and_reports_the_blocked_loop_once(tmp_path):
    app = write_app(tmp_path, PLAIN_APP)
    up = _upstream()
    try:
        env = {"UPSTREAM": f"http://127.0.0.1:{up.server_address[1]}/"}
        with Serve(app, "--no-patch", env=env) as srv:
            bodies = _five_at_once(srv.url)[0]
            deadline = time.monotonic() + 5
            while "tgreen.monitor" not in srv.output() and time.monotonic() < deadline:
                time.sleep(0.05)
            out = srv.output()
    finally:
        up.shutdown()
    assert [int(b.rsplit("=", 1)[1]) for b in bodies] == [1] * 5, bodies
    # Five requests each blocked the loop for a second: one report, with
    # the app's own frame in its stack and what to do about it.
    assert out.count("has not turned for") == 1, out
    report = out[out.index("has not turned for"):]
    assert "--no-patch" in report and f'File "{app}", line' in report, out


def test_no_patch_with_the_blocking_detector_reports_every_block(tmp_path):
    app = write_app(tmp_path, textwrap.dedent("""
        import time
        def application(environ, start_response):
            time.sleep(0.3)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"slept"]
    """))
    with Serve(app, "--no-patch", "--block-warning-ms", "100") as srv:
        for _ in range(2):
            assert requests.get(srv.url, timeout=10).text == "slept"
            # Idle between the blocks, as a server is between requests: the
            # watchdog samples every 50 ms and must see two separate episodes
            # (back to back on a loaded machine it can miss the short gap).
            time.sleep(0.3)
        deadline = time.monotonic() + 5
        while srv.output().count("has not turned for") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        out = srv.output()
    assert out.count("has not turned for") >= 2, out
    assert "--no-patch" not in out.split("has not turned for", 1)[1].split("\n", 1)[0]


def test_patched_by_default_the_app_sees_patched_modules_and_no_patch_leaves_them(tmp_path):
    app = write_app(tmp_path, textwrap.dedent("""
        import socket
        import time
        def application(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [f"{socket.socket.__module__} {time.sleep.__module__}".encode()]
    """))
    with Serve(app) as srv:
        patched = requests.get(srv.url, timeout=10).text
    with Serve(app, "--no-patch") as srv:
        plain = requests.get(srv.url, timeout=10).text
    assert patched.split()[0].startswith("tgreen"), patched
    assert plain == "socket time", plain
