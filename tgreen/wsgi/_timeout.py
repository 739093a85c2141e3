"""The request timeout (``--timeout``) and the record of requests cut at shutdown.

Theory of operation
-------------------
With ``timeout`` set, a core that starts a request stamps it with a deadline
and its own greenlet (``stamp``). The server's once-a-tick sweep calls
``expire``: a request past its deadline gets a ``RequestTimeout`` (a
``tgreen.Timeout``) thrown into its core, wherever the app waits. The core
unwinds through ``run_request``, which calls ``timed_out``: the stack is
logged, the client gets a 504 if no byte of the response went out, else the
connection is aborted (a truncated response must look truncated), and the
core goes back to the pool. ::

    core:  stamp(req) -> app ... waits ...
    sweep: expire(server, now) -> hub.throw(core, RequestTimeout)
    core:  run_request: except RequestTimeout -> timed_out() -> 504 / abort

A request that holds the loop itself (a CPU loop, a blocking C call) cannot
be interrupted from the loop: the master's watchdog (``tgreen._lifeline``)
kills that worker instead.

Rules of this file:

1. Only the sweep (a loop callback) throws into a core, as the cores' rule 1
   requires.
2. A timeout thrown into an app that swallows it is thrown again after
   another ``timeout``: the core comes back or the request keeps being told.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from greenlet import getcurrent

from ..timeout import Timeout
from ._errors import error_response

if TYPE_CHECKING:   # annotations only: these modules import this one
    from ._protocol import HttpProtocol, Request
    from ._response import _Response
    from .server import WSGIServer

__all__ = ["RequestTimeout", "expire", "log_cut", "stamp", "timed_out"]

log = logging.getLogger("tgreen.wsgi")


class RequestTimeout(Timeout):
    """Thrown into a request's greenlet when it runs past ``--timeout``.
    A ``tgreen.Timeout``, so ``except tgreen.Timeout`` sees it."""

    def __str__(self) -> str:
        return f"request ran longer than the {self.seconds:g} s --timeout"


def stamp(req: Request, timeout: float) -> None:
    """A core starts ``req``: give it a deadline and remember the core."""
    req.run_deadline = time.monotonic() + timeout
    req.core = getcurrent()


def expire(server: WSGIServer, now: float) -> None:
    """Throw ``RequestTimeout`` into every request past its deadline (rule 1)."""
    timeout = server.cfg.timeout
    late = [c for c in server.connections
            if c.serving is not None and 0.0 < c.serving.run_deadline <= now]
    for conn in late:
        req = conn.serving
        if req is None or not req.run_deadline or req.core is None or req.core.dead:
            continue
        req.run_deadline = now + timeout   # rule 2
        server.hub.throw(req.core, RequestTimeout(timeout))


def timed_out(resp: _Response, conn: HttpProtocol, exc: RequestTimeout) -> None:
    """The request's greenlet unwound with ``exc``: log where it was, answer
    504 if nothing went out yet, else abort the connection."""
    req = resp.req
    req.run_deadline = 0.0
    started = resp.sent or conn.closed
    log.error("%s %s: %s; %s; where it was:", req.method, req.url.decode("latin-1", "replace"),
              exc, "closing the connection (the response had started)" if started else "answering 504",
              exc_info=exc)
    resp.keep = False
    resp.code = 504
    resp.discard_pending()
    if started:
        conn.abort()
        return
    conn.transport.write(error_response(504, resp.server.date_line))


def log_cut(server: WSGIServer, why: str) -> None:
    """The server closes with requests still running: log each one's
    method, path and age (time since its first byte arrived)."""
    now = time.monotonic()
    for conn in server.connections:
        req = conn.serving
        if req is None or conn.closed:
            continue
        log.warning("tgreen: %s: cutting %s %s, running for %.1f s", why, req.method,
                    req.url.decode("latin-1", "replace"), now - req.start)
