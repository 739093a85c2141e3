"""Green name resolution: the system resolver, run in real OS threads.

``getaddrinfo`` and friends call the C library resolver (so /etc/hosts,
nsswitch and search domains behave exactly as without tgreen) in a thread of
``tgreen.threadpool``, blocking only the calling greenlet. Numeric addresses
never leave the calling thread: they need no lookup. ::

    from tgreen import dns
    dns.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
"""

from __future__ import annotations

import _socket
from typing import Any

from . import _originals
from .hub import current_hub_if_any
from .threadpool import get_default_pool

__all__ = ["getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
           "getnameinfo", "is_numeric_host"]

_std = _originals.module("socket")
_getaddrinfo = _std.getaddrinfo
_gethostbyname = _std.gethostbyname
_gethostbyname_ex = _std.gethostbyname_ex
_gethostbyaddr = _std.gethostbyaddr
_getnameinfo = _std.getnameinfo
_inet_pton = _socket.inet_pton
_AF_INET = _socket.AF_INET
_AF_INET6 = _socket.AF_INET6
_AI_NUMERICHOST = _socket.AI_NUMERICHOST
_NI_NUMERICHOST = _socket.NI_NUMERICHOST
_NoneType = type(None)


def is_numeric_host(host: Any, family: int = 0) -> bool:
    """True if ``host`` is an IPv4/IPv6 literal (no lookup needed)."""
    if not isinstance(host, str):
        return False
    if "%" in host:  # an IPv6 scope id is resolved by getaddrinfo itself
        host = host.split("%", 1)[0]
    for fam in ((_AF_INET, _AF_INET6) if not family else (family,)):
        try:
            _inet_pton(fam, host)
            return True
        except (OSError, ValueError):
            continue
    return False


def _in_thread(fn: Any, *args: Any) -> Any:
    if current_hub_if_any() is None:
        return fn(*args)  # a plain OS thread may block
    return get_default_pool().run(fn, *args)


def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                flags: int = 0) -> list:
    """``socket.getaddrinfo`` without blocking the loop."""
    if not isinstance(host, (str, bytes, _NoneType)) or not all(
            isinstance(a, int) for a in (family, type, proto, flags)):
        return _getaddrinfo(host, port, family, type, proto, flags)  # its own TypeError
    if host is None or (flags & _AI_NUMERICHOST) or is_numeric_host(host):
        return _getaddrinfo(host, port, family, type, proto, flags)
    if isinstance(host, bytes):
        host_s = host.decode("idna") if host else host
        if is_numeric_host(host_s):
            return _getaddrinfo(host, port, family, type, proto, flags)
    return _in_thread(_getaddrinfo, host, port, family, type, proto, flags)


def gethostbyname(hostname: str) -> str:
    """``socket.gethostbyname`` without blocking the loop."""
    if not isinstance(hostname, str) or is_numeric_host(hostname, _AF_INET):
        return _gethostbyname(hostname)
    return _in_thread(_gethostbyname, hostname)


def gethostbyname_ex(hostname: str) -> tuple:
    """``socket.gethostbyname_ex`` without blocking the loop."""
    if not isinstance(hostname, str):
        return _gethostbyname_ex(hostname)
    return _in_thread(_gethostbyname_ex, hostname)


def gethostbyaddr(ip_address: str) -> tuple:
    """``socket.gethostbyaddr`` without blocking the loop."""
    if not isinstance(ip_address, str):
        return _gethostbyaddr(ip_address)
    return _in_thread(_gethostbyaddr, ip_address)


def getnameinfo(sockaddr: tuple, flags: int) -> tuple:
    """``socket.getnameinfo`` without blocking the loop."""
    # Bad arguments fail at once, in this thread, exactly as the stdlib's.
    if (not isinstance(sockaddr, tuple) or not isinstance(flags, int)
            or (flags & _NI_NUMERICHOST and flags & _socket.NI_NUMERICSERV)):
        try:
            return _getnameinfo(sockaddr, flags)
        except BaseException:
            # Our frame rides along in the traceback; don't let it keep the
            # caller's argument alive (the C function would not).
            del sockaddr
            raise
    return _in_thread(_getnameinfo, sockaddr, flags)
