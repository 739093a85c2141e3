"""HTTP/1.1 on the wire: the request corpus, hostile input, pipelining,
limits and slow clients.

The corpus (../shared/data/http-corpus, from gunicorn's parser tests) is
sent to an echo app in one write and in small pieces. Valid requests must
reach the app exactly as parsed by the corpus; invalid ones must get a 4xx
(505 for an HTTP version we do not speak) or a closed connection, and never
reach the app.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import time
from pathlib import Path

import pytest
from _wsgi_helpers import ResponseReader, ServerThread, hello_app, is_closed, read_response, recv_all

pytestmark = pytest.mark.filterwarnings(
    "error::wsgiref.validate.WSGIWarning",
    # wsgiref.validate predates RFC 9110's CONNECT; the corpus has two.
    "ignore:Unknown REQUEST_METHOD. 'CONNECT':wsgiref.validate.WSGIWarning")

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "http-corpus"
if not CORPUS.is_dir():
    CORPUS = Path("/work/shared/data/http-corpus")

# gunicorn settings -> ours (README: translate where an option exists).
_OPTION_MAP = {
    "limit_request_line": "limit_request_line",
    "limit_request_fields": "limit_request_fields",
    "limit_request_field_size": "limit_request_field_size",
    "forwarded_allow_ips": "forwarded_allow_ips",
}
_HEADER_MAP = {"refuse": "refuse", "dangerous": "allow", "drop": "drop"}

# Cases we do not run, and why.
SKIP = {
    # gunicorn-only features
    "pp_": "PROXY protocol is not supported (terminate it in the proxy)",
    "028": "strip_header_spaces is a gunicorn-only leniency ('Name : value' is refused)",
    "031compat": "casefolding/unconventional methods are gunicorn-only leniencies",
    "compat_obs_fold": "obsolete line folding is refused (RFC 9112 5.2 allows that)",
    "099": "corpus file is truncated: Content-Length 17914, 9106 bytes present",
    "040_compat": "underscore_headers=allow maps Content_Length onto CONTENT_LENGTH by design "
                  "(why it is not the default); wsgiref.validate refuses the '-1E23' it gets",
}
# Valid in gunicorn's corpus, refused here on purpose (llhttp is stricter).
REFUSED_ON_PURPOSE = {
    "009": "Content-Length with Transfer-Encoding (even identity) is refused: smuggling risk",
    "013": "chunk extensions without '=value' are refused by llhttp",
    "027": "raw non-ASCII bytes in the request-target are refused by llhttp",
    "031": "methods llhttp does not know ('-BLARGH') are refused",
}


def _skip_reason(name: str, meta: dict) -> str | None:
    for prefix, why in SKIP.items():
        if name.startswith(prefix):
            return why
    cfg = meta.get("gunicorn_config", {})
    if "proxy_protocol" in cfg:
        return SKIP["pp_"]
    return None


def _cases(kind: str) -> list:
    out = []
    for http_file in sorted((CORPUS / kind).glob("*.http")):
        name = http_file.stem
        meta = json.loads(http_file.with_suffix(".json").read_text())
        out.append(pytest.param(name, http_file.read_bytes(), meta, id=name))
    return out


def _options(meta: dict) -> dict:
    opts = {}
    for k, v in meta.get("gunicorn_config", {}).items():
        if k in _OPTION_MAP:
            if k.startswith("limit_") and v == 0 and k == "limit_request_field_size":
                continue  # gunicorn: 0 means its default; so is ours
            opts[_OPTION_MAP[k]] = v
        elif k == "header_map":
            opts["underscore_headers"] = _HEADER_MAP[v]
    return opts


calls: list = []


def echo_app(environ, start_response):
    calls.append(environ["RAW_URI"])
    inp = environ["wsgi.input"]
    body = b""
    while True:
        data = inp.read(65536)
        if not data:
            break
        body += data
    out = {
        "method": environ["REQUEST_METHOD"],
        "target": environ["RAW_URI"],
        "protocol": environ["SERVER_PROTOCOL"],
        "env": {k: v for k, v in environ.items()
                if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")},
        "body": base64.b64encode(body).decode(),
    }
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _expected_env(req: dict, underscore: str) -> dict:
    env: dict = {}
    for name, value in req["headers"]:
        if "_" in name and underscore == "drop":
            continue
        key = name.replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        if key in env and key.startswith("HTTP_"):
            env[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            env[key] = value
    return env


def _body(req: dict) -> bytes:
    b = req.get("body") or {}
    if "base64" in b:
        return base64.b64decode(b["base64"])
    return b.get("text", "").encode("latin-1")


def _send(sock: socket.socket, raw: bytes, split: bool) -> None:
    if not split:
        sock.sendall(raw)
        return
    rnd = random.Random(len(raw))
    i = 0
    while i < len(raw):
        n = rnd.randint(1, 9)
        sock.sendall(raw[i:i + n])
        i += n
        if rnd.random() < 0.3:
            time.sleep(0.0005)


@pytest.fixture(scope="module")
def servers():
    """One server per distinct option set, shared by the corpus tests."""
    made: dict = {}

    def get(opts: dict) -> ServerThread:
        key = tuple(sorted(opts.items()))
        if key not in made:
            made[key] = ServerThread(echo_app, header_timeout=2, **opts).__enter__()
        return made[key]

    yield get
    for srv in made.values():
        srv.close()


@pytest.mark.parametrize("split", [False, True], ids=["whole", "pieces"])
@pytest.mark.parametrize("name, raw, meta", _cases("valid"))
def test_valid_corpus_request_reaches_the_app_as_parsed(servers, name, raw, meta, split):
    why = _skip_reason(name, meta)
    if why:
        pytest.skip(why)
    opts = _options(meta)
    srv = servers(opts)
    s = srv.connect()
    try:
        _send(s, raw, split)
    except OSError:
        pass  # the server closed after a "Connection: close" request: fine
    if name in REFUSED_ON_PURPOSE:
        data = recv_all(s, timeout=3)
        assert data.startswith(b"HTTP/1.1 400") or data == b"", REFUSED_ON_PURPOSE[name]
        return
    reader = ResponseReader(s)
    underscore = opts.get("underscore_headers", "drop")
    for i, req in enumerate(meta["requests"]):
        if i == len(meta["requests"]) - 1:
            try:
                s.shutdown(socket.SHUT_WR)  # a half-closed client still gets its answers
            except OSError:
                pass
        method = req["method"]
        resp = reader.next(method)
        assert resp.status == 200, resp.body
        if method == "HEAD":
            continue
        got = json.loads(resp.body)
        assert got["method"] == method
        assert got["target"] == req["target"]
        assert got["protocol"] == "HTTP/%d.%d" % tuple(req["version"])
        assert got["env"] == _expected_env(req, underscore)
        assert base64.b64decode(got["body"]) == _body(req)


@pytest.mark.parametrize("split", [False, True], ids=["whole", "pieces"])
@pytest.mark.parametrize("name, raw, meta", _cases("invalid"))
def test_invalid_corpus_request_is_refused_and_never_reaches_the_app(servers, name, raw, meta, split):
    why = _skip_reason(name, meta)
    if why:
        pytest.skip(why)
    srv = servers(_options(meta))
    calls.clear()
    s = srv.connect()
    try:
        _send(s, raw, split)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # refused before we finished sending
    data = recv_all(s, timeout=4)
    if data:
        status = int(data.split(b" ", 2)[1])
        assert 400 <= status < 500 or status == 505, (meta["error"], data[:200])
        assert data.count(b"HTTP/1.1 ") == 1
    assert calls == [], meta["error"]


# -- hostile input beyond the corpus ------------------------------------------------

def _refused(srv, raw: bytes) -> tuple[int, bool]:
    s = srv.connect()
    s.sendall(raw)
    data = recv_all(s, timeout=3)
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data.count(b"HTTP/1.1 ") <= 1


@pytest.fixture
def hello():
    with ServerThread(hello_app, header_timeout=2, limit_request_line=100,
                      limit_request_fields=5, limit_request_field_size=200) as srv:
        yield srv


def test_request_line_over_the_limit_is_414(hello):
    assert _refused(hello, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 414


def test_too_many_headers_is_431(hello):
    raw = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(6)) + b"\r\n"
    assert _refused(hello, raw)[0] == 431


def test_header_over_the_limit_is_431(hello):
    assert _refused(hello, b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 300 + b"\r\n\r\n")[0] == 431


def test_endless_header_line_is_cut_off_before_it_is_buffered(hello):
    """A client streaming one header line forever is refused once the whole
    head exceeds what the limits allow, not when memory runs out."""
    s = hello.connect()
    s.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
    sent = 0
    try:
        for _ in range(200):
            s.sendall(b"v" * 4096)
            sent += 4096
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = recv_all(s, timeout=3)
    assert data.startswith(b"HTTP/1.1 431") or data in (b"", b"<RESET>")


@pytest.mark.parametrize("raw", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-A: b\rX-C: d\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
], ids=["cl-te", "te-cl", "dup-cl", "cl-list", "cl-negative", "cl-plus", "chunk-size-hex",
        "chunk-size-negative", "te-not-chunked-last", "chunked-http10", "dup-host",
        "space-before-colon", "bare-cr", "nul-in-target", "junk-after-version",
        "asterisk-not-options", "http2-version", "tls-hello"])
def test_hostile_request_is_refused_and_closed_without_desync(raw):
    called = []

    def app(environ, start_response):
        called.append(environ["PATH_INFO"])
        return hello_app(environ, start_response)

    with ServerThread(app, header_timeout=2) as srv:
        # A smuggling attempt is followed by a second request in the same
        # packet: it must never be served.
        status, single = _refused(srv, raw + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 0 or 400 <= status < 500 or status == 505
        assert single
        assert "/smuggled" not in called
        assert not srv.log.errors()


def test_pipelined_requests_are_answered_in_order():
    def app(environ, start_response):
        import tgreen
        # later requests finish first if they were run concurrently
        tgreen.sleep(0.05 if environ["PATH_INFO"] == "/1" else 0)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(1, 11)))
        rr = ResponseReader(s)
        assert [rr.next().body for _ in range(10)] == [b"/%d" % i for i in range(1, 11)]


def test_pipelined_requests_then_half_close_get_every_answer_once():
    """Pipelined requests, then the client shuts its sending side: reading
    is paused and resumed around each request after the EOF was seen; every
    request is answered once, in order, then the server closes."""
    seen = []

    def app(environ, start_response):
        import tgreen
        tgreen.sleep(0.01)
        seen.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(1, 6)))
        s.shutdown(socket.SHUT_WR)
        rr = ResponseReader(s)
        assert [rr.next().body for _ in range(5)] == [b"/%d" % i for i in range(1, 6)]
        assert recv_all(s, timeout=3) == b""
        assert seen == ["/%d" % i for i in range(1, 6)]
        assert not srv.log.errors()


def test_half_close_during_a_response_closes_after_it():
    """The client shuts its sending side while its only request is being
    served: it gets the response, then the server closes at once (not after
    the keep-alive timeout)."""
    import threading as _threading
    gate = _threading.Event()

    def app(environ, start_response):
        import tgreen
        while not gate.is_set():
            tgreen.sleep(0.01)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    with ServerThread(app, keepalive_timeout=30) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.05)
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.05)
        gate.set()
        t0 = time.monotonic()
        assert ResponseReader(s).next().body == b"done"
        assert recv_all(s, timeout=5) == b""
        assert time.monotonic() - t0 < 3
        assert srv.call(lambda: len(srv.server.connections)) == 0


def test_pipelined_error_is_answered_after_the_good_requests_before_it():
    with ServerThread(hello_app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET / HTTP/2.0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        rr = ResponseReader(s)
        assert rr.next().status == 200
        assert rr.next().status == 200
        assert rr.next().status == 505
        assert is_closed(s)


def test_bytes_after_a_connection_close_request_are_ignored():
    with ServerThread(hello_app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = recv_all(s)
        assert data.count(b"HTTP/1.1 200") == 1


def test_slowloris_is_timed_out_without_holding_a_core():
    with ServerThread(hello_app, cores=1, header_timeout=0.5) as srv:
        slow = srv.connect()
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        t0 = time.monotonic()
        # the single core is free for everyone else meanwhile
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s).status == 200
        data = recv_all(slow, timeout=5)
        assert data.startswith(b"HTTP/1.1 408")
        assert 0.3 < time.monotonic() - t0 < 3


def test_idle_keep_alive_connection_is_closed_after_the_timeout():
    with ServerThread(hello_app, keepalive_timeout=0.3) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(s)
        t0 = time.monotonic()
        assert is_closed(s, timeout=3)
        assert time.monotonic() - t0 < 2.5
        assert srv.call(lambda: len(srv.server.connections)) == 0


def test_connection_that_never_sends_is_closed_silently():
    with ServerThread(hello_app, header_timeout=0.3) as srv:
        s = srv.connect()
        assert recv_all(s, timeout=3) == b""


def test_absolute_form_target_and_fragment():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['PATH_INFO']}|{environ['QUERY_STRING']}".encode()]

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"GET http://example.com:80/a%20b?x=1#frag HTTP/1.1\r\nHost: example.com\r\n\r\n"
                  b"GET /p#frag HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        rr = ResponseReader(s)
        assert rr.next().body == b"/a b|x=1"
        assert rr.next().body == b"/p|"
        assert rr.next().body == b"|"


def test_fd_count_is_stable_after_many_connections():
    """10,000 requests (half on fresh connections, half keep-alive): the
    server process holds as many fds afterwards as before."""
    def fds():
        return len(os.listdir("/proc/self/fd"))

    def settled(srv):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and srv.call(lambda: len(srv.server.connections)):
            time.sleep(0.02)
        time.sleep(0.1)

    with ServerThread(hello_app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(s)
        s.close()
        settled(srv)
        before = fds()
        req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(5000):
            c = socket.create_connection(("127.0.0.1", srv.port))
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while c.recv(65536):
                pass
            c.close()
        c = srv.connect()
        rr = ResponseReader(c)
        for _ in range(50):
            c.sendall(req * 100)
            for _ in range(100):
                assert rr.next().status == 200
        rr.close()
        c.close()
        settled(srv)
        assert srv.call(lambda: srv.server.requests) == 10_001
        assert fds() == before
