"""Server entry points for the peers that have no CLI of their own.

    python runners.py gevent         APP PORT N      # gevent.pywsgi.WSGIServer, spawn=Pool(N)
    python runners.py gevent-nodelay APP PORT N      # same, TCP_NODELAY on every accepted socket
    python runners.py tornado        APP PORT N      # tornado.wsgi.WSGIContainer on an HTTPServer
                                                     #   (N > 0: run the app in a ThreadPoolExecutor(N))
    python runners.py raw            APP PORT LOOP   # asyncio Protocol + httptools, fixed response,
                                                     #   LOOP = asyncio | uvloop; no WSGI at all
                                                     #   (APP sleep: the response after call_later(10 ms))
    python runners.py bjoern         APP PORT -      # bjoern.listen + bjoern.run (one C libev loop)
    python runners.py meinheld       APP PORT KA     # meinheld.server, keep-alive timeout KA seconds

APP is a callable name in apps.py. Each prints nothing and serves until SIGINT.
bjoern and meinheld run from the peers venv (benchmarks/peers/install.sh).
"""

import os
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _app(name):
    import apps

    return getattr(apps, name)


def run_gevent(app, port, n, nodelay):
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIServer

    class NoDelayServer(WSGIServer):
        def handle(self, sock, address):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return super().handle(sock, address)

    cls = NoDelayServer if nodelay else WSGIServer
    server = cls(("127.0.0.1", port), app, spawn=Pool(n), log=None, backlog=2048)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def run_tornado(app, port, n):
    from tornado.httpserver import HTTPServer
    from tornado.ioloop import IOLoop
    from tornado.wsgi import WSGIContainer

    if n > 0:
        from concurrent.futures import ThreadPoolExecutor

        container = WSGIContainer(app, executor=ThreadPoolExecutor(max_workers=n))
    else:
        container = WSGIContainer(app)
    import logging

    logging.getLogger("tornado.access").disabled = True
    server = HTTPServer(container)
    server.listen(port, "127.0.0.1", backlog=2048)
    try:
        IOLoop.current().start()
    except KeyboardInterrupt:
        pass


def run_bjoern(app, port):
    import bjoern

    bjoern.listen(app, "127.0.0.1", port)
    try:
        bjoern.run()
    except KeyboardInterrupt:
        pass


def run_meinheld(app, port, keepalive):
    from meinheld import server

    server.listen(("127.0.0.1", port))
    server.set_backlog(2048)
    # meinheld closes every connection after its response unless keep-alive
    # is switched on; every other server here keeps connections by default.
    server.set_keepalive(keepalive)
    try:
        server.run(app)
    except KeyboardInterrupt:
        pass


RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
            b"Hello, World!")
RESPONSE_CLOSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
                  b"Connection: close\r\n\r\nHello, World!")


SLEPT = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nslept"
SLEPT_CLOSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
               b"Connection: close\r\n\r\nslept")


def run_raw(port, loop_name, app="hello"):
    import asyncio

    import httptools

    if loop_name == "uvloop":
        import uvloop

        uvloop.install()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_complete(self):
            if sleeping:
                # the bare-asyncio form of the 10 ms sleep app: one timer
                asyncio.get_running_loop().call_later(0.010, self.respond, self.parser.should_keep_alive())
            else:
                self.respond(self.parser.should_keep_alive())

        def respond(self, keep_alive):
            if self.transport.is_closing():
                return
            if keep_alive:
                self.transport.write(ok)
            else:
                self.transport.write(ok_close)
                self.transport.close()

    sleeping = app == "sleep"
    ok, ok_close = (SLEPT, SLEPT_CLOSE) if sleeping else (RESPONSE, RESPONSE_CLOSE)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", port, backlog=2048)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def main(argv):
    kind, app, port, n = argv[1], argv[2], int(argv[3]), argv[4]
    if kind == "gevent":
        run_gevent(_app(app), port, int(n), nodelay=False)
    elif kind == "gevent-nodelay":
        run_gevent(_app(app), port, int(n), nodelay=True)
    elif kind == "tornado":
        run_tornado(_app(app), port, int(n))
    elif kind == "raw":
        run_raw(port, n, app)
    elif kind == "bjoern":
        run_bjoern(_app(app), port)
    elif kind == "meinheld":
        run_meinheld(_app(app), port, int(n))
    else:
        raise SystemExit(f"unknown server {kind!r}")


if __name__ == "__main__":
    main(sys.argv)
