"""Two minimal server shapes for the same hello-world WSGI app, to choose the
architecture of ``tgreen.wsgi`` by measurement (docs/design.md, "The server's data path").

* ``greenlet``: gevent.pywsgi's shape. An accept greenlet; one greenlet per
  connection reads a green socket, feeds httptools, calls the app inline and
  ``sendall``s the response (headers and body in one send).
* ``protocol``: uvicorn's shape. An asyncio Protocol per connection feeds
  httptools from ``data_received``; each parsed request is handed to one of N
  long-lived core greenlets (direct switch from the loop callback), which runs
  the app and writes headers and body in one ``transport.write``.
* ``raw``: the ceiling. Protocol + httptools answering a fixed response, no WSGI.
* ``raw-accept-sync`` / ``raw-accept-task`` / ``raw-own-transport``: ``raw``
  accepted by our own accept loop into the loop's synchronous transport, into
  ``connect_accepted_socket`` (a Task each), or into tgreen.wsgi's own
  ``SocketTransport``.
* ``tgreen``: the real ``tgreen.wsgi.WSGIServer`` (the protocol shape, with
  everything a production server needs), for scale.

Each shape builds the same minimal environ. Run one with
``python shapes.py SHAPE PORT [asyncio|uvloop]``; ``run.py`` drives wrk.
"""

from __future__ import annotations

import asyncio
import collections
import io
import sys

import httptools
from greenlet import getcurrent, greenlet

import tgreen
import tgreen.loop
from tgreen import socket as gsocket

BODY = b"Hello, World!"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def make_environ(method, url, headers, body):
    path, _, query = url.partition(b"?")
    env = {
        "REQUEST_METHOD": method, "PATH_INFO": path.decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"), "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
    }
    for k, v in headers:
        env["HTTP_" + k.decode("latin-1").upper().replace("-", "_")] = v.decode("latin-1")
    return env


def run_app(env):
    out = []

    def start_response(status, headers, exc_info=None):
        out.append(status)
        out.append(headers)

    chunks = app(env, start_response)
    status, headers = out
    head = "HTTP/1.1 %s\r\n%s\r\n" % (status, "".join("%s: %s\r\n" % h for h in headers))
    return head.encode("latin-1") + b"".join(chunks)


class _Req:
    __slots__ = ("url", "headers", "body", "keep_alive", "method")

    def __init__(self):
        self.url = b""
        self.headers = []
        self.body = b""


# -- shape 1: a greenlet per connection over a green socket ----------------------

def serve_greenlet(port):
    lsock = gsocket.socket()
    lsock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)

    def handle(conn):
        conn.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        done = []
        cur = [None]

        class CB:
            def on_message_begin(self):
                cur[0] = _Req()

            def on_url(self, u):
                cur[0].url += u

            def on_header(self, n, v):
                cur[0].headers.append((n, v))

            def on_body(self, b):
                cur[0].body += b

            def on_message_complete(self):
                r = cur[0]
                r.keep_alive = parser.should_keep_alive()
                r.method = parser.get_method().decode()
                done.append(r)

        parser = httptools.HttpRequestParser(CB())
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                parser.feed_data(data)
                while done:
                    r = done.pop(0)
                    conn.sendall(run_app(make_environ(r.method, r.url, r.headers, r.body)))
                    if not r.keep_alive:
                        return
        except OSError:
            pass
        finally:
            conn.close()

    while True:
        c, _ = lsock.accept()
        tgreen.spawn(handle, c)


# -- shape 2: protocol + N core greenlets ---------------------------------------

class Cores:
    def __init__(self, n):
        self.n = n
        self.count = 0
        self.idle = []
        self.waiting = collections.deque()
        self.hub = tgreen.get_hub()

    def submit(self, conn):
        if self.idle:
            self.idle.pop().switch(conn)
        elif self.count < self.n:
            self.count += 1
            greenlet(self._core, parent=self.hub.root).switch(conn)
        else:
            conn.transport.pause_reading()
            self.waiting.append(conn)

    def _core(self, conn):
        me = getcurrent()
        root = self.hub.root
        while True:
            conn.serve()
            if self.waiting:
                conn = self.waiting.popleft()
                conn.transport.resume_reading()
                continue
            self.idle.append(me)
            conn = root.switch()


class Proto(asyncio.Protocol):
    def __init__(self, cores):
        self.cores = cores
        self.parser = httptools.HttpRequestParser(self)
        self.queue = collections.deque()
        self.busy = False

    def connection_made(self, t):
        self.transport = t
        t.get_extra_info("socket").setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
            return
        if self.queue and not self.busy:
            self.busy = True
            self.cores.submit(self)

    def on_message_begin(self):
        self.cur = _Req()

    def on_url(self, u):
        self.cur.url += u

    def on_header(self, n, v):
        self.cur.headers.append((n, v))

    def on_body(self, b):
        self.cur.body += b

    def on_message_complete(self):
        r = self.cur
        r.keep_alive = self.parser.should_keep_alive()
        r.method = self.parser.get_method().decode()
        self.queue.append(r)

    def serve(self):
        while self.queue:
            r = self.queue.popleft()
            if self.transport.is_closing():
                break
            self.transport.write(run_app(make_environ(r.method, r.url, r.headers, r.body)))
            if not r.keep_alive:
                self.transport.close()
                break
        self.busy = False


class RawProto(Proto):
    RESP = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n" + BODY

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
            return
        while self.queue:
            keep_alive = self.queue.popleft()
            self.transport.write(self.RESP)
            if not keep_alive:
                self.transport.close()
                return

    def on_message_complete(self):
        self.queue.append(self.parser.should_keep_alive())


def serve_protocol(port, raw=False):
    loop = tgreen.get_hub().loop
    cores = Cores(100)
    factory = (lambda: RawProto(cores)) if raw else (lambda: Proto(cores))
    loop.run_until_complete(loop.create_server(factory, "127.0.0.1", port, backlog=1024))
    loop.run_forever()


# -- accept variants (raw protocol): the loop's create_server vs our own accept --

def _listener(port):
    import socket as stdsocket
    lsock = stdsocket.socket()
    lsock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    lsock.setblocking(False)
    return lsock


def serve_raw_own_accept(port, sync_transport):
    loop = tgreen.get_hub().loop
    cores = Cores(100)
    lsock = _listener(port)

    def on_accept():
        for _ in range(64):
            try:
                conn, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            proto = RawProto(cores)
            if sync_transport:
                loop._make_socket_transport(conn, proto, extra={"peername": addr})
            else:
                loop.create_task(loop.connect_accepted_socket(lambda p=proto: p, conn))

    loop.add_reader(lsock.fileno(), on_accept)
    loop.run_forever()


def serve_raw_own_transport(port):
    """tgreen.wsgi's own accept loop and SocketTransport, with the raw protocol."""
    from tgreen.wsgi.listen import SocketAcceptor
    loop = tgreen.get_hub().loop
    cores = Cores(100)
    lsock = _listener(port)
    acc = SocketAcceptor(loop, lsock, lambda: RawProto(cores), lambda e: print(e, file=sys.stderr))
    acc.resume()
    loop.run_forever()


if __name__ == "__main__":
    shape, port = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:
        tgreen.loop.set_loop_kind(sys.argv[3])
    if shape == "greenlet":
        serve_greenlet(port)
    elif shape == "tgreen":
        from tgreen.wsgi import WSGIServer
        WSGIServer(("127.0.0.1", port), app, cores=100, backlog=1024).serve_forever()
    elif shape == "raw-accept-task":
        serve_raw_own_accept(port, False)
    elif shape == "raw-accept-sync":
        serve_raw_own_accept(port, True)
    elif shape == "raw-own-transport":
        serve_raw_own_transport(port)
    else:
        serve_protocol(port, raw=shape == "raw")
