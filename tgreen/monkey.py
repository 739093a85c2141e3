"""Make the blocking standard library cooperative. ::

    import tgreen.monkey
    tgreen.monkey.patch_all()      # first thing in the program

    import urllib.request          # now runs greenly
    ...

Rules of this file:

1. Patching replaces attributes of the stdlib module objects in place
   (``socket.socket = tgreen.socket.socket``), so every module that did
   ``import socket`` sees the green version. Modules that copied a name
   earlier (``from socket import socket``) keep the original: patching warns
   about each such module, naming it.
2. asyncio and Tornado must keep the real modules: their loop, self-pipe,
   selector and executor threads are the machinery greenlets wait *on*.
   After patching, their references to ``socket``, ``select``, ``selectors``
   are rebound to unpatched snapshots (``tgreen._originals``).
3. Patching is idempotent; ``get_original`` always answers with the
   stdlib's own object.

Each ``patch_<x>()`` beyond socket/dns/time/select/selectors lives with its
green module (``tgreen/ssl.py``, ``threading.py``, ``queue.py``,
``subprocess.py``, ``os.py``, ``signal.py``): that module lists what it
replaces in ``__implements__`` or does it in ``__patch__(patch)``.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Iterable

from . import _originals

__all__ = [
    "patch_all", "patch_socket", "patch_dns", "patch_time", "patch_select", "patch_selectors",
    "patch_ssl", "patch_thread", "patch_queue", "patch_subprocess", "patch_os", "patch_signal",
    "patch_asyncio", "patch_psycopg",
    "is_module_patched", "is_object_patched", "get_original", "MonkeyPatchWarning",
]


class MonkeyPatchWarning(RuntimeWarning):
    """Patching happened too late for some already-imported code."""


# (module name, attribute) -> original object
_patched: dict[tuple[str, str], Any] = {}
_patched_modules: set[str] = set()

# Modules that must keep the real stdlib (rule 2); prefixes.
_LOOP_MODULES = ("asyncio", "tornado", "uvloop", "concurrent.futures")
# Modules that legitimately hold original objects.
_EXEMPT_PREFIXES = ("tgreen", "asyncio", "tornado", "uvloop", "concurrent", "importlib",
                    "_pytest", "pytest", "gevent", "greenlet", "wrapt")


def is_module_patched(name: str) -> bool:
    """True once ``patch_<name>()`` has run (name as in ``patch_all``'s flags
    or a stdlib module name)."""
    return name in _patched_modules


def is_object_patched(modname: str, name: str) -> bool:
    """True if ``modname.name`` has been replaced by tgreen."""
    return (modname, name) in _patched


def get_original(modname: str, name: str | Iterable[str]) -> Any:
    """The stdlib's own ``modname.name`` (a list for several names), patched or not."""
    if not isinstance(name, str):
        return [get_original(modname, n) for n in name]
    try:
        return _patched[(modname, name)]
    except KeyError:
        return getattr(_originals.module(modname), name)


def _patch(modname: str, items: dict[str, Any]) -> None:
    mod = importlib.import_module(modname)
    stale: dict[int, str] = {}
    for name, green in items.items():
        key = (modname, name)
        if key in _patched:
            continue
        original = getattr(_originals.module(modname), name)
        _patched[key] = original
        setattr(mod, name, green)
        stale[id(original)] = name
    if stale:
        _warn_stale_copies(modname, stale)


def _warn_stale_copies(modname: str, stale: dict[int, str]) -> None:
    """Warn about modules that copied a to-be-patched object by name before
    patching (``from time import sleep``): they keep the blocking one."""
    stdlib = getattr(sys, "stdlib_module_names", ())
    for mname, m in list(sys.modules.items()):
        # The stdlib's own copies are each patch's business (ssl: patch_ssl).
        if (m is None or mname == modname or mname.startswith(_EXEMPT_PREFIXES)
                or mname.partition(".")[0] in stdlib):
            continue
        d = getattr(m, "__dict__", None)
        if not d or d.get("__tgreen_original__"):
            continue
        for attr, value in list(d.items()):
            if id(value) in stale and not attr.startswith("__"):
                if type(value).__name__ == "module":
                    continue
                warnings.warn(
                    f"tgreen.monkey: {mname}.{attr} is {modname}.{stale[id(value)]} "
                    f"imported before patching; {mname} keeps the blocking version. "
                    "Call tgreen.monkey.patch_all() before importing it.",
                    MonkeyPatchWarning, stacklevel=4)


def _protect_loop_modules() -> None:
    """Rule 2: point asyncio's and Tornado's module references at originals."""
    import asyncio  # noqa: F401 - make sure the loop modules exist
    import asyncio.base_events  # noqa: F401
    import asyncio.selector_events  # noqa: F401
    import asyncio.unix_events  # noqa: F401
    import tornado.ioloop  # noqa: F401
    import tornado.iostream  # noqa: F401
    import tornado.netutil  # noqa: F401
    import tornado.platform.asyncio  # noqa: F401
    import tornado.tcpclient  # noqa: F401
    import tornado.tcpserver  # noqa: F401

    # ssl stays live for them: they use ssl.MemoryBIO/SSLObject, never a green
    # socket, and only isinstance-check SSLSocket (the green class subclasses
    # the original). A snapshot would also hide a later replacement of
    # ssl.create_default_context from asyncio (mock.patch in asyncio's tests).
    modnames = {m for m, _ in _patched} - {"ssl"}
    for mname, m in list(sys.modules.items()):
        if m is None or not mname.startswith(_LOOP_MODULES):
            continue
        d = m.__dict__
        for attr, value in list(d.items()):
            if type(value).__name__ != "module":
                continue
            vname = getattr(value, "__name__", None)
            if vname in modnames and not getattr(value, "__tgreen_original__", False):
                if sys.modules.get(vname) is value:
                    d[attr] = _originals.module(vname)


def _after_patch(flag: str) -> None:
    _patched_modules.add(flag)
    _protect_loop_modules()


def patch_socket() -> None:
    """Replace the socket class and the socket helpers with green ones."""
    from . import socket as gsocket

    _patch("socket", {n: getattr(gsocket, n) for n in gsocket.__implements__})
    _after_patch("socket")


def patch_dns() -> None:
    """Make ``socket.getaddrinfo`` & co. resolve in threads, off the loop."""
    from . import socket as gsocket

    _patch("socket", {n: getattr(gsocket, n) for n in gsocket.__dns__})
    _after_patch("dns")


def _green_in_green_threads(green_fn: Any) -> Any:
    """A wrapt wrapper calling ``green_fn`` where a hub may block (the main
    thread, threads that use tgreen) and the original in plain OS threads."""
    import wrapt

    from .hub import current_hub_if_any

    @wrapt.decorator
    def dispatch(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if current_hub_if_any() is None:
            return wrapped(*args, **kwargs)
        return green_fn(*args, **kwargs)

    return dispatch


def patch_time() -> None:
    """Make ``time.sleep`` green."""
    from .sleep import sleep

    original = _originals.get("time", "sleep")
    _patch("time", {"sleep": _green_in_green_threads(sleep)(original)})
    _after_patch("time")


def patch_select() -> None:
    """Replace ``select.select``, ``select.poll`` and ``select.epoll``."""
    from . import select as gselect

    _patch("select", {n: getattr(gselect, n) for n in gselect.__implements__})
    _after_patch("select")


def patch_selectors() -> None:
    """Replace the ``selectors`` classes (``DefaultSelector`` included)."""
    from . import selectors as gselectors

    _patch("selectors", {n: getattr(gselectors, n) for n in gselectors.__implements__})
    _after_patch("selectors")


def patch_asyncio() -> None:
    """Let a loop that asyncio creates inside a greenlet (``asyncio.run`` in
    a greenlet) wait through the hub instead of blocking the thread: new
    loops get ``tgreen.selectors.LoopSelector``. Loops that are not run in
    a greenlet behave as before; tgreen's hub loops are not affected."""
    import asyncio.selector_events

    from . import selectors as gselectors
    from ._asyncio_state import install

    if is_module_patched("asyncio"):
        return
    asyncio.selector_events.selectors = gselectors.asyncio_selectors_module()  # type: ignore[attr-defined]
    install()
    _patched_modules.add("asyncio")


def patch_psycopg() -> None:
    """Make psycopg2 and psycopg 3 wait on the hub (``tgreen.psycopg``), now
    if they are imported, else as soon as they are.

    Both drivers are libpq in C: patching the socket module does not reach
    them, and psycopg 3's C build waits in C. A post-import hook (wrapt's)
    installs the green waits when the driver is first imported, so an app
    that never imports tgreen (Django under tgreen-serve or the gunicorn
    worker) gets green queries without importing anything in a given order.
    psycopg2 with a wait callback refuses ``COPY`` (``copy_from``...) and
    large objects; ``patch_all(psycopg=False)`` leaves the drivers alone.
    """
    import wrapt

    if is_module_patched("psycopg"):
        return

    def green_psycopg2(module: Any) -> None:
        from .psycopg import make_psycopg2_green

        make_psycopg2_green()

    def green_psycopg(module: Any) -> None:
        from .psycopg import make_psycopg_green

        make_psycopg_green()

    wrapt.register_post_import_hook(green_psycopg2, "psycopg2")
    wrapt.register_post_import_hook(green_psycopg, "psycopg")
    _patched_modules.add("psycopg")


def _patch_from(flag: str, modname: str, green_modname: str) -> None:
    """Patch stdlib ``modname`` from green module ``tgreen.<green_modname>``.

    The green module either lists the names it replaces in ``__implements__``
    or, when patching takes more than replacing attributes (threading's
    main-thread bookkeeping, say), provides ``__patch__(patch)``, called with
    this module's ``_patch`` so originals are still recorded in one place.
    """
    green = importlib.import_module(f"tgreen.{green_modname}")
    custom = getattr(green, "__patch__", None)
    if custom is not None:
        custom(_patch)
    else:
        _patch(modname, {n: getattr(green, n) for n in green.__implements__})
    _after_patch(flag)


def patch_ssl() -> None:
    """Make ``ssl`` green: contexts created after this wrap green sockets."""
    _patch_from("ssl", "ssl", "ssl")


def patch_thread() -> None:
    """Make ``threading``/``_thread`` green: threads become greenlets."""
    _patch_from("thread", "threading", "threading")


def patch_queue() -> None:
    """Make ``queue`` green."""
    _patch_from("queue", "queue", "queue")


def patch_subprocess() -> None:
    """Make ``subprocess`` green (waits and pipes)."""
    _patch_from("subprocess", "subprocess", "subprocess")


def patch_os() -> None:
    """Make the blocking ``os`` calls (``waitpid``, pipe reads) green."""
    _patch_from("os", "os", "os")


def patch_signal() -> None:
    """Run ``signal.signal`` handlers in a greenlet on the loop."""
    _patch_from("signal", "signal", "signal")


def patch_all(socket: bool = True, dns: bool = True, time: bool = True, select: bool = True,
              selectors: bool = True, ssl: bool = True, thread: bool = True, queue: bool = True,
              subprocess: bool = True, os: bool = True, signal: bool = True,
              asyncio: bool = True, psycopg: bool = True) -> None:
    """Patch every supported module; call it first thing in the program.

    Each flag turns one ``patch_<name>()`` on or off. With ``thread=True``
    ``threading.Thread`` runs as a greenlet; asyncio's, Tornado's and
    ``tgreen.threadpool``'s worker threads stay real OS threads.
    """
    if socket:
        patch_socket()
    if dns:
        patch_dns()
    if time:
        patch_time()
    if select:
        patch_select()
    if selectors:
        patch_selectors()
    if asyncio:
        patch_asyncio()
    if psycopg:
        patch_psycopg()
    for flag, on, modname, green_modname in (
        ("ssl", ssl, "ssl", "ssl"),
        ("queue", queue, "queue", "queue"),
        ("thread", thread, "threading", "threading"),
        ("subprocess", subprocess, "subprocess", "subprocess"),
        ("os", os, "os", "os"),
        ("signal", signal, "signal", "signal"),
    ):
        if on and not is_module_patched(flag):
            _patch_from(flag, modname, green_modname)


_USAGE = "usage: python -m tgreen.monkey SCRIPT [ARGS...] | -m MODULE [ARGS...]"
_HELP = ("Run a Python script or module with tgreen.monkey.patch_all() applied first, so its\n"
         "blocking standard-library calls (socket, time.sleep, select, ssl, threading, ...)\n"
         "run greenly. ARGS become the script's sys.argv[1:].")


def main(argv: list[str] | None = None) -> int:
    """``python -m tgreen.monkey script.py args...``: run a script patched."""
    import runpy

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(_USAGE + "\n\n" + _HELP)
        return 0
    if not argv:
        print(_USAGE, file=sys.stderr)
        return 2
    if argv[0].startswith("-") and argv[0] != "-m":
        print(f"python -m tgreen.monkey: error: unknown option {argv[0]} (try --help)", file=sys.stderr)
        return 2
    patch_all()
    if argv[0] == "-m":
        if len(argv) < 2:
            print("tgreen.monkey: -m needs a module name", file=sys.stderr)
            return 2
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
