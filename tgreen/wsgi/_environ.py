"""The PEP 3333 environ of one request.

``base_environ`` holds what is fixed per server and listener; the connection
adds REMOTE_ADDR/REMOTE_PORT once; ``build`` adds the per-request keys. ::

    env = build(server, conn, request)
    env["PATH_INFO"], env["QUERY_STRING"], env["wsgi.input"]

Rules of this file:

1. Strings are "bytes as latin-1" (PEP 3333): PATH_INFO is percent-decoded
   bytes decoded as latin-1, never UTF-8.
2. Two header fields whose names differ only in ``-``/``_`` would land on
   the same key; names with ``_`` are dropped or refused before this point
   (``underscore_headers``), so every HTTP_* key comes from one field name.
   Repeated fields are joined with ``,`` (``;`` for Cookie).
3. X-Forwarded-For/-Proto change REMOTE_ADDR and wsgi.url_scheme only for
   trusted peers (``forwarded_allow_ips``); conflicting scheme headers from a
   trusted peer are a 400, since one of them lies.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from ._errors import HTTPError

if TYPE_CHECKING:   # annotations only: these modules import this one
    from ._protocol import HttpProtocol, Request
    from .server import WSGIServer

__all__ = ["base_environ", "build"]

# Raw field name -> environ key. Bounded: a client inventing names must not
# grow it without end.
_KEYS: dict[bytes, str] = {}
_KEYS_MAX = 2048

_SECURE_SCHEME_HEADERS = {
    "HTTP_X_FORWARDED_PROTOCOL": "ssl",
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_SSL": "on",
}


def base_environ(server: WSGIServer, sockname: Any, scheme: str) -> dict:
    """Keys fixed for every request on one listener."""
    cfg = server.cfg
    if isinstance(sockname, tuple):
        name, port = sockname[0], str(sockname[1])
    else:  # unix socket path
        name = sockname if isinstance(sockname, str) else sockname.decode("latin-1", "replace")
        port = ""
    return {
        "SERVER_NAME": name,
        "SERVER_PORT": port,
        "SCRIPT_NAME": cfg.root_path,
        "SERVER_SOFTWARE": "tgreen",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": cfg.cores > 1,
        "wsgi.multiprocess": cfg.workers > 1,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": _file_wrapper(),
        "wsgi.input_terminated": True,
    }


def _key(name: bytes) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
            key = "HTTP_" + key
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        _KEYS[name] = key
    return key


def build(server: WSGIServer, conn: HttpProtocol, req: Request) -> dict:
    env = conn.environ.copy()
    url = req.url
    raw = url.decode("latin-1")
    # (int membership: ``37 in url`` is a memchr; ``b"%" in url`` costs far
    # more in CPython, it goes through the buffer protocol)
    if url[:1] == b"/" and 37 not in url and 35 not in url:  # no "%", no "#"
        path_info, _, query = raw.partition("?")
    else:
        path_info, query = _split_target(url)
    if env["SCRIPT_NAME"]:
        root = env["SCRIPT_NAME"]
        if path_info == root or path_info.startswith(root + "/"):
            path_info = path_info[len(root):]
    env["REQUEST_METHOD"] = req.method
    env["PATH_INFO"] = path_info
    env["QUERY_STRING"] = query
    env["RAW_URI"] = env["REQUEST_URI"] = raw
    env["SERVER_PROTOCOL"] = "HTTP/1.1" if req.version == "1.1" else "HTTP/1.0"
    env["wsgi.input"] = req.input
    keys = _KEYS
    for name, value in req.headers:
        key = keys.get(name)
        if key is None:
            key = _key(name)
        if key in env:
            if key[:5] == "HTTP_":
                env[key] += ("; " if key == "HTTP_COOKIE" else ",") + value.decode("latin-1")
                continue
        env[key] = value.decode("latin-1")
    if req.forwarded and conn.trusted:
        _forwarded(env)
    return env


def _split_target(url: bytes) -> tuple[str, str]:
    """(PATH_INFO, QUERY_STRING) of a target with %-escapes, a fragment, or
    not in origin-form."""
    if url[:1] != b"/":
        url = _origin_form(url)
    url = url.partition(b"#")[0]
    path, _, query = url.partition(b"?")
    if 37 in path:  # "%"
        path = unquote_to_bytes(path)
    return path.decode("latin-1"), query.decode("latin-1")


def _origin_form(url: bytes) -> bytes:
    """absolute-form (``http://host/p?q``) -> ``/p?q``; ``*`` and CONNECT's
    authority-form -> empty path."""
    i = url.find(b"://")
    if i < 0:
        return b""
    rest = url[i + 3:]
    for j, c in enumerate(rest):
        if c in b"/?#":
            rest = rest[j:]
            return rest if rest[:1] == b"/" else b"/" + rest
    return b"/"


def _forwarded(env: dict) -> None:
    xff = env.get("HTTP_X_FORWARDED_FOR")
    if xff:
        # The proxy appends the address it saw: the last entry is the one a
        # trusted proxy vouches for; earlier ones are client-supplied.
        addr = xff.rsplit(",", 1)[-1].strip()
        if addr:
            env["REMOTE_ADDR"] = addr
            env["REMOTE_PORT"] = "0"
    secure = None
    for key, on_value in _SECURE_SCHEME_HEADERS.items():
        v = env.get(key)
        if v is None:
            continue
        this = v.strip().lower() == on_value
        if key == "HTTP_X_FORWARDED_PROTO" and not this and v.strip().lower() != "http":
            raise HTTPError(400, "bad X-Forwarded-Proto")
        if secure is not None and secure != this:
            raise HTTPError(400, "conflicting scheme headers")
        secure = this
    if secure is not None:
        env["wsgi.url_scheme"] = "https" if secure else "http"


def _file_wrapper() -> type:
    from ._response import FileWrapper

    return FileWrapper
