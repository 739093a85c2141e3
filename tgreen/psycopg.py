"""Green PostgreSQL: make psycopg2 and psycopg 3 wait on the tgreen hub.

Both drivers are libpq in C, so monkey-patching the socket module does not
reach them: libpq owns its socket and, left alone, blocks the whole OS thread
inside ``PQgetResult``/``poll()``. Both drivers let the application take over
the waiting; this module does that with the hub. ``patch_all()`` does it
for you (``tgreen.monkey.patch_psycopg``: when the driver is imported, or at
once if it already is); by hand, once at start-up::

    import tgreen.monkey; tgreen.monkey.patch_all(psycopg=False)
    import tgreen.psycopg
    tgreen.psycopg.make_psycopg2_green()   # psycopg2: a wait callback
    tgreen.psycopg.make_psycopg_green()    # psycopg 3: green wait functions

    conn = psycopg2.connect(host="127.0.0.1", dbname="app")
    # queries from many greenlets now run concurrently, one connection each

Give the host as an address: libpq resolves host names itself, in C, and
that lookup blocks the thread (``/etc/hosts`` is quick, DNS may not be).

Theory of operation
-------------------
psycopg2: with a wait callback set, every connection runs libpq in
non-blocking mode and calls ``callback(conn)`` whenever it would block. The
callback polls the connection (``conn.poll()``) and waits on the hub for the
fd to become readable or writable until the poll says ``POLL_OK``.

psycopg 3: every blocking operation is a generator that yields the wait it
needs and is driven by ``psycopg.waiting.wait`` (``wait_conn`` while
connecting, when the fd may change). Connections look both names up in the
module at call time, so replacing them is enough. Under ``patch_all()`` and
without this call, psycopg 3 with its C speedups (``psycopg[binary]`` or
``psycopg[c]``) waits in C (``wait_c``) and blocks the thread; the pure
Python build waits with ``select.poll`` and is green, but waits out a 0.1 s
polling interval whenever a closed libpq fd's number is reused (the green
poll keeps the loop registration of the closed fd: see rule 2).

Cancellation. A greenlet killed or timed out (``tgreen.Timeout``) in the
middle of a query must not leave the query running in the server, holding a
backend and its locks. psycopg2: the callback catches the exception, sends a
cancel request (``conn.cancel()``, in a real OS thread because libpq's cancel
connects and blocks), waits up to ``CANCEL_TIMEOUT`` for the server to give
up the query, then re-raises the original exception; psycopg2 then closes
the connection, as it always does when its wait callback raises. psycopg 3
already does the same for ``KeyboardInterrupt``: we add ``GreenletExit`` and
``tgreen.Timeout`` to the exceptions it treats that way, and its own
non-blocking cancel (libpq >= 17) goes through our green ``wait_conn``.

Rules of this file:

1. Waits go through the hub (``wait_read``/``wait_write``/listeners), never
   through the loop directly, so the hub's per-fd bookkeeping stays right.
2. libpq closes its fds itself, behind tgreen's back. A loop registration
   left on a closed fd would be inherited by the next fd with that number
   and never fire, so every wait here starts and ends by making the hub
   forget the fd (``Hub.notify_close``; nobody else waits on a libpq fd).
3. One connection serves one greenlet at a time, as with threads. psycopg2
   raises ``ProgrammingError`` on concurrent use in green mode; psycopg 3
   serializes with a ``threading.Lock``, which is only safe across greenlets
   when ``patch_all(thread=True)`` has made it green.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from . import _originals
from .greenlet import GreenletExit
from .hub import TIMEDOUT, Hub, Waiter, current_hub_if_any
from .timeout import Timeout

__all__ = ["CANCEL_TIMEOUT", "make_psycopg2_green", "make_psycopg_green", "psycopg2_wait_callback",
           "psycopg_wait", "psycopg_wait_conn"]

#: Seconds a killed query may take to stop in the server after the cancel
#: request, before the connection is abandoned (psycopg2 closes it anyway).
CANCEL_TIMEOUT = 5.0

_READ, _WRITE = 1, 2  # psycopg 3's Wait/Ready values, also the hub's listener events
_std_select = _originals.module("select")
# psycopg 3's own wait functions, for threads that have no hub (see below).
_plain_waits: dict = {}


def _forget(hub: Hub, fd: int) -> None:
    """Drop any loop registration on ``fd`` (rule 2)."""
    hub.forget(fd)


# -- psycopg2 -------------------------------------------------------------------------


def make_psycopg2_green() -> None:
    """Install ``psycopg2_wait_callback``: psycopg2 queries become green.

    Idempotent and process-wide: every thread's psycopg2 queries go through
    it from then on. In a real OS thread that does not use tgreen, a wait
    blocks only that thread, as without it.
    """
    from psycopg2 import extensions

    extensions.set_wait_callback(psycopg2_wait_callback)


def psycopg2_wait_callback(conn: Any, timeout: float | None = None) -> None:
    """psycopg2's wait callback: poll ``conn`` and wait for its fd on the hub.

    In a real OS thread that does not use tgreen (an executor's worker, say)
    it waits with a plain ``poll()``, blocking only that thread, instead of
    giving the thread an event loop of its own.
    """
    from psycopg2 import OperationalError, extensions

    hub = current_hub_if_any()
    if hub is None:
        return _psycopg2_wait_plain(conn)
    fd = conn.fileno()
    _forget(hub, fd)
    try:
        while True:
            state = conn.poll()
            if state == extensions.POLL_OK:
                return
            try:
                if state == extensions.POLL_READ:
                    hub.wait_read(fd, timeout)
                elif state == extensions.POLL_WRITE:
                    hub.wait_write(fd, timeout)
                else:
                    raise OperationalError(f"tgreen: bad result from poll: {state!r}")
            except BaseException:
                _psycopg2_cancel(conn, hub, fd)
                raise
    finally:
        _forget(hub, fd)


def _psycopg2_wait_plain(conn: Any) -> None:
    """psycopg2.extras.wait_select, with the stdlib's own poll()."""
    from psycopg2 import OperationalError, extensions

    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        if state == extensions.POLL_READ:
            mask = _std_select.POLLIN
        elif state == extensions.POLL_WRITE:
            mask = _std_select.POLLOUT
        else:
            raise OperationalError(f"tgreen: bad result from poll: {state!r}")
        p = _std_select.poll()
        p.register(conn.fileno(), mask)
        p.poll()


def _psycopg2_cancel(conn: Any, hub: Hub, fd: int) -> None:
    """The wait was interrupted: stop the query in the server, best effort.

    The caller re-raises the interruption afterwards and psycopg2 closes the
    connection; what this adds is that the server stops working for nobody.
    """
    from psycopg2 import extensions

    if conn.closed or conn.get_transaction_status() != extensions.TRANSACTION_STATUS_ACTIVE:
        return  # connecting, or between commands: nothing runs in the server
    from . import threadpool

    try:
        with Timeout(CANCEL_TIMEOUT):
            threadpool.run(conn.cancel)
            # Drain until the server answers: QueryCanceledError, or the
            # query's own result if it finished first.
            while True:
                state = conn.poll()
                if state == extensions.POLL_OK:
                    return
                if state == extensions.POLL_READ:
                    hub.wait_read(fd)
                else:
                    hub.wait_write(fd)
    except Timeout:
        return
    except Exception:  # noqa: BLE001 - QueryCanceledError is the expected way out
        return
    # A second kill while cancelling (BaseException) propagates, and wins.


# -- psycopg 3 --------------------------------------------------------------------------


def make_psycopg_green() -> None:
    """Make psycopg 3's synchronous connections wait on the hub.

    Replaces ``psycopg.waiting.wait`` and ``wait_conn`` (looked up at call
    time by every connection, so it works even when psycopg was imported
    first) and lets a killed or timed-out greenlet cancel its query the way
    psycopg cancels on Ctrl-C. Idempotent.
    """
    import psycopg.waiting

    if psycopg.waiting.wait is not psycopg_wait:
        _plain_waits["wait"] = psycopg.waiting.wait
    if psycopg.waiting.wait_conn is not psycopg_wait_conn:
        _plain_waits["wait_conn"] = psycopg.waiting.wait_conn
    psycopg.waiting.wait = psycopg_wait
    psycopg.waiting.wait_conn = psycopg_wait_conn
    try:
        import psycopg.connection as pconn
    except ImportError:  # pragma: no cover - layout of other psycopg versions
        return
    interrupted = getattr(pconn, "_INTERRUPTED", None)
    if isinstance(interrupted, tuple):
        extra = tuple(e for e in (GreenletExit, Timeout) if e not in interrupted)
        pconn._INTERRUPTED = interrupted + extra  # noqa: SLF001 - psycopg has no hook for this


def _plain_wait(name: str) -> Any:
    """psycopg's own wait function ``name``, as it was before we replaced it."""
    fn = _plain_waits.get(name)
    if fn is None:
        from psycopg import waiting

        fn = getattr(waiting, "wait_c", None) if name == "wait" else waiting.wait_conn
        if fn is None or fn in (psycopg_wait, psycopg_wait_conn):
            fn = waiting.wait_poll
    return fn


def _wait_fd(hub: Hub, fd: int, wait: int, timeout: float | None) -> int:
    """Wait for ``wait`` (1 read, 2 write, 3 either) on ``fd``; return what is
    ready (0 on timeout)."""
    if wait == _READ:
        return _READ if hub.wait_read(fd, timeout) else 0
    if wait == _WRITE:
        return _WRITE if hub.wait_write(fd, timeout) else 0
    waiter = Waiter(hub)
    handle = hub.add_listener(fd, _READ | _WRITE, lambda _fd, event: waiter.switch(event))
    try:
        event = waiter.get(timeout, "waiting for a PostgreSQL connection")
    finally:
        hub.remove_listener(handle)
    if event is TIMEDOUT:
        return 0
    if event == 0:
        import psycopg

        raise psycopg.OperationalError("connection socket closed")
    return event


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _timed_out() -> BaseException:
    from psycopg import errors

    # What psycopg's own waits raise, so its callers handle ours alike.
    return errors._WaitTimeout("wait timeout expired")  # noqa: SLF001


def psycopg_wait(gen: Generator[Any, Any, Any], fileno: int, interval: float = 0.0,
                 timeout: float | None = None) -> Any:
    """A green ``psycopg.waiting.wait``: drive ``gen`` waiting on the hub.

    ``interval`` (psycopg's Ctrl-C polling period) is not needed: the hub
    delivers KeyboardInterrupt to the main greenlet by itself. A real OS
    thread without a hub uses psycopg's own wait.
    """
    hub = current_hub_if_any()
    if hub is None:
        return _plain_wait("wait")(gen, fileno, interval, timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    _forget(hub, fileno)
    try:
        s = next(gen)
        while True:
            ready = _wait_fd(hub, fileno, s, _remaining(deadline))
            if not ready:
                raise _timed_out()
            s = gen.send(ready)
    except StopIteration as ex:
        return ex.value
    finally:
        _forget(hub, fileno)


def psycopg_wait_conn(gen: Generator[Any, Any, Any], interval: float = 0.0, timeout: float | None = None) -> Any:
    """A green ``psycopg.waiting.wait_conn``: like ``psycopg_wait``, but the
    generator names the fd with each wait (it changes while connecting)."""
    hub = current_hub_if_any()
    if hub is None:
        return _plain_wait("wait_conn")(gen, interval, timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    last = -1
    try:
        fileno, s = next(gen)
        while True:
            if fileno != last:
                # libpq closed ``last`` inside gen.send(), with no switch since:
                # its number cannot belong to anyone else yet.
                if last >= 0:
                    _forget(hub, last)
                _forget(hub, fileno)
                last = fileno
            ready = _wait_fd(hub, fileno, s, _remaining(deadline))
            if not ready:
                raise _timed_out()
            fileno, s = gen.send(ready)
    except StopIteration as ex:
        return ex.value
    finally:
        if last >= 0:
            _forget(hub, last)
