"""The WSGI examples run under tgreen-serve as their docstrings say."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from _serve_helpers import ROOT, Serve, free_port

EXAMPLES = ROOT / "examples"


def test_wsgi_hello():
    with Serve(EXAMPLES / "wsgi_hello.py", "--workers", "2") as srv:
        assert requests.get(srv.url).text == "Hello, World!\n"


def test_wsgi_hello_without_the_cli():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "wsgi_hello.py"), str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert "serving on" in proc.stdout.readline()
        assert requests.get(f"http://127.0.0.1:{port}/").text == "Hello, World!\n"
    finally:
        proc.terminate()
        proc.wait(10)


def test_wsgi_streaming():
    with Serve(EXAMPLES / "wsgi_streaming.py") as srv:
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            texts = list(ex.map(lambda _: requests.get(srv.url + "/count?5").text, range(10)))
        assert texts == ["0\n1\n2\n3\n4\n"] * 10
        assert time.monotonic() - t0 < 2.5  # ten 0.5 s streams side by side
        assert len(requests.get(srv.url + "/big").content) == 65536


def test_wsgi_flask_requests():
    pytest.importorskip("flask")
    with Serve(EXAMPLES / "wsgi_flask_requests.py", "--cores", "200") as srv:
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(30) as ex:
            results = list(ex.map(lambda _: requests.get(srv.url + "/fetch").json(), range(30)))
        assert all(r["status"] == 200 and r["body"] == {"upstream": True} for r in results)
        assert time.monotonic() - t0 < 3  # 30 x 0.2 s upstream calls, concurrently


def test_nginx_conf_is_valid():
    import shutil

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed")
    out = subprocess.run([nginx, "-t", "-c", str(EXAMPLES / "nginx.conf"), "-e", "/dev/null",
                          "-g", "pid /dev/null;"], capture_output=True, text=True)
    assert "syntax is ok" in out.stderr, out.stderr
