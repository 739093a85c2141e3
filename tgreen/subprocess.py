"""A green ``subprocess``: ``Popen``, ``run`` and friends block only the
calling greenlet. ::

    import tgreen, tgreen.subprocess as sp
    jobs = [tgreen.spawn(sp.run, ["sleep", "0.2"]) for _ in range(10)]
    tgreen.joinall(jobs)                       # about 0.2 s, not 2 s
    out = sp.check_output(["echo", "hi"])      # b"hi\\n"

Theory of operation
-------------------
``Popen`` subclasses the stdlib's and changes only what blocks:

* Its pipes (``stdin``/``stdout``/``stderr`` created with ``PIPE``) are
  ``tgreen.fileobject`` streams over non-blocking fds, so ``p.stdout.read()``,
  ``for line in p.stdout`` and ``p.stdin.write()`` wait on the hub. They are
  built by the stdlib's own ``__init__``, run with a namespace in which
  ``io.open`` is ``tgreen.fileobject.open_fd``: every argument check, error
  message and fd-cleanup path stays CPython's.
* ``wait()`` waits for the child's exit through the loop (a pidfd, see
  ``tgreen.os``), reaping with ``waitpid(WNOHANG)`` under the stdlib's
  ``_waitpid_lock``, which is never held while waiting.
* ``communicate()`` multiplexes the pipes in the calling greenlet with hub
  listeners, writing and reading as much as each fd takes per wake-up. State
  (output so far, input offset) is kept where the stdlib keeps it, so a
  ``communicate`` that timed out can be called again, and ``TimeoutExpired``
  carries the output read so far.

Everything else (process creation, ``poll``, ``send_signal``, ``__exit__``)
is inherited. A pipe of a green ``Popen`` passed to another child as a
standard stream is switched back to blocking mode for that child, while the
parent's object keeps working greenly (``tgreen.fileobject`` rule 1).

``run``, ``call``, ``check_call``, ``check_output``, ``getoutput`` and
``getstatusoutput`` here are the stdlib's functions bound to this ``Popen``.
Patching (``tgreen.monkey.patch_subprocess``) replaces only
``subprocess.Popen``: the stdlib's helpers look ``Popen`` up at call time,
so they become green too, and tests or code that mock
``subprocess.Popen`` keep working.
"""

from __future__ import annotations

import functools
import io as _io
import os
from typing import Any

from . import _originals
from . import os as gos
from ._rebind import rebind as _rebind_to
from .fileobject import GreenFileIO, for_fd, open_fd
from .hub import Waiter, current_hub_if_any
from .sleep import sleep as _green_sleep

_std = _originals.module("subprocess")
for _name, _value in _std.__dict__.items():
    if not _name.startswith("__"):
        globals()[_name] = _value
del _name, _value
# The stdlib names this module's own code uses, bound again by name so that
# readers, linters and type checkers see where they come from.
TimeoutExpired = _std.TimeoutExpired
_PIPE_BUF: int = getattr(_originals.module("select"), "PIPE_BUF", 512)  # as subprocess computes it
_time = _originals.get("time", "monotonic")  # subprocess's _time

__implements__ = ["Popen"]
__extensions__ = ["run", "call", "check_call", "check_output", "getoutput",
                  "getstatusoutput"]
__all__ = list(_std.__all__)

# The stdlib class, whose private internals (_waitpid_lock, _input_offset, ...)
# this subclass shares: typeshed does not declare them, so it is typed as Any.
_StdPopen: Any = _std.Popen
_WNOHANG = os.WNOHANG
_READ_CHUNK = 256 * 1024
_read = _originals.get("os", "read")
_write = _originals.get("os", "write")
_POLLIN = _originals.get("select", "POLLIN")
_POLLOUT = _originals.get("select", "POLLOUT")


# -- the stdlib's __init__, creating green pipe objects -----------------------------

class _GreenIO:
    """The ``io`` that the stdlib's ``Popen.__init__`` sees here."""

    open = staticmethod(open_fd)
    TextIOWrapper = _io.TextIOWrapper


def _rebind(func: Any, namespace: dict, qualname: str | None = None) -> Any:
    """``func`` with its global names looked up in ``namespace``."""
    return _rebind_to(func, namespace, __name__, qualname)


_init_namespace = dict(_std.__dict__)
_init_namespace["io"] = _GreenIO
_std_init = _rebind(_StdPopen.__init__, _init_namespace, "Popen.__init__")


def _green_pipe_of(obj: Any) -> GreenFileIO | None:
    """The GreenFileIO under a stream of ours, if ``obj`` is one."""
    for attr in ("buffer", "raw"):
        while hasattr(obj, attr) and not isinstance(obj, GreenFileIO):
            obj = getattr(obj, attr)
    return obj if isinstance(obj, GreenFileIO) else None


def _share_with_child(stream: Any) -> None:
    """A green pipe given to a child as a standard stream must be blocking
    for the child (see the module docstring)."""
    if stream is None:
        return
    if isinstance(stream, int):
        raw = for_fd(stream) if stream >= 0 else None
    else:
        raw = _green_pipe_of(stream)
    if raw is not None:
        raw.set_shared_blocking()


class Popen(_StdPopen):
    """``subprocess.Popen`` whose waits and pipes block only the calling greenlet."""

    @functools.wraps(_StdPopen.__init__)  # type: ignore[misc]  # the stdlib's signature for inspect
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for i, name in ((3, "stdin"), (4, "stdout"), (5, "stderr")):
            _share_with_child(args[i] if len(args) > i else kwargs.get(name))
        _std_init(self, *args, **kwargs)

    # -- waiting for the child ---------------------------------------------------

    def _wait(self, timeout: float | None) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if current_hub_if_any() is None:
            return super()._wait(timeout)  # a plain OS thread may block
        endtime = None if timeout is None else _time() + timeout
        attempt = 0
        while True:
            busy = True
            if self._waitpid_lock.acquire(False):
                busy = False
                try:
                    if self.returncode is not None:
                        break  # another greenlet or thread reaped it
                    pid, sts = self._try_wait(_WNOHANG)
                    if pid == self.pid:
                        self._handle_exitstatus(sts)
                        break
                finally:
                    self._waitpid_lock.release()
            remaining = None if endtime is None else endtime - _time()
            if remaining is not None and remaining <= 0:
                raise TimeoutExpired(self.args, timeout)
            if busy:
                # A thread holds the lock (a blocking stdlib wait, or a
                # poll() in progress): look again shortly.
                _green_sleep(min(0.001 * 2 ** min(attempt, 5), remaining or 0.05))
            else:
                gos.wait_child_exit(self.pid, remaining, attempt)
            attempt += 1
        return self.returncode

    # -- talking to the child ----------------------------------------------------

    def _communicate(self, input: Any, endtime: float | None, orig_timeout: float | None) -> tuple:
        if self.stdin and not self._communication_started:
            try:
                self.stdin.flush()
            except BrokenPipeError:
                pass  # communicate() must ignore BrokenPipeError.
            if not input:
                try:
                    self.stdin.close()
                except BrokenPipeError:
                    pass

        if not self._communication_started:
            self._fileobj2output: dict[Any, Any] = {}   # a list of chunks, then their join
            if self.stdout:
                self._fileobj2output[self.stdout] = []
            if self.stderr:
                self._fileobj2output[self.stderr] = []
        stdout = self._fileobj2output[self.stdout] if self.stdout else None
        stderr = self._fileobj2output[self.stderr] if self.stderr else None

        self._save_input(input)
        # As the stdlib: only a call that passes input writes (a retry after
        # a timeout passes none).
        writing = bool(self.stdin and input and not self.stdin.closed)
        readers = [f for f in (self.stdout, self.stderr) if f and not f.closed]
        if writing or readers:
            self._exchange(writing, readers, endtime, orig_timeout, stdout, stderr)

        self.wait(timeout=self._remaining_time(endtime))

        if stdout is not None:
            stdout = b"".join(stdout)
        if stderr is not None:
            stderr = b"".join(stderr)
        if self.text_mode:
            if stdout is not None:
                stdout = self._translate_newlines(stdout, self.stdout.encoding,
                                                  self.stdout.errors)
            if stderr is not None:
                stderr = self._translate_newlines(stderr, self.stderr.encoding,
                                                  self.stderr.errors)
        return (stdout, stderr)

    def _exchange(self, writing: bool, readers: list, endtime: float | None,
                  orig_timeout: float | None, stdout: Any, stderr: Any) -> None:
        """Feed stdin and drain stdout/stderr until all are closed, waiting
        on the hub for whichever fd is ready."""
        hub = current_hub_if_any()
        if hub is None:
            return self._exchange_blocking(writing, readers, endtime, orig_timeout,
                                           stdout, stderr)
        # fd -> stream; the stdin entry is removed once input is done.
        wfd = self.stdin.fileno() if writing else -1
        rfds = {f.fileno(): f for f in readers}
        # Our pipes are non-blocking, except one also handed to another
        # child (tgreen.fileobject rule 1): that one must stay blocking, and
        # is only read or written after polling ready.
        blocking = {fd for fd in (*rfds, wfd) if fd >= 0 and os.get_blocking(fd)}
        input_view = memoryview(self._input).cast("B") if writing else None
        waiter: Waiter | None = None

        def on_event(fd: int, event: int) -> None:
            if waiter is not None:
                waiter.switch(None)

        handles = []
        try:
            for fd in rfds:
                handles.append(hub.add_listener(fd, 1, on_event))
            if writing:
                handles.append(hub.add_listener(wfd, 2, on_event))
            while rfds or writing:
                if writing:
                    self._feed(wfd, input_view, wfd in blocking)
                    writing = not self.stdin.closed
                for fd, f in list(rfds.items()):
                    while True:
                        if fd in blocking and not gos.poll_now(fd, _POLLIN):
                            break
                        try:
                            data = _read(fd, _READ_CHUNK)
                        except BlockingIOError:
                            break
                        if not data:
                            del rfds[fd]
                            f.close()
                            break
                        self._fileobj2output[f].append(data)
                        if len(data) < _READ_CHUNK:
                            break
                if not (rfds or writing):
                    break
                remaining = self._remaining_time(endtime)
                if remaining is not None and remaining <= 0:
                    self._check_timeout(endtime, orig_timeout, stdout, stderr,
                                        skip_check_and_raise=True)
                waiter = Waiter(hub)
                try:
                    waiter.get(remaining, "Popen.communicate()")
                finally:
                    waiter = None
                self._check_timeout(endtime, orig_timeout, stdout, stderr)
        finally:
            for h in handles:
                hub.remove_listener(h)

    def _feed(self, wfd: int, input_view: Any, blocking: bool = False) -> bool:
        """Write as much pending input as stdin takes now; close stdin when
        done or when the child stopped reading. True if anything happened."""
        total = len(input_view)
        wrote = False
        while self._input_offset < total:
            if blocking and not gos.poll_now(wfd, _POLLOUT):
                return wrote
            end = self._input_offset + _PIPE_BUF if blocking else total
            try:
                n = _write(wfd, input_view[self._input_offset:end])
            except BlockingIOError:
                return wrote
            except BrokenPipeError:
                break
            self._input_offset += n
            wrote = True
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass
        return True

    def _exchange_blocking(self, writing: bool, readers: list, endtime: float | None,
                           orig_timeout: float | None, stdout: Any, stderr: Any) -> None:
        """The same exchange from a plain OS thread: the stdlib's selector loop."""
        selectors = _originals.module("selectors")
        input_view = memoryview(self._input).cast("B") if writing else memoryview(b"")
        with selectors.PollSelector() as selector:
            if writing:
                selector.register(self.stdin, selectors.EVENT_WRITE)
            for f in readers:
                selector.register(f, selectors.EVENT_READ)
            while selector.get_map():
                timeout = self._remaining_time(endtime)
                if timeout is not None and timeout < 0:
                    self._check_timeout(endtime, orig_timeout, stdout, stderr,
                                        skip_check_and_raise=True)
                ready = selector.select(timeout)
                self._check_timeout(endtime, orig_timeout, stdout, stderr)
                for key, _events in ready:
                    if key.fileobj is self.stdin:
                        chunk = input_view[self._input_offset:self._input_offset + _PIPE_BUF]
                        try:
                            self._input_offset += os.write(key.fd, chunk)
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            selector.unregister(key.fileobj)
                            key.fileobj.close()
                        else:
                            if self._input_offset >= len(self._input):
                                selector.unregister(key.fileobj)
                                key.fileobj.close()
                    else:
                        try:
                            data = os.read(key.fd, 32768)
                        except BlockingIOError:
                            continue
                        if not data:
                            selector.unregister(key.fileobj)
                            key.fileobj.close()
                        self._fileobj2output[key.fileobj].append(data)


# -- the stdlib's helpers, bound to the green Popen ----------------------------------

_helpers_namespace = dict(_std.__dict__)
_helpers_namespace["Popen"] = Popen
for _name in __extensions__:
    _helpers_namespace[_name] = globals()[_name] = _rebind(getattr(_std, _name),
                                                           _helpers_namespace)
del _name
