"""A gunicorn worker that serves WSGI apps on tgreen's cores. ::

    gunicorn -k tgreen.gunicorn.Worker --worker-connections 1000 app:application
    gunicorn -k egg:tgreen#worker app:application          # the same, by entry point

This module owns the glue between gunicorn's arbiter and tgreen's WSGI
server; HTTP itself is ``tgreen.wsgi.WSGIServer`` (the same parser, limits,
timeouts and backpressure as ``tgreen-serve``), never a second HTTP path.

Theory of operation
-------------------
::

    arbiter: load the worker class -> Worker.setup(): patch_all()
             -> (--preload: import the app, patched) -> bind -> fork workers
    worker:  fresh loop -> signal handlers on it -> import the app (unless
             preloaded) -> post_worker_init -> WSGIServer on the arbiter's
             sockets, cores = --worker-connections -> heartbeat timer -> run the loop

Rules of this file:

1. Patching happens when the arbiter loads this class (gunicorn calls the
   class's ``setup()`` before ``--preload`` imports the app), so a preloaded
   app, and every worker forked afterwards, sees the green stdlib. The
   arbiter runs patched too, as gevent users know it from ``--preload``: its
   signal queue waits and its control-socket thread are green on a hub of
   its own (the tests drive every arbiter signal through it).
2. Each worker runs a new event loop: the one a patched arbiter may have
   created is abandoned at fork (``tgreen._fork``), never shared.
3. The heartbeat (``notify()``) is a loop timer, not a greenlet's sleep: if
   the loop stops turning (a CPU-bound request, a blocking C call), the
   heartbeat stops with it, and the arbiter's ``--timeout`` kills the worker.
4. Signals (gunicorn's worker contract): TERM drains gracefully for at most
   ``--graceful-timeout``; QUIT and INT stop at once; USR1 reopens the log
   files; ABRT (the arbiter's timeout) runs the ``worker_abort`` hook and
   exits at once, from whatever was running, since the loop is the thing
   that is stuck. They run as loop callbacks (or greenlets, when they may
   block), never inside app code, except ABRT.
5. ``--keep-alive 0`` turns keep-alive off, as in gunicorn; otherwise it is
   the idle time of a keep-alive connection. ``--max-requests`` (with its
   jitter) drains the worker after that many requests; the arbiter starts a
   new one.

``environ['gunicorn.socket']`` is the connection's socket as a green socket
(a ``dup`` of its fd, closed with the connection): peer address, socket
options, ``fileno()``. On an ``Upgrade:`` request it is the server's
takeover socket instead (``tgreen/wsgi/_takeover.py``): an app that reads or
writes it owns the connection (WebSockets: flask-sock, simple-websocket,
engineio, ``tgreen.websocket``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import sys
import time
from typing import Any

try:
    import gunicorn.workers.base as _base
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("tgreen.gunicorn needs gunicorn: pip install gunicorn") from e

from greenlet import getcurrent

from . import _originals
from . import socket as green_socket
from .wsgi.server import WSGIServer

__all__ = ["Worker"]

_std_signal = _originals.module("signal")

#: Seconds between heartbeats at most (gunicorn asks for one per timeout/2).
HEARTBEAT_MAX = 1.0


class Worker(_base.Worker):
    """gunicorn worker class: ``-k tgreen.gunicorn.Worker``."""

    server: Any = None
    loop: Any = None

    @classmethod
    def setup(cls) -> None:
        # gunicorn calls this in the arbiter when it loads the worker class,
        # before --preload imports the app (rule 1).
        from . import monkey

        monkey.patch_all()

    # -- process start -----------------------------------------------------------------

    def init_process(self) -> None:
        # The loop first: the signal handlers (init_signals, called by the base
        # class before the app is loaded) are set on it (rule 2).
        import asyncio

        from . import loop as loop_mod

        self.loop = loop_mod.new_event_loop()
        asyncio.set_event_loop(self.loop)
        super().init_process()

    def init_signals(self) -> None:
        for s in self.SIGNALS:
            _std_signal.signal(s, _std_signal.SIG_DFL)
        loop = self.loop
        loop.add_signal_handler(signal.SIGTERM, self._graceful, "SIGTERM")
        loop.add_signal_handler(signal.SIGQUIT, self._fast, "SIGQUIT")
        loop.add_signal_handler(signal.SIGINT, self._fast, "SIGINT")
        loop.add_signal_handler(signal.SIGUSR1, self._spawn, self.handle_usr1, signal.SIGUSR1, None)
        loop.add_signal_handler(signal.SIGWINCH, self.handle_winch, signal.SIGWINCH, None)
        # ABRT runs at once, in whatever is running: the arbiter sends it
        # because the loop stopped turning, so a loop callback would never run.
        _std_signal.signal(signal.SIGABRT, self.handle_abort)

    # -- serving -----------------------------------------------------------------------

    def run(self) -> None:
        cfg = self.cfg
        loop = self.loop
        server = self.server = _Server(self._listening_sockets(), self.wsgi, config=_config(cfg))
        if cfg.keepalive <= 0:
            server.keep_alive = False
        if cfg.max_requests > 0:
            server.max_requests = self.max_requests     # with gunicorn's jitter
        server.on_max_requests = self._max_requests_reached
        server.add_stop_callback(loop.stop)
        server.start()
        if self.reloader is not None and hasattr(self.reloader, "_callback"):
            # --reload: gunicorn's callback ends the process with sys.exit()
            # from the reloader's thread, a greenlet here, where that would
            # end only the greenlet.
            self.reloader._callback = self._reload  # noqa: SLF001 - gunicorn has no setter
        if self.log.access_log_enabled:
            server.after_request = self._access_log
        self._beat()
        try:
            loop.run_forever()
        finally:
            self.alive = False

    def _listening_sockets(self) -> list:
        # Plain stdlib sockets for the loop's acceptors (the arbiter's, made
        # after patching, are green objects): same fds, gunicorn's wrappers
        # give them up.
        std = _originals.module("socket")
        socks = []
        for s in self.sockets:
            raw = s.sock
            socks.append(std.socket(raw.family, raw.type, raw.proto, fileno=raw.detach()))
        return socks

    def _beat(self) -> None:
        # Rule 3. Also stop if the arbiter is gone (we were re-parented).
        if self.server is None or self.server.closed:
            return
        self.notify()
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            self._graceful("the arbiter is gone")
        interval = min(HEARTBEAT_MAX, self.timeout / 2) if self.timeout > 0 else HEARTBEAT_MAX
        self.loop.call_later(max(0.05, interval), self._beat)

    def _access_log(self, conn: Any, req: Any, resp: Any, env: Any) -> None:
        # gunicorn's own access log (--access-logfile, --access-logformat,
        # logconfig, syslog), called as its workers call it.
        if env is None:
            return
        took = datetime.timedelta(seconds=time.monotonic() - req.start)
        try:
            self.log.access(_LoggedResponse(resp), _LoggedRequest(req), env, took)
        except Exception:
            self.log.exception("Failed to write the access log")

    # -- stopping ----------------------------------------------------------------------

    def _graceful(self, why: str) -> None:
        self.alive = False
        server = self.server
        if server is None:          # not serving yet: nothing to drain
            sys.exit(0)
        if not server.draining:
            self.log.info("Worker %s: %s: finishing requests in flight (graceful timeout %gs)",
                          self.pid, why, self.cfg.graceful_timeout)
            server.begin_stop(self.cfg.graceful_timeout)

    def _fast(self, why: str) -> None:
        self.alive = False
        self._spawn(self._quit, why)

    def _quit(self, why: str) -> None:
        self.cfg.worker_int(self)    # a user hook: may block, so in a greenlet
        if self.server is not None:
            # From a loop callback: close() ends the cores, which are only
            # ever switched to from the loop (tgreen/wsgi/_cores.py, rule 1).
            self.loop.call_soon(self.server.close)
        else:
            sys.exit(0)

    def _reload(self, fname: str) -> None:
        self.log.info("Worker reloading: %s modified", fname)
        self.alive = False
        self._quit("reload")

    def _max_requests_reached(self) -> None:
        self.log.info("Autorestarting worker after current request.")
        self._graceful("max requests reached")

    def _spawn(self, fn: Any, *args: Any) -> None:
        from .greenlet import spawn

        spawn(fn, *args)

    def handle_abort(self, sig: int, frame: Any) -> None:
        self.alive = False
        try:
            self.cfg.worker_abort(self)
        finally:
            _flush_logs()
            if getcurrent().parent is None:
                # The main greenlet (the loop's own code): unwind normally,
                # so gunicorn's worker_exit hook runs.
                sys.exit(1)
            # A request's greenlet stuck in a loop: unwinding it would run
            # the app's handlers; the process is done.
            os._exit(1)


class _LoggedResponse:
    """What gunicorn's access log reads from a response."""

    __slots__ = ("headers", "response_length", "sent", "status")

    def __init__(self, resp: Any) -> None:
        self.status = str(resp.code)
        self.headers = resp.headers or []
        self.sent = self.response_length = resp.written


class _LoggedRequest:
    """What gunicorn's access log reads from a request: its header fields."""

    __slots__ = ("headers",)

    def __init__(self, req: Any) -> None:
        self.headers = [(k.decode("latin-1").upper(), v.decode("latin-1")) for k, v in req.headers]


class _Server(WSGIServer):
    """WSGIServer that gives each connection ``environ['gunicorn.socket']``."""

    def connection_made(self, conn: Any) -> None:
        raw = conn.transport.get_extra_info("socket")
        sock = None
        if raw is not None:
            try:
                sock = green_socket.socket(raw.family, raw.type, raw.proto, fileno=os.dup(raw.fileno()))
            except OSError:
                pass
        conn.environ["gunicorn.socket"] = sock
        super().connection_made(conn)

    def connection_lost(self, conn: Any) -> None:
        sock = conn.environ.get("gunicorn.socket")
        if sock is not None:
            sock.close()
        super().connection_lost(conn)


def _config(cfg: Any) -> Any:
    """tgreen's server options from gunicorn's settings."""
    from .wsgi.config import Config

    options: dict[str, Any] = {
        "cores": cfg.worker_connections,
        "workers": cfg.workers,
        "keepalive_timeout": max(0, cfg.keepalive),
        "graceful_timeout": cfg.graceful_timeout,
        "limit_request_line": cfg.limit_request_line,
        "limit_request_fields": cfg.limit_request_fields,
        "limit_request_field_size": cfg.limit_request_field_size,
        "forwarded_allow_ips": ",".join(cfg.forwarded_allow_ips),
        "backlog": cfg.backlog,
    }
    if cfg.is_ssl:
        options["certfile"] = cfg.certfile
        options["keyfile"] = cfg.keyfile
    return Config(**options)


def _flush_logs() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):    # exiting anyway
            stream.flush()
