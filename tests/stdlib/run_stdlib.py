#!/usr/bin/env python3
"""CPython stdlib compatibility harness for green monkey-patching libraries.

Usage::

    python tests/stdlib/run_stdlib.py --lib {tgreen,gevent,none} [--json OUT] MODULE...

e.g. ``python tests/stdlib/run_stdlib.py --lib gevent test_socket test_select``.
MODULE names are modules of CPython's own ``test`` package (``test.test_socket``
and so on), which ships with this interpreter. ``--all`` runs the whole
yardstick (``ALL_MODULES``, 34 modules). ``--python PATH`` runs the children
on another interpreter, e.g. a 3.13 venv with tgreen installed
(``--python .venv313/bin/python``): its own ``test`` package is measured.

Why
---
A green library replaces blocking stdlib primitives (``socket``, ``select``,
``time.sleep``, ``threading`` ...) with cooperative ones.  The best available
specification of how those primitives must behave is CPython's own test suite,
so this tool runs the stdlib tests *after* monkey patching and counts how many
still pass.  Every library -- ``tgreen``, ``gevent`` (the reference) and
``none`` (plain CPython, to separate environment failures from patching
failures) -- goes through exactly the same runner, resource policy, exclusion
mechanism and timeouts, so the counts are directly comparable.

How
---
* Each MODULE runs in a fresh child interpreter (``python -c BOOTSTRAP``), so
  patching is clean and a crash or hang only affects that module.  Modules run
  sequentially.
* The child patches *first*, before anything else is imported:
  ``gevent.monkey.patch_all()`` / ``tgreen.monkey.patch_all()`` / nothing.
* ``test.support.use_resources`` is set explicitly.  When it is ``None`` (the
  default outside regrtest) *every* resource counts as enabled, including
  ``network``; we enable everything regrtest knows except ``network`` and
  ``urlfetch``.  Two modules gate themselves wholesale on ``network`` although
  their tests only use loopback (see ``LOOPBACK_NETWORK_MODULES``); for those
  ``network`` is granted, and the few tests that really go outside are listed in
  ``excluded_common.txt``.
* An audit hook (``sys.addaudithook``) enforces "loopback only" underneath all
  that: name lookups of hosts not in /etc/hosts, and connect/sendto to
  non-loopback addresses, raise ``OutsideNetworkBlocked`` (a RuntimeError, so
  tests cannot mistake it for an ordinary OSError) and are reported per module.
  Audit hooks fire inside the C socket module, so the guard does not depend on,
  or interfere with, which Python-level socket class is patched in.
* Tests are loaded with unittest (honouring ``load_tests``; old-style
  ``test_main`` modules are supported by capturing what they pass to
  ``support.run_unittest``).  Ids listed in ``excluded_common.txt`` and
  ``excluded_<lib>.txt`` (one ``test.module.Class[.test_method]  # reason`` per
  line; a class or module prefix excludes everything under it) are removed
  from the suite before running and counted as "excluded".
* Per-test time limit (default 60 s, above test.support.SHORT_TIMEOUT so
  tests' own 30 s waits fail with their own message): a watchdog on a *native*
  thread (made with the unpatched ``_thread`` functions saved before patching)
  re-armed around every test.  A SIGALRM handler cannot promise this under
  greenlets: it runs in whatever greenlet is current, often the hub, which
  swallows it.  When the limit passes the watchdog dumps every thread's and
  greenlet's stack (the main greenlet's stack is where the test code is
  suspended) and exits; ``faulthandler.dump_traceback_later(exit=True)`` is a
  backstop if the GIL is never released.  The parent records the running test
  as failed ("TIMEOUT") and starts a new child that resumes after it.  Crashes
  are handled the same way (recorded as errors).  The parent also enforces a
  whole-module timeout.
* The child streams JSON events (start / result per test) to a file, so the
  parent knows exactly which test was running when a child died.

Counts per module: run (= passed + failed + errors + skipped), passed
(expected failures count as passed), failed (includes unexpected successes and
timeouts), errors, skipped, excluded, plus fixture errors (setUpClass and
friends), tests never run, hung tests, and tests that tried to go outside.

Exit status: 0 when every module ran to completion (test failures are data, not
harness errors), 1 when a module was aborted or died, 3 when the library could
not be imported/patched (argparse uses 2 for bad usage).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
LIBS = ("tgreen", "gevent", "none")
DEFAULT_MODULES = ("test_socket", "test_select", "test_selectors",
                   "test_timeout", "test_socketserver")
# The yardstick: CPython's tests for everything patch_all() touches (--all).
# test_asyncore, test_asynchat and test_telnetlib left CPython in 3.12; on a
# newer interpreter they are reported as "module skipped".
ALL_MODULES = DEFAULT_MODULES + (
    "test_ssl", "test_threading", "test_threading_local", "test_thread", "test_queue",
    "test_subprocess", "test_signal", "test_httplib", "test_urllib2_localnet",
    "test_wsgiref", "test_ftplib", "test_smtplib",
    "test_poll", "test_epoll", "test_httpservers", "test_xmlrpc", "test_docxmlrpc",
    "test_poplib", "test_imaplib", "test_telnetlib", "test_asyncore", "test_asynchat",
    "test_threadsignals", "test_context", "test_time", "test_os", "test_fork1",
    "test_wait3", "test_wait4")

# Mirrors test.libregrtest.utils.RESOURCE_NAMES (3.11); anything that might
# reach the outside world is left out.
ALL_RESOURCE_NAMES = ("audio", "curses", "largefile", "network", "decimal",
                      "cpu", "subprocess", "urlfetch", "gui", "walltime",
                      "extralargefile", "tzdata")
BLOCKED_RESOURCES = frozenset({"network", "urlfetch"})

# Modules that call support.requires('network') for the *whole module* while
# their tests are loopback-only.  Without granting 'network' they would measure
# nothing.  The audit-hook guard still forbids anything non-loopback.
LOOPBACK_NETWORK_MODULES = {
    "test_socketserver": "module-level requires('network'); all servers bind "
                         "socket_helper.HOST (127.0.0.1)",
    "test_timeout": "setUpModule requires('network'); the tests that really "
                    "go outside are in excluded_common.txt",
}

PATCH_FAILED_EXIT = 3
WATCHDOG_EXIT = 5
# Above test.support.SHORT_TIMEOUT (30 s), which tests use for their own waits
# (e.g. threading_helper.wait_threads_exit), so those fail with their own message.
DEFAULT_TEST_TIMEOUT = 60.0
BACKSTOP_EXTRA = 15.0
DEFAULT_MODULE_TIMEOUT = 1800.0
MAX_ATTEMPTS = 60

# Runs in the child.  Patching must happen before anything else is imported,
# including this file, which is loaded from its path only afterwards.
_CHILD_BOOTSTRAP = r"""
import sys
lib, runner_path, config_path = sys.argv[1:4]
import signal
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # Started in the background (CI, nohup, `&`): SIGINT comes in ignored and
    # Python then installs no KeyboardInterrupt handler, which test_signal's
    # SIGINT tests need. Give the child what an interactive run has.
    signal.signal(signal.SIGINT, signal.default_int_handler)
import _thread
real_thread = (_thread.start_new_thread, _thread.allocate_lock, _thread.get_ident)
try:
    if lib == "gevent":
        from gevent import monkey
        monkey.patch_all()
    elif lib == "tgreen":
        import tgreen.monkey
        tgreen.monkey.patch_all()
    elif lib != "none":
        raise ValueError("unknown lib " + repr(lib))
except BaseException:
    import traceback
    traceback.print_exc()
    sys.stderr.flush()
    sys.exit(PATCH_FAILED_EXIT)
import importlib.util
spec = importlib.util.spec_from_file_location("_stdlib_runner_child", runner_path)
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)
runner._child_main(lib, config_path, real_thread)
""".replace("PATCH_FAILED_EXIT", str(PATCH_FAILED_EXIT))


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------

def read_exclusions(lib):
    """Return [(id, reason, filename)] from excluded_common.txt + excluded_<lib>.txt."""
    entries = []
    for name in ("excluded_common.txt", f"excluded_{lib}.txt"):
        path = os.path.join(HERE, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                test_id, _, reason = line.partition("#")
                test_id = test_id.strip()
                if not test_id:
                    continue
                if " " in test_id or not test_id.startswith("test."):
                    raise SystemExit(f"{name}:{lineno}: bad test id {test_id!r}")
                entries.append((test_id, reason.strip(), name))
    return entries


def _matches(test_id, prefix):
    return test_id == prefix or test_id.startswith(prefix + ".")


def _resources_for(module):
    allowed = set(ALL_RESOURCE_NAMES) - BLOCKED_RESOURCES
    if module in LOOPBACK_NETWORK_MODULES:
        allowed.add("network")
    return sorted(allowed)


# ---------------------------------------------------------------------------
# Child side
# ---------------------------------------------------------------------------

class OutsideNetworkBlocked(RuntimeError):
    """Raised by the audit hook for any lookup/connection beyond loopback."""


def _install_network_guard(on_block):
    """Audit hook that only lets name resolution and traffic stay local.

    Allowed: numeric addresses for lookups (no DNS involved), names listed in
    /etc/hosts (resolved from files), and connect/sendto/sendmsg to loopback,
    wildcard, or non-IP (AF_UNIX, ...) addresses.  getnameinfo() is allowed for
    numeric addresses because its flags (NI_NUMERICHOST) are not visible to
    the hook, and CPython resolves names there with AI_NUMERICHOST anyway.
    """
    import ipaddress

    names, name_ips, ips = {"localhost"}, {}, set()
    try:
        with open("/etc/hosts") as f:
            for line in f:
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 2:
                    ips.add(parts[0])
                    for n in parts[1:]:
                        names.add(n.lower())
                        name_ips.setdefault(n.lower(), set()).add(parts[0])
    except OSError:
        pass

    def ip_of(host):
        try:
            return ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None

    def name_ok(host):  # may this be *looked up*?
        if host is None:
            return True
        if isinstance(host, (bytes, bytearray)):
            host = bytes(host).decode("idna", "replace")
        if not isinstance(host, str):
            return True  # bad type: the C function raises TypeError itself
        return host in ("", "<broadcast>") or ip_of(host) is not None \
            or host.lower().rstrip(".") in names

    def local_ip(text):
        ip = ip_of(text)
        return ip is not None and (ip.is_loopback or ip.is_unspecified)

    def dest_ok(address):  # may we *send* to this?
        if not isinstance(address, tuple) or len(address) < 2:
            return True  # AF_UNIX path, None, bad types, other families
        host = address[0]
        if isinstance(host, (bytes, bytearray)):
            host = bytes(host).decode("idna", "replace")
        if not isinstance(host, str) or host == "":
            return True
        if ip_of(host) is not None:
            return local_ip(host)
        return all(local_ip(ip) for ip in name_ips.get(host.lower().rstrip("."), {"x"}))

    def hook(event, args):
        if not event.startswith("socket."):
            return
        bad = None
        if event in ("socket.getaddrinfo", "socket.gethostbyname"):
            if not name_ok(args[0]):
                bad = args[0]
        elif event == "socket.gethostbyaddr":
            host = args[0]
            if isinstance(host, str) and not (host.lower() in names or host in ips
                                              or local_ip(host)):
                bad = host
        elif event == "socket.getnameinfo":
            pass
        elif event in ("socket.connect", "socket.sendto", "socket.sendmsg") and not dest_ok(args[1]):
            bad = args[1]
        if bad is not None:
            on_block(event, bad)
            raise OutsideNetworkBlocked(f"{event}({bad!r}) blocked: the stdlib harness only "
                                        "allows loopback")

    sys.addaudithook(hook)


def _start_watchdog(real_thread, fault_file):
    """Per-test time limit that can see into greenlets.

    A native thread (started with the *unpatched* _thread functions saved by
    the bootstrap) wakes up every 0.2 s; once the armed deadline passes it
    writes every thread's and every greenlet's stack to the fault file, plus a
    "WHERE:" line for the main greenlet (where the test code is suspended
    while the hub/loop runs), and exits with WATCHDOG_EXIT.  faulthandler is
    armed a little later as a backstop for the case where the GIL is never
    released.  Returns a function arm(seconds_or_None).
    """
    import faulthandler
    import traceback
    start_new_thread, allocate_lock, get_ident = real_thread
    main_ident = get_ident()
    gl = sys.modules.get("greenlet")
    main_greenlet = gl.getcurrent() if gl else None
    state = {"deadline": None, "timeout": None}

    def stack(frame, limit=12):
        return "".join(traceback.format_stack(frame, limit)) if frame else ""

    def dump():
        w = fault_file.write
        w("Timeout (harness watchdog, {}s)!\n".format(state["timeout"]))
        frame = getattr(main_greenlet, "gr_frame", None) or \
            sys._current_frames().get(main_ident)
        inner = traceback.extract_stack(frame, 30)[::-1] if frame else []
        w("WHERE: {}\n".format(" <- ".join(
            f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"
            for f in inner[:6])))
        for ident, fr in sys._current_frames().items():
            w("\n--- thread {:#x}{} ---\n{}".format(ident, " (main)" if ident == main_ident
                                              else "", stack(fr)))
        if gl is not None:
            import gc
            n = 0
            for g in gc.get_objects():
                if isinstance(g, gl.greenlet) and getattr(g, "gr_frame", None):
                    n += 1
                    if n <= 30:
                        w(f"\n--- greenlet {g!r} ---\n{stack(g.gr_frame)}")
        fault_file.flush()

    def run():
        sleeper = allocate_lock()
        sleeper.acquire()
        while True:
            sleeper.acquire(True, 0.2)
            deadline = state["deadline"]
            if deadline is not None and time.monotonic() > deadline:
                try:
                    dump()
                finally:
                    os._exit(WATCHDOG_EXIT)

    def arm(timeout):
        if timeout is None:
            state["deadline"] = None
            faulthandler.cancel_dump_traceback_later()
            return
        state["timeout"] = timeout
        state["deadline"] = time.monotonic() + timeout
        faulthandler.dump_traceback_later(timeout + BACKSTOP_EXTRA, exit=True,
                                          file=fault_file)

    start_new_thread(run, ())
    return arm


def _fixup_test_timeout(mod):
    """TCPTimeoutTestCase.setUp resolves www.python.org for *every* test, but
    only testConnectTimeout/testRecvTimeout use the address (both excluded in
    excluded_common.txt).  Hand out an unresolved TEST-NET-1 placeholder so the
    loopback-only tests of that class (accept/send/sendto/sendall timeouts)
    still run.  The audit guard would block any use of the placeholder."""
    real = mod.resolve_address

    def resolve_address(host, port):
        if host in ("localhost", "127.0.0.1", "::1"):
            return real(host, port)
        return ("192.0.2.1", port)

    mod.resolve_address = resolve_address


MODULE_FIXUPS = {"test_timeout": _fixup_test_timeout}


def _iter_tests(suite):
    import unittest
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _iter_tests(t)
        else:
            yield t


def _filter_suite(suite, keep):
    import unittest
    new = type(suite)()
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            sub = _filter_suite(t, keep)
            if sub.countTestCases():
                new.addTest(sub)
        elif keep(t.id()):
            new.addTest(t)
    return new


def _load_suite(mod):
    import unittest

    from test import support
    suite = unittest.defaultTestLoader.loadTestsFromModule(mod)  # honours load_tests
    if suite.countTestCases() == 0 and hasattr(mod, "test_main"):
        # Old-style module: capture what test_main() hands to run_unittest().
        captured = unittest.TestSuite()

        def capture(*classes):
            for c in classes:
                if isinstance(c, (unittest.TestSuite, unittest.TestCase)):
                    captured.addTest(c)
                elif isinstance(c, str):
                    captured.addTest(unittest.defaultTestLoader.loadTestsFromName(c))
                else:
                    captured.addTest(unittest.defaultTestLoader.loadTestsFromTestCase(c))

        saved, support.run_unittest = support.run_unittest, capture
        try:
            mod.test_main()
        finally:
            support.run_unittest = saved
        suite = captured
    return suite


def _child_main(lib, config_path, real_thread):
    import traceback
    import unittest

    main_pid = os.getpid()
    if config_path == "-":  # preflight: report what got patched and exit
        print(json.dumps(_patch_info(lib)))
        sys.stdout.flush()
        os._exit(0)

    with open(config_path, encoding="utf-8") as f:
        cfg = json.load(f)
    events_fd = os.open(cfg["events"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    fault_file = open(cfg["faults"], "w")
    out = sys.stdout
    state = {"current": None}

    def emit(event, **data):
        if os.getpid() != main_pid:  # a forked test process; stay silent
            return
        data["event"] = event
        os.write(events_fd, (json.dumps(data) + "\n").encode())

    watchdog = _start_watchdog(real_thread, fault_file)

    def arm():
        watchdog(cfg["test_timeout"])

    def short(err):
        return "".join(traceback.format_exception_only(err[0], err[1])).strip()[-400:]

    arm()  # covers import and setUpModule too
    emit("hello", pid=main_pid, **_patch_info(lib))
    _install_network_guard(lambda ev, arg: emit(
        "blocked", id=state["current"], call=ev, arg=repr(arg)[:200]))

    from test import support
    support.use_resources = list(cfg["resources"])
    support.verbose = 0

    module = cfg["module"]
    try:
        import importlib
        mod = importlib.import_module("test." + module)
        if module in MODULE_FIXUPS:
            MODULE_FIXUPS[module](mod)
        suite = _load_suite(mod)
    except unittest.SkipTest as exc:
        emit("module_skipped", reason=str(exc))
        emit("done")
        os._exit(0)
    except ModuleNotFoundError as exc:
        if exc.name != "test." + module:
            traceback.print_exc()
            emit("fatal", stage="import", detail=short(sys.exc_info()))
            os._exit(4)
        emit("module_skipped", reason=f"not in Python {platform.python_version()}")
        emit("done")
        os._exit(0)
    except BaseException:
        traceback.print_exc()
        emit("fatal", stage="import", detail=short(sys.exc_info()))
        os._exit(4)

    exclusions = cfg["exclusions"]
    skip_ids = set(cfg["skip_ids"])
    excluded = {}

    def keep(test_id):
        for prefix, reason, _src in exclusions:
            if _matches(test_id, prefix):
                excluded[test_id] = reason
                return False
        return test_id not in skip_ids

    suite = _filter_suite(suite, keep)
    emit("collected", ids=[t.id() for t in _iter_tests(suite)], excluded=excluded)

    ErrorHolder = unittest.suite._ErrorHolder

    class EventResult(unittest.TestResult):
        def startTest(self, test):
            super().startTest(test)
            state["current"] = test.id()
            self._t0 = time.monotonic()
            self._flags = {}
            self._details = []
            emit("start", id=test.id())
            out.write(f"{test.id()} ... ")
            out.flush()
            arm()

        def _note(self, kind, test, err=None, text=None):
            if isinstance(test, ErrorHolder) or state["current"] is None:
                emit("fixture", id=test.id() if not isinstance(test, ErrorHolder)
                     else test.description, outcome=kind,
                     detail=text if err is None else short(err))
                if err is not None:
                    out.write("\n[fixture {}] {}\n{}".format(
                        kind, getattr(test, "description", test),
                        self._exc_info_to_string(err, test)))
                return
            self._flags[kind] = True
            if err is not None:
                label = "" if test.id() == state["current"] else \
                    " " + test._subDescription().strip()
                self._details.append(f"{kind}{label}: {short(err)}")
                out.write(f"\n  {kind.upper()} {test}\n{self._exc_info_to_string(err, test)}")
            elif text:
                self._details.append(f"{kind}: {text}")

        def addError(self, test, err):
            super().addError(test, err)
            self._note("error", test, err)

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._note("fail", test, err)

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                kind = "fail" if issubclass(err[0], test.failureException) else "error"
                self._note(kind, subtest, err)

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            if isinstance(test, ErrorHolder) or state["current"] is None or test.id() == state["current"]:
                self._note("skip", test, text=reason)

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._flags["xfail"] = True

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._note("fail", test, text="unexpected success")

        def stopTest(self, test):
            f = self._flags
            outcome = ("error" if f.get("error") else "fail" if f.get("fail")
                       else "skip" if f.get("skip") else "pass")
            emit("result", id=test.id(), outcome=outcome,
                 detail=" | ".join(self._details)[:1000],
                 secs=round(time.monotonic() - self._t0, 3))
            out.write(f"{outcome}\n")
            out.flush()
            state["current"] = None
            arm()  # next window: class/module fixtures + next test
            super().stopTest(test)

    result = EventResult()
    suite.run(result)
    watchdog(None)
    emit("done")
    out.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: lingering hub/daemon threads must not hang it.
    os._exit(0)


def _patch_info(lib):
    info = {"lib": lib, "lib_version": None, "python": platform.python_version()}
    if lib != "none":
        try:
            info["lib_version"] = getattr(__import__(lib), "__version__", "unknown")
        except Exception:
            pass
    import select
    import socket
    import threading
    info["socket.socket"] = f"{socket.socket.__module__}.{socket.socket.__qualname__}"
    info["select.select"] = getattr(select.select, "__module__", None) or "builtin"
    info["time.sleep"] = getattr(time.sleep, "__module__", None) or "builtin"
    info["threading.Lock"] = repr(threading.Lock)
    return info


# ---------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------

def _read_events(path):
    events = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass  # torn last line of a killed child
    except FileNotFoundError:
        pass
    return events


def _fault_summary(path):
    """(timed_out, where) from the watchdog or faulthandler dump of a child.

    faulthandler lists the main thread last (CPython prepends new threads).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return False, ""
    m = re.search(r"^WHERE: (.*)$", text, flags=re.MULTILINE)
    if m:
        return True, m.group(1)
    blocks = re.split(r"^(?:Current thread|Thread) 0x[0-9a-f]+ .*$", text, flags=re.MULTILINE)
    frames = re.findall(r'^\s*File "([^"]*)", line (\d+) in (\S+)', blocks[-1],
                        flags=re.MULTILINE) if len(blocks) > 1 else []
    return "Timeout (" in text, " <- ".join(
        f"{os.path.basename(f)}:{n} in {fn}" for f, n, fn in frames[:6])


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class ModuleRun:
    def __init__(self, module):
        self.module = module
        self.collected = None          # ordered list of ids to run
        self.excluded = {}             # id -> reason
        self.outcomes = {}             # id -> (outcome, detail)
        self.hung = []
        self.fixture_errors = {}       # fixture id -> detail
        self.fixture_skips = {}
        self.not_run = {}              # id -> why
        self.blocked = []
        self.status = "ok"
        self.notes = []
        self.attempts = 0
        self.runtime = 0.0
        self.hello = None

    def as_dict(self):
        by = {k: {i: d for i, (o, d) in self.outcomes.items() if o == k}
              for k in ("pass", "fail", "error", "skip")}
        return {
            "status": self.status,
            "run": len(self.outcomes),
            "passed": len(by["pass"]),
            "failed": len(by["fail"]),
            "errors": len(by["error"]),
            "skipped": len(by["skip"]),
            "excluded": len(self.excluded),
            "fixture_errors": len(self.fixture_errors),
            "not_run": len(self.not_run),
            "hung": len(self.hung),
            "blocked_outside_calls": len(self.blocked),
            "runtime_s": round(self.runtime, 1),
            "attempts": self.attempts,
            "notes": self.notes,
            "patched": self.hello,
            "failed_ids": by["fail"],
            "error_ids": by["error"],
            "hung_ids": self.hung,
            "fixture_error_ids": self.fixture_errors,
            "not_run_ids": self.not_run,
            "blocked_calls": self.blocked,
            "excluded_ids": self.excluded,
            "skipped_ids": by["skip"],
        }


def run_module(module, lib, args, exclusions, log_dir):
    """Run one stdlib test module (possibly over several child processes)."""
    mr = ModuleRun(module)
    t_start = time.monotonic()
    deadline = t_start + args.module_timeout
    log_path = os.path.join(log_dir, f"{lib}-{module}.log")
    log = open(log_path, "w")
    no_progress = 0
    while True:
        mr.attempts += 1
        if mr.attempts > MAX_ATTEMPTS:
            mr.status = "aborted"
            mr.notes.append(f"gave up after {MAX_ATTEMPTS} child restarts")
            break
        tag = f"{lib}-{module}-{mr.attempts}"
        events_path = os.path.join(log_dir, tag + ".events")
        fault_path = os.path.join(log_dir, tag + ".faults")
        cfg_path = os.path.join(log_dir, tag + ".json")
        skip = set(mr.outcomes) | set(mr.not_run)
        with open(cfg_path, "w") as f:
            json.dump({"module": module, "events": events_path, "faults": fault_path,
                       "test_timeout": args.test_timeout,
                       "resources": _resources_for(module),
                       "exclusions": exclusions, "skip_ids": sorted(skip)}, f)
        cwd = tempfile.mkdtemp(prefix=f"stdlib-{module}-")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.pop("PYTHONSTARTUP", None)
        log.write(f"\n===== attempt {mr.attempts} ({time.ctime()}) =====\n")
        log.flush()
        proc = subprocess.Popen(
            [args.python, "-X", "faulthandler", "-c", _CHILD_BOOTSTRAP, lib,
             os.path.abspath(__file__), cfg_path],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        timed_out_module = False
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out_module = True
            _kill_group(proc)
            rc = proc.wait()
        _kill_group(proc)  # stray grandchildren (forking servers, ...)
        shutil.rmtree(cwd, ignore_errors=True)
        try:
            with open(fault_path, encoding="utf-8", errors="replace") as f:
                faults = f.read()
            if faults:
                log.write(f"\n----- faulthandler dump -----\n{faults}\n")
        except OSError:
            pass
        log.flush()

        events = _read_events(events_path)
        started, done, progressed = None, False, False
        for ev in events:
            kind = ev["event"]
            if kind == "hello":
                mr.hello = {k: v for k, v in ev.items() if k not in ("event", "pid")}
            elif kind == "collected":
                if mr.collected is None:
                    mr.collected = ev["ids"]
                    mr.excluded = ev["excluded"]
            elif kind == "start":
                started, progressed = ev["id"], True
            elif kind == "result":
                mr.outcomes[ev["id"]] = (ev["outcome"], ev["detail"])
                started = None
            elif kind == "fixture":
                target = mr.fixture_errors if ev["outcome"] != "skip" else mr.fixture_skips
                target[ev["id"]] = ev["detail"]
            elif kind == "blocked":
                mr.blocked.append({k: ev[k] for k in ("id", "call", "arg")})
            elif kind == "module_skipped":
                mr.status = "module skipped"
                mr.notes.append("module skipped: " + ev["reason"])
            elif kind == "fatal":
                mr.status = "fatal"
                mr.notes.append("{} failed: {}".format(ev["stage"], ev["detail"]))
            elif kind == "done":
                done = True

        if done or mr.status == "fatal":
            break
        if rc == PATCH_FAILED_EXIT and not events:
            mr.status = "lib unavailable"
            mr.notes.append(f"patching with {lib} failed (see {log_path})")
            break

        # The child died (or was killed) before finishing.
        hang, where = _fault_summary(fault_path)
        hang = hang or rc == WATCHDOG_EXIT
        if timed_out_module:
            why = f"module timeout ({args.module_timeout}s)"
        elif hang:
            why = f"TIMEOUT: no progress for {args.test_timeout}s (child killed)"
        else:
            why = f"CRASH: child exited with status {rc}"
        if where:
            why += "; at " + where
        if mr.collected is None:
            mr.status = "fatal"
            mr.notes.append("died before tests were collected: " + why)
            break
        if started is not None:
            kind = "fail" if (hang or timed_out_module) else "error"
            mr.outcomes[started] = (kind, why)
            if hang or timed_out_module:
                mr.hung.append(started)
            progressed = True
        else:
            # Died between tests: a class/module fixture hung or crashed.
            pending = [i for i in mr.collected
                       if i not in mr.outcomes and i not in mr.not_run]
            if not pending:
                mr.fixture_errors["<module teardown>"] = why
                break
            cls = pending[0].rsplit(".", 1)[0]
            mr.fixture_errors[f"<fixture of {cls}>"] = why
            for i in pending:
                if _matches(i, cls):
                    mr.not_run[i] = "fixture of its class hung/crashed"
        no_progress = 0 if progressed else no_progress + 1
        if timed_out_module or no_progress >= 3:
            mr.status = "aborted"
            mr.notes.append(why if timed_out_module else "no progress in 3 child runs")
            break

    # Tests that never reported: covered by a fixture skip, or just not run.
    if mr.collected is not None:
        for i in mr.collected:
            if i in mr.outcomes or i in mr.not_run:
                continue
            for fid, reason in mr.fixture_skips.items():
                m = re.match(r"^\w+ \((.+)\)$", fid)
                if m and _matches(i, m.group(1)):
                    mr.outcomes[i] = ("skip", f"fixture skip: {reason}")
                    break
            else:
                mr.not_run[i] = "never reported (fixture error?)"
    mr.runtime = time.monotonic() - t_start
    log.close()
    return mr


def preflight(lib, python):
    """Check that the library imports and patches; return (info, error)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        p = subprocess.run([python, "-c", _CHILD_BOOTSTRAP, lib,
                            os.path.abspath(__file__), "-"],
                           capture_output=True, text=True, timeout=120, env=env,
                           cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return None, f"importing/patching {lib} hung for 120s"
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"cannot import/patch {lib!r} with {python}: {tail[0]}"
    try:
        return json.loads(p.stdout.strip().splitlines()[-1]), None
    except (ValueError, IndexError):
        return None, f"preflight for {lib} printed no report: {p.stdout[-300:]!r}"


COLUMNS = ("run", "passed", "failed", "errors", "skipped", "excluded",
           "fixture_errors", "not_run", "hung", "blocked_outside_calls", "runtime_s")


def format_table(results):
    head = ["module"] + ["blocked" if c == "blocked_outside_calls" else
                         "fixture_err" if c == "fixture_errors" else
                         "time_s" if c == "runtime_s" else c for c in COLUMNS] + ["status"]
    rows = [[m] + [str(r[c]) for c in COLUMNS] + [r["status"]] for m, r in results.items()]
    if len(results) > 1:
        tot = ["TOTAL"]
        for c in COLUMNS:
            s = sum(r[c] for r in results.values())
            tot.append(str(round(s, 1) if isinstance(s, float) else s))
        rows.append(tot + [""])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def compare(report, other_path):
    """Tests whose outcome differs from another --json report (e.g. gevent)."""
    with open(other_path, encoding="utf-8") as f:
        other = json.load(f)

    def outcomes(rep):
        res = {}
        for mod in rep["modules"].values():
            for key, name in (("failed_ids", "fail"), ("error_ids", "error"),
                              ("skipped_ids", "skip"), ("not_run_ids", "not run"),
                              ("excluded_ids", "excluded")):
                for i in mod.get(key, {}):
                    res[i] = name
        return res

    mine, theirs = outcomes(report), outcomes(other)
    mods = set(report["modules"]) & set(other["modules"])
    lines = []
    for i in sorted(set(mine) | set(theirs)):
        if i.split(".")[1] not in mods:
            continue
        a, b = mine.get(i, "pass"), theirs.get(i, "pass")
        if a != b:
            lines.append(f"  {a:<8} (other: {b:<8}) {i}")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Run CPython stdlib test modules under a monkey-patching lib.",
        epilog="Logs of each module run are kept in --log-dir.")
    ap.add_argument("--lib", required=True, choices=LIBS)
    ap.add_argument("--json", metavar="OUT", help="write a full JSON report here")
    ap.add_argument("--test-timeout", type=float, default=DEFAULT_TEST_TIMEOUT,
                    help="per-test limit in seconds (default %(default)s)")
    ap.add_argument("--module-timeout", type=float, default=DEFAULT_MODULE_TIMEOUT,
                    help="whole-module limit in seconds (default %(default)s)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the children (default: this one)")
    ap.add_argument("--log-dir", help="where to keep child logs (default: new temp dir)")
    ap.add_argument("--compare", metavar="JSON",
                    help="also list tests whose outcome differs from this earlier report")
    ap.add_argument("--all", action="store_true",
                    help=f"run the whole yardstick ({len(ALL_MODULES)} modules, ALL_MODULES)")
    ap.add_argument("modules", nargs="*", metavar="MODULE",
                    help="test modules, default: {}".format(" ".join(DEFAULT_MODULES)))
    args = ap.parse_args(argv)
    if args.all and args.modules:
        ap.error("--all and MODULE names exclude each other")
    modules = [m.removeprefix("test.")
               for m in (ALL_MODULES if args.all else args.modules or DEFAULT_MODULES)]
    for m in modules:
        if not re.match(r"^test_\w+(\.test_\w+)?$", m):
            ap.error(f"not a stdlib test module name: {m!r}")

    log_dir = args.log_dir or tempfile.mkdtemp(prefix=f"stdlib-{args.lib}-logs-")
    os.makedirs(log_dir, exist_ok=True)
    exclusions = read_exclusions(args.lib)
    command = " ".join(["python", os.path.relpath(os.path.abspath(__file__), REPO_ROOT)]
                       + (argv if argv is not None else sys.argv[1:]))
    report = {"meta": {
        "lib": args.lib, "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(), "platform": platform.platform(),
        "test_timeout_s": args.test_timeout, "module_timeout_s": args.module_timeout,
        "blocked_resources": sorted(BLOCKED_RESOURCES),
        "network_granted_to": LOOPBACK_NETWORK_MODULES, "log_dir": log_dir,
    }, "modules": {}}

    info, err = preflight(args.lib, args.python)
    if err:
        print(f"ERROR [{args.lib}]: {err}", file=sys.stderr)
        report["meta"]["error"] = err
        for m in modules:
            report["modules"][m] = {"status": "lib unavailable", "notes": [err]}
        if args.json:
            _write_json(args.json, report)
        return 3
    report["meta"]["lib_version"] = info.get("lib_version")
    report["meta"]["patched"] = info
    report["meta"]["python"] = info.get("python", report["meta"]["python"])  # the children's
    print("lib={} version={} python={}  socket.socket={}  logs: {}".format(
        args.lib, info.get("lib_version"), report["meta"]["python"],
        info.get("socket.socket"), log_dir), flush=True)

    rc = 0
    for m in modules:
        print(f"{m:<20} ...", end=" ", flush=True)
        r = run_module(m, args.lib, args, exclusions, log_dir).as_dict()
        report["modules"][m] = r
        print("{status}  run={run} pass={passed} fail={failed} err={errors} skip={skipped} "
              "excl={excluded} hung={hung}  {runtime_s:.1f}s".format(**r), flush=True)
        if r["status"] in ("aborted", "fatal", "lib unavailable"):
            rc = 1
        for n in r["notes"]:
            print(f"    note: {n}")
        if args.json:
            _write_json(args.json, report)  # keep partial results on ^C

    print()
    print(format_table({m: r for m, r in report["modules"].items() if "run" in r}))
    for m, r in report["modules"].items():
        bad = dict(r.get("failed_ids", {}), **r.get("error_ids", {}),
                   **r.get("fixture_error_ids", {}))
        if bad:
            print(f"\n{m}: {len(bad)} failing/erroring")
            for i, d in sorted(bad.items()):
                print("  {}\n      {}".format(i, d.splitlines()[0][:160] if d else ""))
        for b in r.get("blocked_calls", []):
            print("  BLOCKED outside call in {}: {}({})".format(b["id"], b["call"], b["arg"]))
    if args.compare:
        diff = compare(report, args.compare)
        print(f"\nOutcome differences vs {args.compare} ({len(diff)}):")
        print("\n".join(diff))
    if args.json:
        _write_json(args.json, report)
    return rc


def _write_json(path, report):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
