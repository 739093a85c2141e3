"""Real command-line clients against the server: curl and wrk."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from _wsgi_helpers import ServerThread, hello_app

pytestmark = pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")

CURL = shutil.which("curl")
WRK = shutil.which("wrk")


def echo_len_app(environ, start_response):
    inp = environ["wsgi.input"]
    n = 0
    while True:
        data = inp.read(65536)
        if not data:
            break
        n += len(data)
    body = f"{environ['SERVER_PROTOCOL']} {environ['REQUEST_METHOD']} {n}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_uploads_with_expect_continue_chunked_and_http10(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    with ServerThread(echo_len_app) as srv:
        def curl(*args):
            out = subprocess.run([CURL, "-sS", "--max-time", "20", *args, srv.url + "/"],
                                 capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            return out.stdout

        # curl sends "Expect: 100-continue" for a body this size and waits for it
        assert curl("--data-binary", f"@{big}", "-v") == f"HTTP/1.1 POST {3 << 20}"
        chunked = curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{big}")
        assert chunked == f"HTTP/1.1 POST {3 << 20}"
        assert curl("--http1.0", "--data-binary", "hello") == "HTTP/1.0 POST 5"
        assert curl("-X", "PUT", "--data-binary", "") == "HTTP/1.1 PUT 0"
        head = subprocess.run([CURL, "-sS", "-I", srv.url + "/"], capture_output=True, text=True).stdout
        assert head.startswith("HTTP/1.1 200 OK")


@pytest.mark.skipif(WRK is None, reason="wrk is not installed")
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "close"])
def test_wrk_load_without_errors(loop_kind, close):
    pytest.importorskip(loop_kind)
    with ServerThread(hello_app, validate=False, loop_kind=loop_kind, cores=50) as srv:
        args = [WRK, "-t2", "-c64", "-d1s", srv.url + "/"]
        if close:
            args[1:1] = ["-H", "Connection: close"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
        requests_done = int(re.search(r"(\d+) requests in", out).group(1))
        assert requests_done > 500, out
        assert "Non-2xx" not in out, out
        errors = re.search(r"Socket errors: (.*)", out)
        assert errors is None, out
        assert srv.call(lambda: srv.server.requests) >= requests_done
