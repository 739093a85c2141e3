"""The access log: where it goes and what a line looks like (``--access-log-format``).

::

    tgreen-serve app.py --access-log -                       # CLF + request time in ms
    tgreen-serve app.py --access-log - --access-log-format \\
        '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'
    tgreen-serve app.py --access-log /var/log/app.jsonl --access-log-format json

Formats
-------
*Default*: the common log format plus the request time in milliseconds
(``127.0.0.1 - - [02/Dec/2026:14:52:56 +0000] "GET / HTTP/1.1" 200 14 0.210``).

*gunicorn's atoms*, as gunicorn documents them (its ``access_log_format``):
``h`` remote address, ``l`` ``-``, ``u`` user name (``REMOTE_USER`` or the
HTTP Basic user), ``t`` date in brackets, ``r`` request line, ``m`` method,
``U`` path without query, ``q`` query string, ``H`` protocol, ``s``
status, ``B`` response length, ``b`` response length or ``-``, ``f``
referer, ``a`` user agent, ``T`` / ``M`` / ``D`` request time in whole
seconds / milliseconds / microseconds, ``L`` in decimal seconds, ``p``
process ID (``<pid>``), ``{header}i`` request header, ``{header}o`` response
header, ``{variable}e`` WSGI environ variable. A missing value is ``-``.

*json*: one JSON object per line (JSON lines), fields named in ``json_line``.

Rules of this file:

1. A format is checked once, when the option is parsed (``check_format``);
   an unknown atom is a configuration error naming the option.
2. Client-supplied text (request line, headers, user) is escaped: ``"`` and
   ``\\`` get a backslash, control and non-ASCII bytes become ``\\xNN``, so a
   request cannot forge or split a log line.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # annotations only: that module imports this one
    from ._protocol import HttpProtocol

__all__ = ["ATOMS", "AccessLog", "check_format"]

#: Single-letter atoms (gunicorn's), with what they mean.
ATOMS = {
    "h": "remote address", "l": "'-'", "u": "user name", "t": "date of the request",
    "r": "request line", "m": "request method", "U": "URL path without query string",
    "q": "query string", "H": "protocol", "s": "status", "B": "response length",
    "b": "response length or '-'", "f": "referer", "a": "user agent",
    "T": "request time in seconds", "M": "request time in milliseconds",
    "D": "request time in microseconds", "L": "request time in decimal seconds",
    "p": "process ID",
}
_BRACED = re.compile(r"\{([^{}]+)\}([ioe])\Z")
_UNSAFE = re.compile(r'[\x00-\x1f"\\\x7f-\U0010ffff]')


def _escape_char(m: re.Match) -> str:
    ch = m.group()
    if ch in '"\\':
        return "\\" + ch
    # Header text is decoded as latin-1: its bytes come back as they were sent.
    raw = ch.encode("latin-1") if ord(ch) < 256 else ch.encode("utf-8", "surrogateescape")
    return "".join(f"\\x{b:02x}" for b in raw)


def _safe(s: str) -> str:
    return _UNSAFE.sub(_escape_char, s) if _UNSAFE.search(s) else s


class _Probe:
    """Stands in for the atoms while a format is checked (rule 1)."""

    def __getitem__(self, key: str) -> str:
        if key in ATOMS or _BRACED.match(key):
            return "-"
        raise KeyError(key)


def check_format(name: str, value: Any) -> str | None:
    """The parser of the ``access_log_format`` option."""
    from .config import ConfigError

    if value is None or value == "":
        return None
    fmt = str(value)
    if fmt.lower() == "json":
        return "json"
    try:
        fmt % _Probe()
    except KeyError as e:
        raise ConfigError(f"tgreen: {name}: unknown atom %({e.args[0]})s; use gunicorn's atoms "
                          f"({', '.join(ATOMS)}, {{header}}i, {{header}}o, {{variable}}e) "
                          "or 'json'") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"tgreen: {name}: bad format {fmt!r} ({e}); write atoms as %(h)s") from None
    return fmt


class _Atoms:
    """The atoms of one request, computed only when the format asks."""

    __slots__ = ("conn", "d", "env", "log", "req", "resp")

    def __init__(self, log: AccessLog, conn: HttpProtocol, req: Any, resp: Any, env: Any, d: float) -> None:
        self.log, self.conn, self.req, self.resp, self.env, self.d = log, conn, req, resp, env, d

    def environ(self) -> dict:
        env = self.env
        if env is None:
            env = self.conn.environ if self.conn is not None else {}
        return env

    def __getitem__(self, key: str) -> str:
        fn = _ATOM_FNS.get(key)
        if fn is not None:
            v = fn(self)
        else:
            m = _BRACED.match(key)
            if m is None:
                return "-"
            name, kind = m.group(1), m.group(2)
            if kind == "i":
                v = _request_header(self.req, name)
            elif kind == "o":
                v = _response_header(self.resp, name)
            else:
                env = self.environ()
                v = env.get(name, env.get(name.upper()))
                v = None if v is None else str(v)
        return "-" if v is None or v == "" else v


def _request_header(req: Any, name: str) -> str | None:
    want = name.lower().encode("latin-1", "replace")
    vals = [v for k, v in getattr(req, "headers", ()) if k.lower() == want]
    return _safe(b",".join(vals).decode("latin-1")) if vals else None


def _response_header(resp: Any, name: str) -> str | None:
    want = name.lower()
    vals = [v for k, v in (getattr(resp, "headers", None) or ()) if k.lower() == want]
    return _safe(",".join(vals)) if vals else None


def _user(a: _Atoms) -> str | None:
    env = a.environ()
    user = env.get("REMOTE_USER")
    if user:
        return _safe(str(user))
    auth = env.get("HTTP_AUTHORIZATION", "")
    if auth[:6].lower() == "basic ":
        try:
            user = base64.b64decode(auth[6:].strip(), validate=True).decode("latin-1").split(":", 1)[0]
        except ValueError:
            return None
        return _safe(user)
    return None


def _request_line(a: _Atoms) -> str:
    req = a.req
    return _safe(f"{req.method} {req.url.decode('latin-1')} HTTP/{req.version}")


def _size(a: _Atoms) -> int:
    return a.resp.written


_ATOM_FNS = {
    "h": lambda a: a.environ().get("REMOTE_ADDR") or None,
    "l": lambda a: "-",
    "u": _user,
    "t": lambda a: a.log.clf_time(),
    "r": _request_line,
    "m": lambda a: _safe(a.req.method),
    "U": lambda a: _safe(a.env["PATH_INFO"]) if a.env else _safe(a.req.url.decode("latin-1").split("?")[0]),
    "q": lambda a: _safe(a.environ().get("QUERY_STRING", "")),
    "H": lambda a: f"HTTP/{a.req.version}",
    "s": lambda a: str(a.resp.code),
    "B": lambda a: str(_size(a)),
    "b": lambda a: str(_size(a)) if _size(a) else "-",
    "f": lambda a: _safe(a.environ().get("HTTP_REFERER", "")),
    "a": lambda a: _safe(a.environ().get("HTTP_USER_AGENT", "")),
    "T": lambda a: str(int(a.d)),
    "M": lambda a: str(int(a.d * 1e3)),
    "D": lambda a: str(int(a.d * 1e6)),
    "L": lambda a: f"{a.d:.6f}",
    "p": lambda a: f"<{os.getpid()}>",
}


class _Refused:
    """Stands in for the request and response of a request refused before
    the app (malformed, too large, too slow)."""

    method = "-"
    url = b"-"
    version = "1.1"
    headers: tuple = ()
    written = 0

    def __init__(self, status: int) -> None:
        self.code = status


class AccessLog:
    """Writes one line per request to the ``tgreen.access`` logger.
    Called as ``log(conn, req, resp, env, duration)``; ``refused(conn, status)``."""

    def __init__(self, target: str, fmt: str | None) -> None:
        self.logger = _access_logger(target)
        self.fmt = fmt
        self._second = -1
        self._clf = ""
        self._iso_second = -1
        self._iso = ("", "")
        self.pid = os.getpid()   # made in the worker, after the fork
        if fmt is None:
            self.line = self._default
        elif fmt == "json":
            self.line = self._json
        else:
            self.line = self._atoms

    def __call__(self, conn: HttpProtocol, req: Any, resp: Any, env: Any, duration: float) -> None:
        self.logger.info(self.line(conn, req, resp, env, duration))

    def refused(self, conn: HttpProtocol, status: int) -> None:
        r = _Refused(status)
        self.logger.info(self.line(conn, r, r, None, 0.0))

    def clf_time(self) -> str:
        now = time.time()
        sec = int(now)
        if sec != self._second:
            self._second = sec
            self._clf = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now))
        return self._clf

    # -- the formats --------------------------------------------------------------------

    def _default(self, conn: HttpProtocol, req: Any, resp: Any, env: Any, d: float) -> str:
        addr = (env if env is not None else conn.environ).get("REMOTE_ADDR") or "-"
        size = resp.written
        return (f'{addr} - - {self.clf_time()} "{_request_line_of(req)}" '
                f'{resp.code} {size if size else "-"} {d * 1000:.3f}')

    def _atoms(self, conn: HttpProtocol, req: Any, resp: Any, env: Any, d: float) -> str:
        return self.fmt % _Atoms(self, conn, req, resp, env, d)  # type: ignore[operator]

    def _json(self, conn: HttpProtocol, req: Any, resp: Any, env: Any, d: float) -> str:
        e = env if env is not None else conn.environ
        url = req.url.decode("latin-1")
        if env is not None:
            path, query = e.get("PATH_INFO", ""), e.get("QUERY_STRING", "")
        else:
            path, _, query = url.partition("?")
        auth = "HTTP_AUTHORIZATION" in e or "REMOTE_USER" in e
        line = {
            "time": self.iso_time(),
            "remote_addr": e.get("REMOTE_ADDR") or None,
            "user": _user(_Atoms(self, conn, req, resp, env, d)) if auth else None,
            "method": req.method,
            "url": url,
            "path": path,
            "query": query,
            "protocol": f"HTTP/{req.version}",
            "status": resp.code,
            "bytes": resp.written,
            "duration_ms": round(d * 1000, 3),
            "referer": e.get("HTTP_REFERER"),
            "user_agent": e.get("HTTP_USER_AGENT"),
            "pid": self.pid,
        }
        return _dumps(line)

    def iso_time(self) -> str:
        """ISO 8601 local time with milliseconds; the part up to the second is
        formatted once a second."""
        now = time.time()
        sec = int(now)
        if sec != self._iso_second:
            self._iso_second = sec
            dt = datetime.datetime.fromtimestamp(sec).astimezone()
            self._iso = (dt.strftime("%Y-%m-%dT%H:%M:%S"), dt.strftime("%z"))
        head, tz = self._iso
        return f"{head}.{int((now - sec) * 1000):03d}{tz[:3]}:{tz[3:]}"


_dumps = json.JSONEncoder(ensure_ascii=True).encode


def _request_line_of(req: Any) -> str:
    return _safe(f"{req.method} {req.url.decode('latin-1', 'replace')} HTTP/{req.version}")


def _access_logger(target: str) -> logging.Logger:
    logger = logging.getLogger("tgreen.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger
