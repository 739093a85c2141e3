"""The WSGI apps every server in ``bench.py`` runs (no server-specific code).

``hello``   13-byte text body, Content-Length set.
``sleep``   a 10 ms *green* sleep, then a short body.
``stream``  a generator yielding 64 x 1 KiB chunks (Content-Length set, so every
            server streams the same bytes and keeps the connection alive).
``big``     a 1 MiB body in one bytes object.

How to sleep without blocking the server is the only thing that differs between
servers; ``bench.py`` picks it with ``BENCH_GREEN`` (tgreen, gevent, uwsgi,
thread). ``thread`` (and no BENCH_GREEN) is ``time.sleep``: right for the
thread-pool servers (granian's blocking threads, uWSGI --threads, tornado with
an executor), and the call that blocks the one-loop servers (bjoern, meinheld).
Nothing is imported at module level except the stdlib, so the same file loads
in the peers' venv (bjoern, meinheld, granian, uWSGI).
"""

import os
import time

HELLO = b"Hello, World!"
CHUNK = b"x" * 1024
NCHUNKS = 64
BIG = b"y" * (1 << 20)
SLEPT = b"slept"
SLEEP_S = 0.010

_GREEN = os.environ.get("BENCH_GREEN", "")


def _make_sleep():
    if _GREEN == "tgreen":
        import tgreen

        return tgreen.sleep
    if _GREEN == "gevent":
        import gevent

        return gevent.sleep
    if _GREEN == "uwsgi":
        # uWSGI's Tornado loop engine, the pattern from its docs (Tornado.rst):
        # schedule a Tornado callback that switches back into the request
        # greenlet, and switch to the main greenlet (the one running the
        # IOLoop). uwsgi.async_sleep() only feeds uWSGI's own async event queue,
        # which the tornado loop engine does not service.
        import greenlet
        from tornado.ioloop import IOLoop

        def sleep(seconds):
            me = greenlet.getcurrent()
            IOLoop.current().call_later(seconds, me.switch)
            me.parent.switch()

        return sleep
    return time.sleep   # thread pools; blocks bjoern's and meinheld's single loop


_sleep = _make_sleep() if _GREEN else time.sleep


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def sleep(environ, start_response):
    _sleep(SLEEP_S)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(SLEPT)))])
    return [SLEPT]


def _chunks():
    for _ in range(NCHUNKS):
        yield CHUNK


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(CHUNK) * NCHUNKS))])
    return _chunks()


def big(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(BIG)))])
    return [BIG]


EXPECTED = {"hello": HELLO, "sleep": SLEPT, "stream": CHUNK * NCHUNKS, "big": BIG}
application = hello
