"""uWSGI's Tornado-engine AsyncHTTPClient example, without callbacks.

With uWSGI's engine the request handler had to pass a callback to
``AsyncHTTPClient.fetch`` and switch greenlets by hand. With tgreen the
greenlet just waits for the future::

    response = tgreen.wait(AsyncHTTPClient().fetch(url))

This script starts a Tornado app on loopback and fetches from it in 20
greenlets at once. Run: python examples/tornado_fetch.py
"""

import time

import tornado.netutil
import tornado.web
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer

import tgreen


class Upstream(tornado.web.RequestHandler):
    async def get(self, n):
        await tornado.gen.sleep(0.2)  # a slow upstream
        self.write(f"upstream answer {n}")


def fetch(url: str) -> str:
    response = tgreen.wait(AsyncHTTPClient().fetch(url))  # plain code, no callback
    return response.body.decode()


def main() -> None:
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    HTTPServer(tornado.web.Application([(r"/(\d+)", Upstream)])).add_sockets(sockets)
    port = sockets[0].getsockname()[1]

    t0 = time.monotonic()
    greenlets = [tgreen.spawn(fetch, f"http://127.0.0.1:{port}/{i}") for i in range(20)]
    tgreen.joinall(greenlets, raise_error=True)
    for i, g in enumerate(greenlets):
        assert g.value == f"upstream answer {i}"
    print(f"20 fetches of a 0.2 s upstream in {time.monotonic() - t0:.2f} s")


if __name__ == "__main__":
    main()
