"""Greenlets: ``spawn``, ``Greenlet`` and ``joinall``.

A ``Greenlet`` starts from a loop callback (never by switching into it from the
spawner), runs in a copy of its spawner's contextvars context, and records its
result or exception. An exception escaping it is reported with its traceback
and never reaches the hub; KeyboardInterrupt and SystemExit are forwarded to
whoever runs the loop (the main greenlet, in practice). ::

    import tgreen
    g = tgreen.spawn(sum, [1, 2, 3])
    assert g.get() == 6
"""

from __future__ import annotations

import contextvars
from typing import Any, Callable, Iterable

import greenlet as _greenlet_mod
from greenlet import GreenletExit, getcurrent

from .hub import Hub, Waiter, get_hub

__all__ = ["Greenlet", "spawn", "spawn_later", "joinall", "killall", "GreenletExit", "getcurrent"]


class Greenlet(_greenlet_mod.greenlet):
    """A greenlet scheduled on the hub, with a result, an exception and links."""

    #: Print the traceback of an exception that ends the greenlet. Off for
    #: greenlets whose failure is delivered elsewhere (``run_green``).
    report_errors = True

    def __init__(self, run: Callable[..., Any] | None = None, *args: Any, **kwargs: Any) -> None:
        hub = get_hub()
        super().__init__(parent=hub.root)
        if run is not None:
            self._run = run  # type: ignore[method-assign]  # greenlet calls the instance's _run
        self.args = args
        self.kwargs = kwargs
        self.hub: Hub = hub
        self.value: Any = None
        self._exc: BaseException | None = None
        self._done = False
        self._links: list[Callable[[Greenlet], Any]] = []
        self._start_handle: Any = None
        self.gr_context = contextvars.copy_context()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Schedule the greenlet to run on the next loop iteration."""
        if self._start_handle is None and not self._done:
            self._start_handle = self.hub.loop.call_soon(self._launch)

    def start_later(self, seconds: float) -> None:
        """Schedule the greenlet to run after ``seconds``."""
        if self._start_handle is None and not self._done:
            self._start_handle = self.hub.loop.call_later(seconds, self._launch)

    def _launch(self) -> None:
        if not self._done and not self:
            self.switch()

    def run(self) -> None:
        try:
            result = self._run(*self.args, **self.kwargs)
        except GreenletExit as e:
            self._finish(e, None)
        except BaseException as e:  # noqa: BLE001 - every failure is recorded
            self._finish(None, e)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                self.hub.raise_in_main(e)
            elif self.report_errors:
                self.hub.handle_error(self, e)
        else:
            self._finish(result, None)

    def _run(self) -> Any:  # overridden by subclasses or by ``run=``
        return None

    def _finish(self, value: Any, exc: BaseException | None) -> None:
        self.value = value
        self._exc = exc
        self._done = True
        self.args = self.kwargs = ()  # type: ignore[assignment]
        if self._links:
            self.hub.loop.call_soon(self._notify_links)

    def _notify_links(self) -> None:
        links, self._links = self._links, []
        for link in links:
            try:
                link(self)
            except Exception as e:  # noqa: BLE001
                self.hub.handle_error(link, e)

    # -- state -----------------------------------------------------------------

    @property
    def dead(self) -> bool:
        """True once the greenlet finished, failed or was killed."""
        return self._done

    @property
    def exception(self) -> BaseException | None:
        """The exception that ended the greenlet, or None."""
        return self._exc

    def ready(self) -> bool:
        """True once the greenlet has finished, one way or another."""
        return self._done

    def successful(self) -> bool:
        """True if the greenlet finished without raising (GreenletExit counts as success)."""
        return self._done and self._exc is None

    @property
    def started(self) -> bool:
        return self._start_handle is not None or bool(self)

    # -- waiting ---------------------------------------------------------------

    def link(self, callback: Callable[["Greenlet"], Any]) -> None:
        """Call ``callback(self)`` from the loop once the greenlet is done."""
        self._links.append(callback)
        if self._done:
            self.hub.loop.call_soon(self._notify_links)

    def unlink(self, callback: Callable[["Greenlet"], Any]) -> None:
        try:
            self._links.remove(callback)
        except ValueError:
            pass

    def join(self, timeout: float | None = None) -> None:
        """Wait until the greenlet is done, at most ``timeout`` seconds."""
        if self._done:
            return
        if getcurrent() is self:
            raise RuntimeError("tgreen: a greenlet cannot join itself")
        waiter = Waiter(self.hub)
        link = waiter.switch
        self._links.append(link)
        try:
            waiter.get(timeout, "Greenlet.join()")
        finally:
            self.unlink(link)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Return the result, or raise the exception that ended the greenlet.

        Raises ``tgreen.Timeout`` if not done within ``timeout`` (or at once
        when ``block`` is false).
        """
        if not self._done:
            if block:
                self.join(timeout)
            if not self._done:
                from .timeout import Timeout

                raise Timeout(timeout)
        if self._exc is not None:
            raise self._exc
        return self.value

    def kill(self, exception: Any = GreenletExit, block: bool = True,
             timeout: float | None = None) -> None:
        """Raise ``exception`` in the greenlet; by default wait until it is dead.

        A greenlet that has not started yet never runs.
        """
        if self._done:
            return
        exc = exception() if isinstance(exception, type) else exception
        if not self:  # not started (or never will be)
            if self._start_handle is not None:
                self._start_handle.cancel()
            self._finish(exc if isinstance(exc, GreenletExit) else None,
                         None if isinstance(exc, GreenletExit) else exc)
            return
        if getcurrent() is self:
            raise exc
        self.hub.loop.call_soon(self._kill_now, exc)
        if block:
            self.join(timeout)

    def _kill_now(self, exc: BaseException) -> None:
        if not self._done and self:
            self.hub.throw(self, exc)

    def throw(self, *args: Any) -> Any:
        if not self and not self._done:
            # Killing an unstarted greenlet: greenlet would otherwise start it
            # just to raise at its first line.
            self.kill(args[0] if args else GreenletExit, block=False)
            return None
        return super().throw(*args)

    def __bool__(self) -> bool:
        return super().__bool__()

    def __repr__(self) -> str:
        fn = getattr(self._run, "__qualname__", None) or repr(self._run)
        state = "dead" if self._done else ("running" if self else "pending")
        return f"<Greenlet {fn} {state} at {id(self):#x}>"

    @classmethod
    def spawn(cls, run: Callable[..., Any], *args: Any, **kwargs: Any) -> "Greenlet":
        g = cls(run, *args, **kwargs)
        g.start()
        return g


def spawn(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Greenlet:
    """Run ``fn(*args, **kwargs)`` in a new greenlet, starting on the next loop turn."""
    g = Greenlet(fn, *args, **kwargs)
    g.start()
    return g


def spawn_later(seconds: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Greenlet:
    """Like ``spawn`` but start after ``seconds``."""
    g = Greenlet(fn, *args, **kwargs)
    g.start_later(seconds)
    return g


def joinall(greenlets: Iterable[Greenlet], timeout: float | None = None,
            raise_error: bool = False, count: int | None = None) -> list[Greenlet]:
    """Wait for the greenlets to finish; return those that did.

    With ``raise_error`` the first failure is raised as soon as it happens.
    With ``count`` return once that many are done.
    """
    greenlets = list(greenlets)
    done = [g for g in greenlets if g.ready()]
    need = len(greenlets) if count is None else min(count, len(greenlets))
    if raise_error:
        for g in done:
            if g.exception is not None:
                raise g.exception
    if len(done) >= need:
        return done
    waiter = Waiter()
    pending: set[Greenlet] = set()

    def on_done(g: Greenlet) -> None:
        done.append(g)
        if (raise_error and g.exception is not None) or len(done) >= need:
            waiter.switch()

    for g in greenlets:
        if not g.ready():
            pending.add(g)
            g.link(on_done)
    try:
        waiter.get(timeout, "joinall()")
    finally:
        for g in pending:
            g.unlink(on_done)
    if raise_error:
        for g in done:
            if g.exception is not None:
                raise g.exception
    return done


def killall(greenlets: Iterable[Greenlet], exception: Any = GreenletExit,
            block: bool = True, timeout: float | None = None) -> None:
    """Kill every greenlet; by default wait until all are dead."""
    greenlets = list(greenlets)
    for g in greenlets:
        g.kill(exception, block=False)
    if block:
        joinall(greenlets, timeout)
