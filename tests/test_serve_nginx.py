"""tgreen-serve behind nginx (Debian's nginx package), the way
examples/nginx.conf sets it up: forwarded headers, keep-alive to the
upstream, chunked uploads streamed, responses streamed."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import time

import pytest
import requests
from _serve_helpers import Serve, free_port, write_app

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")

APP = textwrap.dedent("""
    import json
    import tgreen

    def application(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            def gen():
                for i in range(5):
                    yield b"%d\\n" % i
                    tgreen.sleep(0.2)
            return gen()
        inp = environ["wsgi.input"]
        n = 0
        while True:
            data = inp.read(65536)
            if not data:
                break
            n += len(data)
        body = json.dumps({
            "remote_addr": environ["REMOTE_ADDR"],
            "remote_port": environ["REMOTE_PORT"],
            "scheme": environ["wsgi.url_scheme"],
            "host": environ.get("HTTP_HOST"),
            "protocol": environ["SERVER_PROTOCOL"],
            "te": environ.get("HTTP_TRANSFER_ENCODING"),
            "body": n,
        }).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
""")

CONF = textwrap.dedent("""
    worker_processes 1;
    pid {dir}/nginx.pid;
    error_log {dir}/error.log warn;
    events {{ worker_connections 1024; }}
    http {{
        access_log off;
        client_body_temp_path {dir}/body;
        proxy_temp_path {dir}/proxy;
        fastcgi_temp_path {dir}/fastcgi;
        uwsgi_temp_path {dir}/uwsgi;
        scgi_temp_path {dir}/scgi;
        upstream tgreen {{
            server 127.0.0.1:{upstream};
            keepalive 16;
        }}
        server {{
            listen 127.0.0.1:{port};
            client_max_body_size 100m;
            location / {{
                proxy_pass http://tgreen;
                proxy_http_version 1.1;
                proxy_set_header Connection "";
                proxy_set_header Host $host;
                proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                proxy_set_header X-Forwarded-Proto $scheme;
                proxy_buffering off;
                proxy_request_buffering off;
            }}
            location /tls-terminated/ {{
                proxy_pass http://tgreen/;
                proxy_http_version 1.1;
                proxy_set_header Connection "";
                proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                proxy_set_header X-Forwarded-Proto https;
            }}
        }}
    }}
""")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nginx")
    app = write_app(tmp, APP)
    with Serve(app, "--workers", "2") as srv:
        port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(CONF.format(dir=tmp, upstream=srv.port, port=port))
        proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log"),
                                 "-g", "daemon off;"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(url + "/ping", timeout=2)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"nginx did not start: {out}{(tmp / 'error.log').read_text()}")
                time.sleep(0.1)
        try:
            yield url, srv
        finally:
            proc.terminate()
            proc.wait(10)


def test_forwarded_for_and_proto_reach_the_app(stack):
    url, _ = stack
    r = requests.get(url + "/who", headers={"X-Forwarded-For": "198.51.100.7"})
    env = r.json()
    # nginx appended the address it saw; the last entry is the trusted one
    assert env["remote_addr"] == "127.0.0.1" and env["scheme"] == "http"
    env = requests.get(url + "/tls-terminated/who").json()
    assert env["scheme"] == "https"


def test_keep_alive_to_the_upstream_is_reused(stack):
    url, _ = stack
    with requests.Session() as s:
        ports = {s.get(url + "/k").json()["remote_port"] for _ in range(30)}
    assert len(ports) < 10  # nginx reuses its upstream connections
    assert requests.get(url + "/k").json()["protocol"] == "HTTP/1.1"


def test_chunked_upload_is_streamed_through(stack):
    url, _ = stack

    def gen():
        for _ in range(20):
            yield b"u" * 100_000

    r = requests.post(url + "/upload", data=gen())
    assert r.json()["body"] == 2_000_000


def test_streamed_response_arrives_in_pieces(stack):
    url, _ = stack
    with requests.get(url + "/stream", stream=True) as r:
        t0 = time.monotonic()
        pieces = r.iter_content(None)
        first = next(pieces)
        assert first.startswith(b"0") and time.monotonic() - t0 < 0.5
        rest = b"".join(pieces)
    assert (first + rest) == b"0\n1\n2\n3\n4\n"


def test_many_concurrent_requests_through_nginx(stack):
    import concurrent.futures

    url, _ = stack
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        codes = list(ex.map(lambda i: requests.post(f"{url}/c{i}", data=b"x" * i).json()["body"],
                            range(200)))
    assert codes == list(range(200))
