"""tgreen-serve --access-log-format: gunicorn's atoms and JSON lines, written
by real worker processes for requests from real clients."""

from __future__ import annotations

import json
import os
import re
import socket
import textwrap
import time

import requests
from _serve_helpers import Serve, run_cli, write_app

APP = textwrap.dedent("""
    def application(environ, start_response):
        body = b"hello"
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Resp", "out-value")])
        return [body]
""")


def _lines(log, marker: str, n: int = 1, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text() if log.exists() else ""
        found = [ln for ln in text.splitlines() if marker in ln]
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_gunicorn_atoms_format_each_field_of_the_access_log(tmp_path):
    app = write_app(tmp_path, APP)
    log = tmp_path / "access.log"
    fmt = ('%(h)s|%(l)s|%(u)s|%(t)s|%(r)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%(f)s|%(a)s|'
           '%(T)s|%(M)s|%(D)s|%(L)s|%(p)s|%({x-custom}i)s|%({X-Resp}o)s|%({server_protocol}e)s|'
           '%({absent}i)s')
    with Serve(app, "--workers", "2", "--access-log", str(log), "--access-log-format", fmt) as srv:
        r = requests.get(srv.url + "/atoms/here?a=1&b=2", auth=("alice", "secret"),
                         headers={"Referer": "http://ref.example/", "User-Agent": "agent/1.0",
                                  "X-Custom": "in-value"})
        assert r.status_code == 201
        pids = srv.workers()
        line = _lines(log, "/atoms/here")[0]
    f = line.split("|")
    assert f[0] == "127.0.0.1" and f[1] == "-" and f[2] == "alice"
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", f[3]), f[3]
    assert f[4] == "GET /atoms/here?a=1&b=2 HTTP/1.1"
    assert f[5:10] == ["GET", "/atoms/here", "a=1&b=2", "HTTP/1.1", "201"]
    assert f[10] == "5" and f[11] == "5"
    assert f[12] == "http://ref.example/" and f[13] == "agent/1.0"
    seconds, ms, us, dec = int(f[14]), int(f[15]), int(f[16]), float(f[17])
    assert 0 <= seconds <= 30 and ms == us // 1000 and abs(dec - us / 1e6) < 1e-5
    assert re.fullmatch(r"<(\d+)>", f[18]) and int(f[18][1:-1]) in pids
    assert f[19] == "in-value" and f[20] == "out-value" and f[21] == "HTTP/1.1"
    assert f[22] == "-"   # a header the request did not have


def test_json_access_log_writes_one_json_object_per_line(tmp_path):
    app = write_app(tmp_path, APP)
    log = tmp_path / "access.jsonl"
    with Serve(app, "--access-log", str(log), "--access-log-format", "json") as srv:
        for i in range(3):
            requests.post(srv.url + f"/json/{i}?x=y", data=b"body", headers={"User-Agent": 'say "hi"'})
        lines = _lines(log, "/json/", n=3)
    assert len(lines) == 3
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert rec["method"] == "POST" and rec["path"] == f"/json/{i}" and rec["query"] == "x=y"
        assert rec["url"] == f"/json/{i}?x=y"
        assert rec["status"] == 201 and rec["bytes"] == 5 and rec["protocol"] == "HTTP/1.1"
        assert rec["user_agent"] == 'say "hi"' and rec["referer"] is None
        assert rec["remote_addr"] == "127.0.0.1" and rec["duration_ms"] >= 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", rec["time"])
        assert rec["pid"] > 0


def test_client_text_cannot_forge_or_split_an_access_log_line(tmp_path):
    app = write_app(tmp_path, APP)
    log = tmp_path / "access.log"
    with Serve(app, "--access-log", str(log), "--access-log-format", '"%(r)s" "%(a)s"') as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b'GET /forge HTTP/1.1\r\nHost: x\r\nUser-Agent: a" "b\\c\xe9\r\n'
                      b"Connection: close\r\n\r\n")
            while s.recv(4096):
                pass
        line = _lines(log, "/forge")[0]
    assert line == '"GET /forge HTTP/1.1" "a\\" \\"b\\\\c\\xe9"'


def test_a_refused_request_is_logged_with_its_status(tmp_path):
    app = write_app(tmp_path, APP)
    log = tmp_path / "access.log"
    with Serve(app, "--access-log", str(log), "--access-log-format", "json") as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 400")
        lines = _lines(log, '"status": 400')
    assert lines and json.loads(lines[0])["method"] == "-"


def test_an_unknown_atom_is_a_one_line_usage_error():
    p = run_cli("examples/wsgi_hello.py", "--access-log", "-", "--access-log-format", "%(h)s %(zz)s")
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1
    assert "access" in p.stderr and "%(zz)s" in p.stderr
    p = run_cli("examples/wsgi_hello.py", "--access-log-format", "%(h")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


def test_the_default_access_log_format_is_unchanged_by_metrics(tmp_path):
    from _serve_helpers import free_port

    app = write_app(tmp_path, APP)
    log = tmp_path / "access.log"
    args = ["--access-log", str(log)]
    if _have_prometheus():
        args += ["--metrics-bind", f"127.0.0.1:{free_port()}"]
    with Serve(app, *args) as srv:
        requests.get(srv.url + "/plain")
        line = _lines(log, "/plain")[0]
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^\]]+\] "GET /plain HTTP/1\.1" 201 5 \d+\.\d{3}', line), line


def _have_prometheus() -> bool:
    import importlib.util

    return importlib.util.find_spec("prometheus_client") is not None and os.name == "posix"
