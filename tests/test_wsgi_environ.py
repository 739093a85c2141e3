"""The PEP 3333 environ: keys, decoding, proxies, listeners."""

from __future__ import annotations

import json
import os
import socket
import tempfile

import pytest
import requests
from _wsgi_helpers import ServerThread, read_response

pytestmark = pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")

KEYS = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
        "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "CONTENT_TYPE", "CONTENT_LENGTH",
        "RAW_URI", "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
        "wsgi.input_terminated")


def env_app(environ, start_response):
    out = {k: environ.get(k) for k in KEYS}
    out.update({k: v for k, v in environ.items() if k.startswith("HTTP_")})
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


def get_env(srv, raw: bytes) -> dict:
    s = srv.connect()
    s.sendall(raw)
    return json.loads(read_response(s).body)


def test_basic_keys():
    with ServerThread(env_app) as srv:
        env = get_env(srv, b"POST /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\n"
                           b"Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n")
        assert env["REQUEST_METHOD"] == "POST"
        assert env["PATH_INFO"] == "/a/b" and env["QUERY_STRING"] == "x=1&y=%20"
        assert env["SCRIPT_NAME"] == ""
        assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(srv.port)
        assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"].isdigit()
        assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "0"
        assert env["HTTP_HOST"] == "example.com:8080"
        assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
        assert env["wsgi.url_scheme"] == "http"
        assert env["wsgi.input_terminated"] is True
        assert env["wsgi.run_once"] is False


def test_path_info_is_percent_decoded_as_latin1():
    with ServerThread(env_app) as srv:
        env = get_env(srv, b"GET /caf%C3%A9/%2F?q=%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert env["PATH_INFO"] == "/caf\u00c3\u00a9//"  # bytes as latin-1 (PEP 3333)
        assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café//"
        assert env["QUERY_STRING"] == "q=%C3%A9"
        assert env["RAW_URI"] == "/caf%C3%A9/%2F?q=%C3%A9"


def test_repeated_headers_are_joined():
    with ServerThread(env_app) as srv:
        env = get_env(srv, b"GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\nAccept: b\r\n"
                           b"Cookie: c=1\r\nCookie: d=2\r\n\r\n")
        assert env["HTTP_ACCEPT"] == "a,b"
        assert env["HTTP_COOKIE"] == "c=1; d=2"


def test_underscore_headers_are_dropped_by_default_or_refused():
    with ServerThread(env_app) as srv:
        env = get_env(srv, b"GET / HTTP/1.1\r\nHost: x\r\nX-User: real\r\nX_User: spoof\r\n\r\n")
        assert env["HTTP_X_USER"] == "real"
    with ServerThread(env_app, underscore_headers="refuse") as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX_User: spoof\r\n\r\n")
        assert read_response(s).status == 400


def test_root_path_becomes_script_name():
    with ServerThread(env_app, root_path="/app") as srv:
        env = get_env(srv, b"GET /app/page HTTP/1.1\r\nHost: x\r\n\r\n")
        assert env["SCRIPT_NAME"] == "/app" and env["PATH_INFO"] == "/page"
        env = get_env(srv, b"GET /application HTTP/1.1\r\nHost: x\r\n\r\n")
        assert env["PATH_INFO"] == "/application"


def test_forwarded_headers_from_a_trusted_proxy():
    with ServerThread(env_app) as srv:  # 127.0.0.1 is trusted by default
        env = get_env(srv, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.7\r\n"
                           b"X-Forwarded-Proto: https\r\n\r\n")
        assert env["REMOTE_ADDR"] == "203.0.113.7"
        assert env["wsgi.url_scheme"] == "https"


def test_forwarded_headers_from_an_untrusted_peer_are_ignored():
    with ServerThread(env_app, forwarded_allow_ips="10.0.0.0/8") as srv:
        env = get_env(srv, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n"
                           b"X-Forwarded-Proto: https\r\n\r\n")
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert env["wsgi.url_scheme"] == "http"


def test_conflicting_scheme_headers_are_a_400():
    with ServerThread(env_app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n")
        assert read_response(s).status == 400


def test_unix_socket_listener():
    path = os.path.join(tempfile.mkdtemp(), "s.sock")
    with ServerThread(env_app, listener=f"unix:{path}"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(b"GET /u HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n")
        env = json.loads(read_response(s).body)
        assert env["PATH_INFO"] == "/u"
        assert env["SERVER_NAME"] == path
        assert env["REMOTE_ADDR"] == "198.51.100.1"  # unix peers are trusted proxies


def test_ipv6_listener():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with ServerThread(env_app, listener="[::1]:0") as srv:
        r = requests.get(f"http://[::1]:{srv.port}/six")
        assert r.json()["PATH_INFO"] == "/six"
        assert r.json()["REMOTE_ADDR"] == "::1"


def test_several_listeners():
    with ServerThread(env_app, listener=[("127.0.0.1", 0), ("127.0.0.1", 0)]) as srv:
        ports = [a[1] for a in srv.server.addresses]
        assert len(set(ports)) == 2
        for port in ports:
            r = requests.get(f"http://127.0.0.1:{port}/")
            assert r.json()["SERVER_PORT"] == str(port)
