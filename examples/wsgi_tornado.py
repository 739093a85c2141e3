"""A WSGI app and a Tornado app in one process, on one loop.

The uWSGI Tornado engine's pattern, the tgreen way: the module defines a
WSGI ``application`` and a ``tornado.web.Application``; a ``@tgreen.postfork``
hook makes the Tornado app listen on ``8000 + worker_id`` in every worker.
The module never starts the IOLoop: tgreen-serve's worker runs it.

The WSGI app calls the Tornado app with ``AsyncHTTPClient`` and no callback:
``tgreen.wait`` blocks only the request's greenlet. ::

    tgreen-serve examples/wsgi_tornado.py --bind 127.0.0.1:9000 --workers 2
    curl http://127.0.0.1:9000/          # WSGI, which asks Tornado
    curl http://127.0.0.1:8001/tornado   # Tornado in worker 1 (8002: worker 2)

``TORNADO_PORT_BASE`` changes the 8000.
"""

import os

import tornado.web
from tornado.httpclient import AsyncHTTPClient

import tgreen

PORT_BASE = int(os.environ.get("TORNADO_PORT_BASE", "8000"))


class TornadoHandler(tornado.web.RequestHandler):
    async def get(self):
        self.write(f"Tornado in worker {tgreen.worker_id()} (pid {os.getpid()})\n")


tornado_app = tornado.web.Application([(r"/tornado", TornadoHandler)])


@tgreen.postfork
def listen():
    # After fork, before the worker's loop starts: each worker its own port.
    # reuse_port: during a reload (SIGHUP) the new worker with this id binds
    # the port while the old one still finishes its requests on it.
    tornado_app.listen(PORT_BASE + tgreen.worker_id(), address="127.0.0.1", reuse_port=True)


def application(environ, start_response):
    url = f"http://127.0.0.1:{PORT_BASE + tgreen.worker_id()}/tornado"
    response = tgreen.wait(AsyncHTTPClient().fetch(url))  # no callback, no await
    body = b"WSGI says hello; Tornado said: " + response.body
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
