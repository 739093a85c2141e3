"""The async cores: N greenlets that each serve one request at a time.

Theory of operation
-------------------
A connection with a ready request calls ``submit(conn)`` from a loop
callback. An idle core is switched to directly (no loop round trip); if none
is idle and fewer than N exist, a new one is made; otherwise the connection
joins ``waiting`` with its reading paused, and the server stops accepting.
A core that finishes a connection's work takes the next waiting connection
itself, and parks only when nothing waits. When the waiting line empties the
server accepts again. ::

    submit(conn) --idle core--> core.switch(conn) --> conn.serve() --> next / park
                 --all busy---> waiting.append(conn); pause reading; stop accepting

That is the backpressure: at most one parsed request per connection waits
(its socket is not read meanwhile), the number of connections is bounded
because accepting stops, and a busy server spins nothing: a parked core is a
suspended greenlet and a paused socket is not in the poller.

Rules of this file:

1. Cores are switched to only from loop callbacks (the runner), never from
   another core, so the hub's "every wake-up happens in a loop callback"
   holds.
2. Each request runs in a fresh copy of the server's contextvars context, so
   nothing an app sets leaks into the next request on the same core.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any

from greenlet import GreenletExit, getcurrent, greenlet

from ._protocol import PAUSE_CORES

if TYPE_CHECKING:   # annotations only: these modules import this one
    from ._protocol import HttpProtocol
    from .server import WSGIServer

__all__ = ["Cores"]

log = logging.getLogger("tgreen.wsgi")


class Cores:
    def __init__(self, server: WSGIServer, n: int) -> None:
        self.server = server
        self.n = n
        self.hub = server.hub
        self.cores: set[greenlet] = set()
        self.idle: list[greenlet] = []
        self.waiting: collections.deque = collections.deque()

    def submit(self, conn: HttpProtocol) -> None:
        """Hand ``conn`` (which has a ready request) to a core (rule 1)."""
        if self.idle:
            self.idle.pop().switch(conn)
        elif len(self.cores) < self.n:
            g = greenlet(self._run, parent=self.hub.root)
            self.cores.add(g)
            g.switch(conn)
        else:
            self._wait(conn)

    def _wait(self, conn: HttpProtocol) -> None:
        conn.waiting_core = True
        conn.pause(PAUSE_CORES)
        if not self.waiting:
            self.server.pause_accepting()
        self.waiting.append(conn)

    def _next_waiting(self) -> Any:
        waiting = self.waiting
        while waiting:
            conn = waiting.popleft()
            conn.waiting_core = False
            if not waiting:
                self.server.resume_accepting()
            if conn.closed:
                continue
            conn.unpause(PAUSE_CORES)
            if conn.queue:
                return conn
        return None

    def _run(self, conn: HttpProtocol) -> None:
        me = getcurrent()
        root = self.hub.root
        idle = self.idle
        server = self.server
        try:
            while True:
                try:
                    again = conn.serve()
                except GreenletExit:
                    raise
                except BaseException as e:
                    log.critical("tgreen.wsgi: internal error serving %r", conn, exc_info=e)
                    conn.abort()
                    again = False
                if again:
                    self._wait(conn)
                nxt = self._next_waiting() if self.waiting else None
                if nxt is None:
                    idle.append(me)
                    if server.draining:
                        server.core_idle()
                    nxt = root.switch()
                    if nxt is None:   # told to exit
                        return
                conn = nxt
        finally:
            self.cores.discard(me)
            try:
                idle.remove(me)
            except ValueError:
                pass

    @property
    def busy(self) -> int:
        return len(self.cores) - len(self.idle)

    def close(self) -> None:
        """End the parked cores (busy ones are the server's to wait for or kill)."""
        idle, self.idle = self.idle, []
        for g in idle:
            if not g.dead:
                g.switch(None)

    def kill_busy(self) -> None:
        for g in list(self.cores):
            if not g.dead:
                try:
                    g.throw(GreenletExit)
                except BaseException:
                    pass
