"""Refusals: requests the server answers itself with a 4xx/5xx status.

``HTTPError`` is raised by parser callbacks and environ checks; the protocol
answers it with ``error_response`` and closes the connection. ::

    raise HTTPError(431)              # "431 Request Header Fields Too Large"
    error_response(400, date_line)    # the full response bytes
"""

from __future__ import annotations

from http import HTTPStatus

__all__ = ["HTTPError", "error_response"]


class HTTPError(Exception):
    """A request the server refuses before (or instead of) the app."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or HTTPStatus(status).phrase)
        self.status = status


_cache: dict[int, tuple[bytes, bytes]] = {}


def error_response(status: int, date: bytes = b"") -> bytes:
    """A complete ``Connection: close`` response for ``status``."""
    parts = _cache.get(status)
    if parts is None:
        phrase = HTTPStatus(status).phrase
        body = f"{status} {phrase}\n".encode()
        head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode()
        parts = _cache[status] = (head, b"\r\n" + body)
    return parts[0] + date + parts[1]
