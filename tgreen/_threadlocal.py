"""``_thread._local``: thread-local data where a "thread" is a greenlet.

Patched ``threading.local`` and ``_threading_local.local`` are ``_local``.
Each object keeps one attribute dict per greenlet; a green thread drops its
dicts when it ends (``clear_locals``, called by ``_threads.end_of_thread``),
and the dict of a greenlet that is collected goes with it.

Rules of this file:

1. Attribute lookup follows Python's precedence (data descriptors of the
   class, then the greenlet's dict, then other class attributes), done by
   hand: there is no ``__dict__`` swapping, so two greenlets interleaving
   can never see each other's dict.
2. Nothing here switches: every operation is atomic with respect to greenlets.
"""

from __future__ import annotations

import weakref
from typing import Any
from weakref import ref as _weakref

from greenlet import getcurrent

__all__ = ["clear_locals", "local"]

_MISSING = object()
_oga = object.__getattribute__


class _TypeInfo:
    """What a ``_local`` subclass's attributes are, computed once per class
    (like gevent's local, later changes to the class are not seen):
    ``data`` holds data descriptors (they win over the per-greenlet dict,
    ``__slots__`` among them), ``other`` every other class attribute."""

    __slots__ = ("data", "init", "other")

    def __init__(self, cls: type) -> None:
        self.data: dict[str, Any] = {}
        self.other: dict[str, Any] = {}
        for base in reversed(cls.__mro__):
            for name, attr in base.__dict__.items():
                self.data.pop(name, None)
                self.other.pop(name, None)
                tp = type(attr)
                if hasattr(tp, "__get__") and (hasattr(tp, "__set__") or hasattr(tp, "__delete__")):
                    self.data[name] = attr
                else:
                    self.other[name] = attr
        init = cls.__init__  # type: ignore[misc]  # the class's own, read off the class
        self.init = None if init is object.__init__ else init


_type_infos: weakref.WeakKeyDictionary[type, _TypeInfo]


class _LocalImpl:
    """Per-greenlet dicts of one ``_local`` object.

    ``dicts`` maps ``id(greenlet)`` to ``(weakref(greenlet), dict)``; the weak
    reference's callback drops the entry when the greenlet is collected, and a
    green thread drops its entries when it ends (``clear_locals``). Each
    greenlet holds a weak reference back under ``key`` in its ``__dict__``, so
    that clearing a greenlet finds its locals.
    """

    __slots__ = ("__weakref__", "args", "dicts", "info", "key")

    def __init__(self, args: tuple, info: _TypeInfo) -> None:
        self.key = f"_tgreen_local.{id(self)}"
        self.dicts: dict[int, tuple] = {}
        self.args = args
        self.info = info

    def create_dict(self, g: Any) -> dict:
        idt = id(g)
        wrimpl = _weakref(self)

        def greenlet_gone(_: Any, idt: int = idt) -> None:
            impl = wrimpl()
            if impl is not None:
                impl.dicts.pop(idt, None)

        d: dict = {}
        self.dicts[idt] = (_weakref(g, greenlet_gone), d)
        try:
            g.__dict__[self.key] = wrimpl
        except AttributeError:
            pass
        return d


def clear_locals(g: Any) -> None:
    """Drop every ``_local`` dict of greenlet ``g`` (its thread ended)."""
    gd = getattr(g, "__dict__", None)
    if not gd:
        return
    for key in [k for k in gd if k.startswith("_tgreen_local.")]:
        impl = gd.pop(key)()
        if impl is not None:
            impl.dicts.pop(id(g), None)


def _greenlet_dict(local: Any, impl: Any) -> dict:
    """The current greenlet's attribute dict of ``local`` (made on first use)."""
    g = getcurrent()
    entry = impl.dicts.get(id(g))
    if entry is not None and entry[0]() is g:
        return entry[1]
    return _new_greenlet_dict(local, impl, g)


def _new_greenlet_dict(self: Any, impl: _LocalImpl, g: Any) -> dict:
    d = impl.create_dict(g)
    init = impl.info.init
    if init is not None:
        args, kw = impl.args
        init(self, *args, **kw)
    return d


class _local:
    """Thread-local data where a "thread" is a greenlet (``threading.local``).

    Attribute lookup is done by hand against a per-greenlet dict (there is
    no ``__dict__`` swapping), with Python's usual precedence: data
    descriptors of the class, then the greenlet's dict, then other class
    attributes. ``__slots__`` of subclasses are shared, as with the C type.
    """

    __slots__ = ("__weakref__", "_local__impl")

    def __new__(cls, *args: Any, **kw: Any) -> _local:
        info = _type_infos.get(cls)
        if info is None:
            info = _type_infos[cls] = _TypeInfo(cls)
        if (args or kw) and info.init is None:
            raise TypeError("Initialization arguments are not supported")
        self = object.__new__(cls)
        impl = _LocalImpl((args, kw), info)
        object.__setattr__(self, "_local__impl", impl)
        impl.create_dict(getcurrent())  # __init__ follows, called by type()
        return self

    def __getattribute__(self, name: str) -> Any:
        impl = _oga(self, "_local__impl")
        d = _greenlet_dict(self, impl)
        if name == "__dict__":
            return d
        info = impl.info
        attr = info.data.get(name, _MISSING)
        if attr is not _MISSING:
            return attr.__get__(self, type(self))
        try:
            return d[name]
        except KeyError:
            pass
        attr = info.other.get(name, _MISSING)
        if attr is not _MISSING:
            get = getattr(type(attr), "__get__", None)
            if get is not None:
                return get(attr, self, type(self))
            return attr
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__dict__":
            raise AttributeError(f"'{type(self).__name__}' object attribute '__dict__' is read-only")
        impl = _oga(self, "_local__impl")
        d = _greenlet_dict(self, impl)
        attr = impl.info.data.get(name, _MISSING)
        if attr is not _MISSING and hasattr(type(attr), "__set__"):
            attr.__set__(self, value)
            return
        d[name] = value

    def __delattr__(self, name: str) -> None:
        if name == "__dict__":
            raise AttributeError(f"'{type(self).__name__}' object attribute '__dict__' is read-only")
        impl = _oga(self, "_local__impl")
        d = _greenlet_dict(self, impl)
        attr = impl.info.data.get(name, _MISSING)
        if attr is not _MISSING and hasattr(type(attr), "__delete__"):
            attr.__delete__(self)
            return
        try:
            del d[name]
        except KeyError:
            raise AttributeError(name) from None

    def __reduce__(self) -> Any:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")


_local.__module__ = "_thread"
_local.__qualname__ = _local.__name__ = "_local"

_type_infos = weakref.WeakKeyDictionary()

#: The public name of the class (``threading.local`` when patched).
local = _local
