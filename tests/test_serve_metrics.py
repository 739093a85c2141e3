"""tgreen-serve --metrics-bind: /metrics (Prometheus text, read with
prometheus_client's own parser), /stats (JSON) across real worker processes,
and the standalone WSGIServer's metrics listener."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import threading
import time

import pytest
import requests
from _serve_helpers import Serve, free_port, run_cli, write_app

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

APP = textwrap.dedent("""
    import os
    import time
    import tgreen

    def application(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/missing":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no"]
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/sleep":
            tgreen.sleep(float(environ["QUERY_STRING"] or "0.2"))
        if path == "/spin":
            # Holds the loop whatever is patched: a CPU loop.
            end = time.monotonic() + float(environ["QUERY_STRING"] or "1.3")
            while time.monotonic() < end:
                pass
        body = f"{tgreen.worker_id()} {os.getpid()}".encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
""")


def _metrics(url: str) -> dict:
    """{(name, labels...): value} of every sample on /metrics."""
    text = requests.get(url + "/metrics", timeout=10).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def _requests_total(m: dict) -> float:
    return sum(v for k, v in m.items() if k[0] == "tgreen_requests_total")


def _wait_for(fn, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class _Metrics:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def wait(self, timeout: float = 15) -> None:
        def up():
            try:
                return requests.get(self.url + "/stats", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False
        _wait_for(up, timeout, "the metrics listener")

    def stats(self) -> dict:
        return requests.get(self.url + "/stats", timeout=10).json()


def _serve(tmp_path, *args: str):
    app = write_app(tmp_path, APP)
    mport = free_port()
    srv = Serve(app, "--metrics-bind", f"127.0.0.1:{mport}", *args)
    return srv, _Metrics(mport)


def test_metrics_add_up_exactly_over_two_workers_and_a_crashed_one(tmp_path):
    srv, mx = _serve(tmp_path, "--workers", "2")
    with srv:
        mx.wait()
        _wait_for(lambda: len(mx.stats()["workers"]) == 2, what="two workers")
        base = _requests_total(_metrics(mx.url))   # the readiness probes
        made = {("GET", "2xx"): 0, ("GET", "4xx"): 0, ("GET", "5xx"): 0, ("POST", "2xx"): 0,
                ("other", "2xx"): 0}

        def burst(n: int) -> set:
            """n requests on fresh connections, so both workers take some."""
            pids = set()
            for i in range(n):
                kind = i % 5
                if kind == 0:
                    r = requests.get(srv.url + "/missing")
                    made["GET", "4xx"] += 1
                elif kind == 1:
                    r = requests.get(srv.url + "/boom")
                    made["GET", "5xx"] += 1
                elif kind == 2:
                    r = requests.post(srv.url + "/", data=b"x" * 100)
                    made["POST", "2xx"] += 1
                    pids.add(int(r.text.split()[1]))
                elif kind == 3:
                    r = requests.request("PROPFIND", srv.url + "/")
                    made["other", "2xx"] += 1
                else:
                    r = requests.get(srv.url + "/")
                    made["GET", "2xx"] += 1
                    pids.add(int(r.text.split()[1]))
            return pids

        pids = set()
        for _ in range(20):        # until both workers served some (almost always one round)
            pids |= burst(50)
            if len(pids) >= 2:
                break
        assert len(pids) >= 2
        # A worker is killed: its counts must survive in the totals.
        victim = srv.workers()[0]
        os.kill(victim, signal.SIGKILL)
        srv.wait_workers(2, exclude=(victim,))
        _wait_for(lambda: mx.stats()["worker_restarts_total"] == 1, what="the restart counted")
        burst(25)

        want = sum(made.values())
        _wait_for(lambda: _requests_total(_metrics(mx.url)) - base == want, what=f"{want} requests")
        time.sleep(0.3)
        m = _metrics(mx.url)      # and no more than that
        assert _requests_total(m) - base == want
        for (method, cls), n in made.items():
            if (method, cls) != ("GET", "2xx"):  # the readiness probes are GET 2xx too
                assert m[("tgreen_requests_total", ("method", method), ("status", cls))] == n
        assert m[("tgreen_requests_total", ("method", "GET"), ("status", "2xx"))] - base == \
            made["GET", "2xx"]
        assert m[("tgreen_request_duration_seconds_count",)] == _requests_total(m)
        assert m[("tgreen_request_duration_seconds_bucket", ("le", "+Inf"))] == _requests_total(m)
        assert m[("tgreen_request_duration_seconds_sum",)] > 0
        assert m[("tgreen_worker_restarts_total", ("reason", "crash"))] == 1
        assert m[("tgreen_workers",)] == 2
        st = mx.stats()
        assert st["requests_total"] == _requests_total(m)
        assert sorted(w["worker"] for w in st["workers"]) == [1, 2]
        assert victim not in [w["pid"] for w in st["workers"]]
        # The status page and /metrics themselves are never counted.
        for _ in range(5):
            requests.get(mx.url + "/")
            requests.get(mx.url + "/metrics")
        time.sleep(0.3)
        assert _requests_total(_metrics(mx.url)) - base == want


def test_stats_show_cores_busy_and_open_connections_per_worker(tmp_path):
    srv, mx = _serve(tmp_path, "--workers", "2", "--cores", "7")
    with srv:
        mx.wait()
        _wait_for(lambda: len(mx.stats()["workers"]) == 2, what="two workers")
        threads = [threading.Thread(target=requests.get, args=(srv.url + "/sleep?3",)) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            st = _wait_for(lambda: (s := mx.stats()) and sum(w["cores_busy"] for w in s["workers"]) == 3
                           and s, what="3 busy cores")
            assert all(w["cores"] == 7 for w in st["workers"])
            assert sum(w["connections"] for w in st["workers"]) >= 3
            m = _metrics(mx.url)
            busy = [v for k, v in m.items() if k[0] == "tgreen_cores_busy"]
            assert sum(busy) == 3 and len(busy) == 2
            assert all(v >= 0 for k, v in m.items() if k[0] == "tgreen_loop_lag_seconds")
        finally:
            for t in threads:
                t.join(20)
        st = _wait_for(lambda: (s := mx.stats()) and sum(w["cores_busy"] for w in s["workers"]) == 0
                       and s, what="cores free again")
        # The three 3 s requests are in the buckets above 2.5 s.
        assert st["latency"]["buckets"][11] == 2.5
        assert sum(st["latency"]["counts"][12:]) == 3, st["latency"]


def test_a_loop_held_by_a_cpu_loop_counts_as_a_blocked_loop_event(tmp_path):
    srv, mx = _serve(tmp_path, "--workers", "1")
    with srv:
        mx.wait()
        assert mx.stats()["loop_blocked_total"] == 0
        assert requests.get(srv.url + "/spin?1.5", timeout=20).status_code == 200
        _wait_for(lambda: mx.stats()["loop_blocked_total"] >= 1, what="a blocked-loop event")
        assert _metrics(mx.url)[("tgreen_loop_blocked_total",)] >= 1


def test_the_blocking_detector_reports_are_the_blocked_loop_events_when_it_is_on(tmp_path):
    srv, mx = _serve(tmp_path, "--workers", "1", "--block-warning-ms", "200")
    with srv:
        mx.wait()
        assert requests.get(srv.url + "/spin?0.6", timeout=20).status_code == 200
        _wait_for(lambda: mx.stats()["loop_blocked_total"] >= 1, what="a blocked-loop event")
        _wait_for(lambda: "has not turned" in srv.output(), what="the detector's report")


def test_metrics_answer_openmetrics_when_asked(tmp_path):
    srv, mx = _serve(tmp_path)
    with srv:
        mx.wait()
        r = requests.get(mx.url + "/metrics",
                         headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        assert r.text.rstrip().endswith("# EOF")
        r = requests.get(mx.url + "/metrics")
        assert r.headers["Content-Type"].startswith("text/plain")
        assert requests.get(mx.url + "/nothing-here").status_code == 404
        assert requests.post(mx.url + "/metrics").status_code == 405


def test_metrics_bind_without_prometheus_client_is_a_one_line_usage_error(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['prometheus_client'] = None\n")
    app = write_app(tmp_path, APP)
    env = dict(os.environ, PYTHONPATH=f"{hide}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    import subprocess
    import sys

    from _serve_helpers import ROOT
    env["PYTHONPATH"] += os.pathsep + str(ROOT)
    p = subprocess.run([sys.executable, "-m", "tgreen.serve", str(app), "--metrics-bind", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=30, cwd=ROOT, env=env, check=False)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "--metrics-bind" in lines[0] and "prometheus_client" in lines[0], p.stderr


def test_a_bad_metrics_bind_is_a_usage_error():
    p = run_cli("examples/wsgi_hello.py", "--metrics-bind", "127.0.0.1:99999")
    assert p.returncode == 2
    assert "metrics" in p.stderr and "port" in p.stderr


def test_a_metrics_address_in_use_stops_the_master_with_one_line(tmp_path):
    app = write_app(tmp_path, APP)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = run_cli(str(app), "--bind", f"127.0.0.1:{free_port()}", "--metrics-bind", f"127.0.0.1:{port}")
    assert p.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (--metrics-bind)" in p.stderr


def test_a_standalone_server_serves_its_own_metrics():
    from _wsgi_helpers import ServerThread, hello_app

    with ServerThread(hello_app, metrics_bind="127.0.0.1:0") as srv:
        host, port = srv.server.metrics_server.address[:2]
        murl = f"http://{host}:{port}"
        for _ in range(7):
            assert requests.get(srv.url + "/").status_code == 200
        _wait_for(lambda: requests.get(murl + "/stats").json()["requests_total"] == 7, what="7 requests")
        m = _metrics(murl)
        assert m[("tgreen_requests_total", ("method", "GET"), ("status", "2xx"))] == 7
        assert m[("tgreen_workers",)] == 1


# -- the status page in a real browser ---------------------------------------------------

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
                 if os.path.exists(p)), None)


def _chromium_dom(url: str, tmp_path, budget_ms: int = 8000) -> str:
    """The page's DOM after ``budget_ms`` of virtual time in headless Chromium
    (its timers run; its fetches to the server are real)."""
    import subprocess

    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--window-size=1200,900",
           f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
@pytest.mark.timeout(180)
def test_the_status_page_draws_its_charts_with_live_data_in_chromium(tmp_path):
    import re

    srv, mx = _serve(tmp_path, "--workers", "2")
    with srv:
        mx.wait()
        _wait_for(lambda: len(mx.stats()["workers"]) == 2, what="two workers")
        stop = threading.Event()

        def load(path: str) -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    s.get(srv.url + path, timeout=10)

        threads = [threading.Thread(target=load, args=(p,), daemon=True)
                   for p in ("/", "/", "/sleep?0.05", "/sleep?0.05", "/sleep?0.05")]
        for t in threads:
            t.start()
        try:
            _wait_for(lambda: sum(w["cores_busy"] for w in mx.stats()["workers"]) > 0, what="busy cores")
            dom = _chromium_dom(mx.url + "/?interval=250", tmp_path)
        finally:
            stop.set()
            for t in threads:
                t.join(20)

    def attrs(elem_id: str) -> dict:
        m = re.search(r'<canvas id="' + elem_id + r'"([^>]*)>', dom)
        assert m, f"no canvas {elem_id} in:\n{dom[:3000]}"
        return {k: int(v) for k, v in re.findall(r'data-(\w+)="(-?\d+)"', m.group(1))}

    polls = int(re.search(r'<body[^>]*data-polls="(\d+)"', dom).group(1))
    assert polls >= 5, dom[:3000]
    rps, lat, busy, lag = (attrs(i) for i in ("ch-rps", "ch-lat", "ch-busy", "ch-lag"))
    # Every chart drew lines (pixels that are neither background nor grid) from several polls.
    assert rps["series"] == 1 and rps["points"] >= 4 and rps["ink"] > 0, rps
    assert lat["series"] == 3 and lat["points"] >= 3 and lat["ink"] > 0, lat
    assert busy["series"] == 2 and busy["points"] >= 8 and busy["ink"] > 0, busy    # one line per worker
    assert lag["series"] == 2 and lag["points"] >= 8 and lag["ink"] > 0, lag
    # The cards and the worker table show the server's numbers.
    total = re.search(r'id="c-total">([\d,]+)<', dom)
    assert total and int(total.group(1).replace(",", "")) > 0
    assert re.search(r'id="c-workers">2<', dom)
    assert len(re.findall(r"<tr><td>\d+</td><td>\d+</td>", dom)) == 2
    assert not re.search(r'id="status" class="error"', dom)


def test_metrics_on_a_unix_socket_and_the_socket_file_is_removed_at_stop(tmp_path):
    import http.client
    import json

    app = write_app(tmp_path, APP)
    path = tmp_path / "metrics.sock"

    def get(p: str) -> tuple[int, bytes]:
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        c = http.client.HTTPConnection("localhost")
        c.sock = s
        c.request("GET", p)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body

    with Serve(app, "--metrics-bind", f"unix:{path}") as srv:
        _wait_for(path.exists, what="the metrics socket")
        base = json.loads(get("/stats")[1])["requests_total"]
        for _ in range(3):
            requests.get(srv.url + "/")
        _wait_for(lambda: json.loads(get("/stats")[1])["requests_total"] == base + 3, what="3 requests")
        status, body = get("/metrics")
        assert status == 200 and b"tgreen_requests_total" in body
    assert not path.exists()


def test_workers_recycled_by_max_requests_keep_their_counts_and_count_as_exit_restarts(tmp_path):
    srv, mx = _serve(tmp_path, "--workers", "1", "--max-requests", "5")
    with srv:
        mx.wait()
        base = mx.stats()["requests_total"]
        first = srv.workers()
        for _ in range(12):
            requests.get(srv.url + "/", headers={"Connection": "close"})
        _wait_for(lambda: mx.stats()["requests_total"] == base + 12, what="12 requests")
        st = _wait_for(lambda: (s := mx.stats())["worker_restarts"]["exit"] >= 2 and s,
                       what="two recycled workers")
        assert st["worker_restarts"]["crash"] == 0
        assert first[0] not in [w["pid"] for w in st["workers"]]
        time.sleep(0.3)
        assert mx.stats()["requests_total"] == base + 12


@pytest.mark.timeout(120)
def test_counts_stay_exact_across_a_sighup_reload_under_load(tmp_path):
    srv, mx = _serve(tmp_path, "--workers", "2")
    with srv:
        mx.wait()
        _wait_for(lambda: len(mx.stats()["workers"]) == 2, what="two workers")
        base = mx.stats()["requests_total"]
        old = set(srv.workers())
        done, stop = [0], threading.Event()

        def load() -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    assert s.get(srv.url + "/", timeout=10).status_code == 200
                    done[0] += 1

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            _wait_for(lambda: done[0] > 50, what="load")
            os.kill(srv.pid, signal.SIGHUP)
            _wait_for(lambda: (s := mx.stats())["worker_restarts"]["reload"] == 2
                      and not old & {w["pid"] for w in s["workers"]}, timeout=30,
                      what="the reload to finish")
            n = done[0]
            _wait_for(lambda: done[0] > n + 50, what="load on the new workers")
        finally:
            stop.set()
            for t in threads:
                t.join(20)
        _wait_for(lambda: mx.stats()["requests_total"] - base == done[0], what=f"{done[0]} requests")
        st = mx.stats()
        assert st["worker_restarts_total"] == 2 and len(st["workers"]) == 2
