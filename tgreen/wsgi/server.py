"""``WSGIServer``: listeners, connections, cores, timeouts and shutdown.

One server runs on the hub's loop of the thread that starts it. ::

    from tgreen.wsgi import WSGIServer

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, World!\\n"]

    WSGIServer(("127.0.0.1", 8000), app, cores=100).serve_forever()

This module owns what is shared by every connection of a server: the
acceptors (paused while every core is busy), the set of live connections and
the sweep that enforces their deadlines once per tick, the cached ``Date``
header, the access log, and graceful shutdown (stop accepting, let requests
in flight finish, close idle keep-alive connections, then close the rest
after ``graceful_timeout``).
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import sys
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import greenlet

from .. import _originals
from ..event import Event
from ..hub import get_hub
from . import _timeout, listen
from ._cores import Cores
from ._environ import base_environ
from ._protocol import LINGER, HttpProtocol
from .config import Config, parse_bind

__all__ = ["WSGIServer"]

log = logging.getLogger("tgreen.wsgi")

_std_socket = _originals.module("socket")


class _Listener:
    """One listening socket, its acceptor and its environ base."""

    __slots__ = ("sock", "owned", "acceptor", "environ", "name")

    def __init__(self, sock: Any, owned: bool) -> None:
        self.sock = sock
        self.owned = owned
        self.acceptor: Any = None
        self.environ: dict = {}
        self.name = listen.describe(sock)


class WSGIServer:
    """A WSGI server with ``cores`` green cores on the current thread's loop.

    ``listener`` is a bound listening socket, a ``(host, port)`` tuple, a bind
    string (``"HOST:PORT"``, ``"[::1]:PORT"``, ``"unix:PATH"``, ``"fd://N"``), a
    list of those, or None to use the ``bind`` option. Every other keyword is
    an option of ``tgreen.wsgi.config.OPTIONS`` (timeouts, limits, logging).

    ``start()`` begins serving on the loop and returns; ``serve_forever()``
    starts and blocks the calling greenlet until ``stop()``/``close()``;
    ``stop(timeout)`` shuts down gracefully and blocks until done.
    """

    def __init__(self, listener: Any, application: Callable, cores: int | None = None,
                 **options: Any) -> None:
        if cores is not None:
            options["cores"] = cores
        base = options.pop("config", None)
        self.cfg = cfg = base.replace(**options) if base is not None else Config(**options)
        self.app = application
        self._listen_specs = listener
        self.listeners: list[_Listener] = []
        self.hub: Any = None
        self.loop: Any = None
        self.cores: Any = None
        self.context: contextvars.Context = contextvars.copy_context()
        self.connections: set[HttpProtocol] = set()
        self.started = False
        self.draining = False
        self.closed = False
        self.requests = 0
        #: False: every response ends its connection (gunicorn's --keep-alive 0).
        #: Set before start().
        self.keep_alive = True
        #: Called once ``max_requests`` is reached (workers recycle themselves).
        self.on_max_requests: Callable[[], Any] | None = None
        self._stopped = Event()
        self._stop_timer: Any = None
        self._graceful_s = cfg.graceful_timeout
        self._stop_callbacks: list[Callable[[], Any]] = []
        self._accepting = True
        self._sweep_handle: Any = None
        self._trusted_cache: dict[str, bool] = {}
        self._second = 0
        self.date_str = ""
        self.date_line = b""
        #: The access log (``accesslog.AccessLog``), if any.
        self.access_log: Any = None
        #: ``metrics.Recorder`` when metrics are on (``metrics_bind``), else None.
        self.metrics: Any = None
        self.metrics_server: Any = None
        #: Called as ``after_request(conn, req, resp, environ)`` once each app
        #: request is answered (metrics, access log); None when nothing observes.
        self.after_request: Callable[..., Any] | None = None
        self.max_requests = cfg.max_requests
        big = sys.maxsize
        self.limits = (cfg.limit_request_line or big, cfg.limit_request_field_size or big,
                       cfg.limit_request_fields or big, _max_head_bytes(cfg))
        self._update_date(time.time())
        self._bind()

    # -- listeners ----------------------------------------------------------------------

    def _bind(self) -> None:
        specs = self._listen_specs
        if specs is None:
            specs = list(self.cfg.bind)
        elif isinstance(specs, (str, tuple)) or hasattr(specs, "fileno"):
            specs = [specs]
        for spec in specs:
            if hasattr(spec, "fileno") and hasattr(spec, "accept"):
                sock = spec
                sock.setblocking(False)
                self.listeners.append(_Listener(sock, owned=False))
                continue
            if isinstance(spec, tuple) and spec and spec[0] not in ("tcp", "unix", "fd"):
                parsed = ("tcp", spec[0], int(spec[1]))   # a (host, port) address
            else:
                parsed = parse_bind("bind", spec)
            self.listeners.append(_Listener(listen.bind(parsed, self.cfg.backlog), owned=True))

    @property
    def addresses(self) -> list:
        """The bound addresses (``getsockname()`` of each listener)."""
        return [lst.sock.getsockname() for lst in self.listeners]

    @property
    def address(self) -> Any:
        return self.addresses[0]

    # -- start / serve -------------------------------------------------------------------

    def start(self) -> None:
        """Start serving on this thread's loop (it need not be running yet)."""
        if self.started:
            return
        self.started = True
        cfg = self.cfg
        self.hub = get_hub()
        self.loop = loop = self.hub.loop
        self.cores = Cores(self, cfg.cores)
        self.context = contextvars.copy_context()
        if cfg.access_log:
            from .accesslog import AccessLog

            self.access_log = AccessLog(cfg.access_log, cfg.access_log_format)
        if cfg.metrics_bind and self.metrics is None:
            from . import metrics

            metrics.attach(self)
        if self.metrics is not None:
            self.after_request = self.metrics.make_hook(self.access_log)
        elif self.access_log is not None:
            access = self.access_log

            def after_request(conn: Any, req: Any, resp: Any, env: Any) -> None:
                access(conn, req, resp, env, time.monotonic() - req.start)
            self.after_request = after_request
        ssl_ctx = _ssl_context(cfg) if cfg.certfile else None
        scheme = "https" if ssl_ctx is not None else "http"
        for lst in self.listeners:
            lst.environ = base_environ(self, lst.sock.getsockname(), scheme)
            factory = _factory(self, lst)
            lst.acceptor = listen.make_acceptor(loop, lst.sock, factory, self._accept_error,
                                                 ssl=ssl_ctx, backlog=cfg.backlog)
            lst.acceptor.resume()
        self._sweep_handle = loop.call_later(self._sweep_interval(), self._sweep)
        for lst in self.listeners:
            log.info("tgreen: serving on %s with %d cores", lst.name, cfg.cores)
        if self.metrics is not None:
            from . import metrics

            metrics.start(self)

    def serve_forever(self) -> None:
        """Start, then block this greenlet until the server is stopped."""
        self.start()
        self._stopped.wait()

    # -- the connections' side ------------------------------------------------------------

    def connection_made(self, conn: HttpProtocol) -> None:
        self.connections.add(conn)
        if self.draining:
            conn.drain()

    def connection_lost(self, conn: HttpProtocol) -> None:
        self.connections.discard(conn)
        if self.draining:
            self._check_drained()

    def pause_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            for lst in self.listeners:
                if lst.acceptor is not None:
                    lst.acceptor.pause()

    def resume_accepting(self) -> None:
        if not self._accepting and not self.draining and not self.closed:
            self._accepting = True
            for lst in self.listeners:
                if lst.acceptor is not None:
                    lst.acceptor.resume()

    def core_idle(self) -> None:
        self._check_drained()

    def max_requests_reached(self) -> None:
        if self.on_max_requests is not None:
            self.loop.call_soon(self.on_max_requests)

    def is_trusted(self, ip: str) -> bool:
        cache = self._trusted_cache
        v = cache.get(ip)
        if v is None:
            allow = self.cfg.forwarded_allow_ips
            if allow == ("*",):
                v = True
            else:
                try:
                    addr = ipaddress.ip_address(ip.split("%", 1)[0])
                except ValueError:
                    v = False
                else:
                    if addr.version == 6 and addr.ipv4_mapped is not None:
                        addr = addr.ipv4_mapped
                    v = any(addr in net for net in allow)
            if len(cache) > 4096:
                cache.clear()
            cache[ip] = v
        return v

    def _accept_error(self, exc: BaseException) -> None:
        log.error("tgreen: accept failed: %s", exc)

    # -- the sweep: deadlines, Date -------------------------------------------------------

    def _sweep_interval(self) -> float:
        cfg = self.cfg
        timeouts = [t for t in (cfg.keepalive_timeout, cfg.header_timeout, cfg.body_timeout, cfg.timeout,
                                LINGER) if t]
        return max(0.02, min(1.0, min(timeouts) / 4))

    def _sweep(self) -> None:
        if self.closed:
            return
        self._sweep_handle = self.loop.call_later(self._sweep_interval(), self._sweep)
        now = time.time()
        if int(now) != self._second:
            self._update_date(now)
        mono = time.monotonic()
        expired = [c for c in self.connections if c.deadline and c.deadline <= mono]
        for conn in expired:
            try:
                conn.on_deadline()
            except Exception as e:
                log.error("tgreen: error timing out %r", conn, exc_info=e)
        if self.cfg.timeout:
            _timeout.expire(self, mono)

    def _update_date(self, now: float) -> None:
        self._second = int(now)
        d = formatdate(now, usegmt=True)
        self.date_str = f"Date: {d}\r\n"
        self.date_line = self.date_str.encode("latin-1")

    # -- logging ----------------------------------------------------------------------------

    def log_refused(self, conn: HttpProtocol, status: int) -> None:
        """A request refused before the app (malformed, too large, too slow)."""
        log.debug("tgreen: refused a request from %s with %d", conn.peer, status)
        if self.metrics is not None:
            self.metrics.refused(status)
        if self.access_log is not None:
            self.access_log.refused(conn, status)

    # -- shutdown --------------------------------------------------------------------------

    def begin_stop(self, timeout: float | None = None) -> None:
        """Start a graceful stop without blocking (safe from loop callbacks
        and signal handlers): take what already waits in the kernel's accept
        queue, stop accepting, close idle keep-alive connections, let the
        others finish their requests; ``close()`` when all are done or after
        ``timeout`` seconds (default: the ``graceful_timeout`` option)."""
        if self.draining or not self.started:
            if not self.started:
                self.close()
            return
        self.draining = True
        for lst in self.listeners:
            acc = lst.acceptor
            if acc is not None:
                try:
                    acc.accept_pending()
                except OSError:
                    pass
                acc.close()
            if lst.owned:
                lst.sock.close()
        self._accepting = False
        if timeout is None:
            timeout = self.cfg.graceful_timeout
        self._graceful_s = timeout
        self._stop_timer = self.loop.call_later(timeout, self._graceful_expired) if timeout else None
        for conn in list(self.connections):
            conn.drain()
        self._check_drained()

    def _graceful_expired(self) -> None:
        self._close(f"graceful timeout ({self._graceful_s:g} s) expired")

    def _check_drained(self) -> None:
        if self.draining and not self.closed and not self.connections:
            # Re-checked a turn later: connections accepted by begin_stop's last
            # accept() are made (connection_made) by callbacks already queued.
            self.loop.call_soon(self._close_if_drained)

    def _close_if_drained(self) -> None:
        if not self.connections:
            self.close()

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully and block this greenlet until done: wait up to
        ``timeout`` (default: the ``graceful_timeout`` option) for requests in
        flight, then close whatever is left."""
        self.begin_stop(timeout)
        self._stopped.wait()

    def add_stop_callback(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` (from the loop) once the server is closed."""
        self._stop_callbacks.append(fn)
        if self.closed:
            self.loop.call_soon(fn)

    def close(self) -> None:
        """Stop now: close listeners and connections, end the cores."""
        self._close("stopping now")

    def _close(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.draining = True
        for h in (self._sweep_handle, self._stop_timer):
            if h is not None:
                h.cancel()
        for lst in self.listeners:
            if lst.acceptor is not None:
                lst.acceptor.close()
            if lst.owned:
                try:
                    lst.sock.close()
                except OSError:
                    pass
        _timeout.log_cut(self, why)
        for conn in list(self.connections):
            conn.abort()
        if self.cores is not None:
            self.cores.close()
            if self.cores.cores:
                # Requests still running end with GreenletExit, so their
                # finally blocks and the iterables' close() run. From a loop
                # callback at once; from a core (close() called by an app),
                # on the next turn, as no greenlet can kill itself.
                if greenlet.getcurrent() is self.hub.root:
                    self.cores.kill_busy()
                else:
                    self.loop.call_soon(self.cores.kill_busy)
        self._stopped.set()
        for fn in self._stop_callbacks:
            if self.loop is not None:
                self.loop.call_soon(fn)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def __repr__(self) -> str:
        names = ", ".join(lst.name for lst in self.listeners)
        return f"<WSGIServer {names} cores={self.cfg.cores}>"


def _factory(server: WSGIServer, listener: _Listener) -> Callable[[], HttpProtocol]:
    def factory() -> HttpProtocol:
        return HttpProtocol(server, listener)
    return factory


def _max_head_bytes(cfg: Config) -> int:
    """What a request line plus headers may total before the parser sees it."""
    line = cfg.limit_request_line or 65536
    fields = cfg.limit_request_fields or 1000
    size = cfg.limit_request_field_size or 65536
    return line + 4 + fields * (size + 2) + 2


def _ssl_context(cfg: Config) -> Any:
    # A server context: TLS 1.2+, no renegotiation, ALPN http/1.1, and no
    # system CA store to load (create_default_context's ~30 ms of CPU buys a
    # server nothing).
    from ..ssl import server_context

    assert cfg.certfile is not None   # called only when TLS is on
    return server_context(cfg.certfile, cfg.keyfile)


def serve(listener: Any, application: Callable, **options: Any) -> None:
    """Shortcut: ``WSGIServer(listener, application, **options).serve_forever()``."""
    WSGIServer(listener, application, **options).serve_forever()

