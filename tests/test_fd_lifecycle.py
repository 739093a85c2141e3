"""No loop registration outlives its fd (hub.py, "Registrations").

Each test is a pattern ordinary programs use: a socket returned from a
function without close(), a TLS socket dropped, a socketpair dropped while a
greenlet reads it, ``os.close`` behind tgreen's back, dup/fromfd, makefile,
pipes, subprocess streams, a signalfd wait killed, and a Tornado app mixing
``tgreen.wait(fetch)`` with green sockets. Each then checks that the *next*
fd with the same number works: its waits fire, and no selector error
(FileNotFoundError out of ``epoll.modify``, a libuv abort) reaches anyone.
Every test runs on asyncio's loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import os
import signal
import sys
import threading

import pytest

import tgreen
import tgreen.loop
from tgreen import hub as _hub
from tgreen import socket

# These tests drop sockets and files on purpose: their ResourceWarnings are the point.
pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("ignore::ResourceWarning")]

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=LOOPS)
def loop_kind(request):
    """Run the test's hub on the given loop (the autouse fixture made an
    asyncio one; replace it before anything uses it)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    before = tgreen.loop.loop_kind()
    tgreen.loop.set_loop_kind(request.param)
    _hub._local.__dict__.clear()
    loop = _hub._new_loop()
    asyncio.set_event_loop(loop)
    try:
        yield request.param
    finally:
        # What the test dropped is collected here, under its own
        # ResourceWarning filter, not in whichever test runs next.
        collect()
        tgreen.loop.set_loop_kind(before)
        h = getattr(_hub._local, "hub", None)
        _hub._local.__dict__.clear()
        asyncio.set_event_loop(None)
        for lp in {loop, h.loop if h else loop}:
            if not lp.is_closed() and not lp.is_running():
                lp.close()


def collect() -> None:
    gc.collect()
    gc.collect()


class EchoServer:
    """A green echo server on loopback, closed by the test."""

    def __init__(self, wrap=None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = self.listener.getsockname()
        self.wrap = wrap
        self.conns: list = []
        self.g = tgreen.spawn(self._serve)

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(tgreen.spawn(self._echo, c))

    def _echo(self, c) -> None:
        try:
            if self.wrap is not None:
                c = self.wrap(c)
            with c:
                while True:
                    data = c.recv(65536)
                    if not data:
                        return
                    c.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.g.kill()
        self.listener.close()
        for g in self.conns:
            g.kill()


@pytest.fixture
def echo(loop_kind):
    srv = EchoServer()
    yield srv
    srv.close()


def roundtrip_on_fresh_socket(addr) -> None:
    """A fresh socket's waits fire: connect (a write wait), recv (a read wait)."""
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"ping")
        assert s.recv(10) == b"ping"


def pair_that_must_work() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(10)
        b.settimeout(10)
        g = tgreen.spawn(a.recv, 10)
        tgreen.sleep(0.01)           # a's read wait is registered now
        b.sendall(b"x")
        assert g.get(timeout=10) == b"x"
        big = b"y" * (1 << 19)       # more than the socket buffers: write waits
        w = tgreen.spawn(b.sendall, big)
        got = 0
        while got < len(big):
            got += len(a.recv(1 << 16))
        w.get(timeout=10)


# -- sockets left to the garbage collector -------------------------------------------


def test_a_tcp_client_returning_without_close_in_a_loop_keeps_working(echo):
    def fetch(i: int) -> bytes:
        s = socket.create_connection(echo.addr, timeout=10)
        s.sendall(b"req%d" % i)
        return s.recv(100)       # no close(): the collector closes it

    for i in range(100):
        assert fetch(i) == b"req%d" % i
        if i % 7 == 0:
            collect()
    roundtrip_on_fresh_socket(echo.addr)


def test_a_dropped_socket_hands_its_fd_number_to_the_next_socket_cleanly(loop_kind):
    for _ in range(20):
        a, b = socket.socketpair()
        tgreen.spawn(b.sendall, b"z")
        assert a.recv(1) == b"z"          # a's reader is registered (kept)
        fd = a.fileno()
        del a, b
        collect()
        c, d = socket.socketpair()
        assert fd in (c.fileno(), d.fileno())   # the number was reused
        with c, d:
            # A write wait on the reused number (epoll.modify on a stale
            # entry raised FileNotFoundError here) and a read wait.
            c.setblocking(False)
            try:
                while True:
                    c.send(b"x" * 65536)
            except BlockingIOError:
                pass
            c.setblocking(True)
            c.settimeout(10)
            drain = tgreen.spawn(lambda peer: [peer.recv(1 << 20) for _ in range(40)], d)
            c.sendall(b"y" * 100_000)
            drain.kill()
    pair_that_must_work()


def test_tls_client_sockets_dropped_without_close(loop_kind, tmp_path):
    from tgreen import ssl

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.server_context(cert, key)
    srv = EchoServer(wrap=lambda c: server_ctx.wrap_socket(c, server_side=True))
    client_ctx = ssl.create_default_context(cafile=cert)
    try:
        def fetch(i: int) -> bytes:
            raw = socket.create_connection(srv.addr, timeout=10)
            s = client_ctx.wrap_socket(raw, server_hostname="localhost")
            s.sendall(b"tls%d" % i)
            return s.recv(100)

        for i in range(15):
            assert fetch(i) == b"tls%d" % i
            collect()
        pair_that_must_work()
    finally:
        srv.close()


def test_a_socketpair_dropped_while_a_reader_waits_in_another_greenlet(loop_kind):
    results = []
    for _ in range(15):
        a, b = socket.socketpair()
        g = tgreen.spawn(lambda s: results.append(s.recv(10)), a)
        tgreen.sleep(0)           # g waits to read a
        del a, b                  # b is collected: g reads EOF, then a goes too
        collect()
        g.join(10)
        assert g.dead
        collect()
        pair_that_must_work()
    assert results == [b""] * 15


def test_a_killed_reader_and_its_dropped_socket_leave_nothing_behind(loop_kind):
    for _ in range(15):
        a, b = socket.socketpair()
        g = tgreen.spawn(a.recv, 10)
        tgreen.sleep(0)
        g.kill()
        del a, b, g
        collect()
        pair_that_must_work()


# -- fds closed behind tgreen's back -----------------------------------------------


def test_os_close_behind_the_library_leaves_the_next_socket_working(echo):
    for _ in range(20):
        s = socket.create_connection(echo.addr, timeout=10)
        s.sendall(b"a")
        assert s.recv(10) == b"a"                 # s's reader stays registered
        fd = s.fileno()
        os.close(fd)                              # a C library closed it
        t = socket.create_connection(echo.addr, timeout=10)
        assert t.fileno() == fd
        t.sendall(b"b")
        assert t.recv(10) == b"b"
        t.close()
        s.detach()                                # the owner learns, late
    roundtrip_on_fresh_socket(echo.addr)


def test_a_late_close_of_the_old_owner_leaves_the_new_owner_registered(loop_kind):
    a, b = socket.socketpair()
    tgreen.spawn(b.sendall, b"1")
    assert a.recv(1) == b"1"
    fd = a.fileno()
    os.close(fd)
    c, d = socket.socketpair()
    assert fd in (c.fileno(), d.fileno())
    mine = c if c.fileno() == fd else d
    other = d if mine is c else c
    mine.settimeout(10)
    g = tgreen.spawn(mine.recv, 10)
    tgreen.sleep(0.01)
    a.detach()                    # the old owner closes "its" number now
    other.sendall(b"2")
    assert g.get(timeout=10) == b"2"
    for s in (b, c, d):
        s.close()


def test_a_wait_on_a_closed_fd_number_raises_ebadf_not_a_selector_error(loop_kind):
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    hub = tgreen.get_hub()
    with pytest.raises(OSError) as info:
        hub.wait_read(fd, 1)
    assert info.value.errno == 9
    assert not isinstance(info.value, FileNotFoundError)
    pair_that_must_work()


# -- dup, fromfd, makefile ---------------------------------------------------------


def test_dup_and_fromfd_sockets_outlive_their_dropped_original(loop_kind):
    for make in (lambda s: s.dup(),
                 lambda s: socket.fromfd(s.fileno(), s.family, s.type)):
        a, b = socket.socketpair()
        tgreen.spawn(b.sendall, b"1")
        assert a.recv(1) == b"1"                  # the original is registered
        a2 = make(a)
        a2.settimeout(10)
        del a
        collect()                                 # the original's fd closes
        g = tgreen.spawn(a2.recv, 10)
        tgreen.sleep(0.01)
        b.sendall(b"2")
        assert g.get(timeout=10) == b"2"          # the duplicate still works
        pair_that_must_work()
        a2.close()
        b.close()


def test_a_socket_kept_alive_by_makefile_then_dropped(loop_kind):
    for _ in range(10):
        a, b = socket.socketpair()
        f = a.makefile("rb")
        a.close()                     # the file keeps the socket open
        tgreen.spawn(b.sendall, b"line\n")
        assert f.readline() == b"line\n"
        del a, f
        collect()
        b.close()
        pair_that_must_work()


# -- pipes, file objects, subprocess streams, signalfd -------------------------------


def test_green_pipe_file_objects_dropped_or_closed_behind_their_back(loop_kind):
    from tgreen.fileobject import open_fd

    for closing in ("drop", "os.close"):
        for _ in range(10):
            r, w = os.pipe()
            reader = open_fd(r, "rb", 0)
            writer = open_fd(w, "wb", 0)
            tgreen.spawn(writer.write, b"x")
            assert reader.read(1) == b"x"        # r's reader is registered
            if closing == "drop":
                del reader, writer
                collect()
            else:
                os.close(r)
                os.close(w)
            r2, w2 = os.pipe()
            assert r in (r2, w2)
            reader2 = open_fd(r2, "rb", 0)
            writer2 = open_fd(w2, "wb", 0)
            g = tgreen.spawn(reader2.read, 1)
            tgreen.sleep(0.01)
            writer2.write(b"y")
            assert g.get(timeout=10) == b"y"
            reader2.close()
            writer2.close()
            if closing == "os.close":
                # The old objects learn late; their numbers belong to nobody
                # (or to someone else) now: only forget them.
                reader._closefd = writer._closefd = False
                reader.close()
                writer.close()
            pair_that_must_work()


def test_subprocess_streams_dropped_without_close(loop_kind):
    import tgreen.subprocess as sp

    for i in range(6):
        p = sp.Popen(["echo", str(i)], stdout=sp.PIPE)
        assert p.stdout.readline() == b"%d\n" % i
        p.wait(10)
        del p
        collect()
        pair_that_must_work()


@pytest.mark.skipif(not hasattr(signal, "sigtimedwait") or sys.platform != "linux",
                    reason="signalfd waits are Linux-only")
def test_a_killed_signalfd_waiter_leaves_its_number_clean(loop_kind):
    from tgreen import signal as gsignal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signalfd waits run in the main thread")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        for _ in range(10):
            g = tgreen.spawn(gsignal.sigtimedwait, {signal.SIGUSR2}, 30)
            tgreen.sleep(0.01)                  # it waits on its signalfd
            g.kill()
            pair_that_must_work()
        g = tgreen.spawn(gsignal.sigtimedwait, {signal.SIGUSR2}, 10)
        tgreen.sleep(0.01)
        # To this thread, which blocks it (a process-wide kill could land in
        # another thread, where SIGUSR2's default action ends the process).
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR2)
        assert g.get(timeout=10).si_signo == signal.SIGUSR2
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# -- inside a running Tornado app --------------------------------------------------


def test_tornado_app_mixing_fetch_and_dropped_green_sockets(loop_kind):
    from tornado.httpclient import AsyncHTTPClient
    from tornado.web import Application, RequestHandler

    class Hello(RequestHandler):
        def get(self):
            self.write("hello")

    def work(port: int) -> list:
        out = []

        def raw_get() -> bytes:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk          # returns without close()

        for i in range(25):
            assert raw_get().endswith(b"hello")
            if i % 3 == 0:
                collect()
            r = tgreen.wait(AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/"), timeout=10)
            out.append(r.body)
        return out

    async def main() -> list:
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        socks = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(Application([("/", Hello)]))
        server.add_sockets(socks)
        try:
            port = socks[0].getsockname()[1]
            return await tgreen.run_green(work, port)
        finally:
            server.stop()
            await server.close_all_connections()

    loop = asyncio.get_event_loop()
    assert loop.run_until_complete(main()) == [b"hello"] * 25


def test_os_close_behind_the_back_then_tornado_reuses_the_number(loop_kind):
    from tornado.httpclient import AsyncHTTPClient
    from tornado.web import Application, RequestHandler

    class Hello(RequestHandler):
        def get(self):
            self.write("hello")

    def work(port: int) -> list:
        out = []
        for _ in range(10):
            a, b = socket.socketpair()
            tgreen.spawn(b.sendall, b"1")
            assert a.recv(1) == b"1"           # a's reader is registered
            os.close(a.fileno())               # closed behind our back
            os.close(b.fileno())
            r = tgreen.wait(AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/"), timeout=10)
            out.append(r.body)
            a.detach()
            b.detach()
        return out

    async def main() -> list:
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        socks = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(Application([("/", Hello)]))
        server.add_sockets(socks)
        try:
            return await tgreen.run_green(work, socks[0].getsockname()[1])
        finally:
            server.stop()
            await server.close_all_connections()

    loop = asyncio.get_event_loop()
    assert loop.run_until_complete(main()) == [b"hello"] * 10


# -- helpers -------------------------------------------------------------------------


def _self_signed(tmp_path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


# -- ResourceWarnings: exactly the stdlib's ------------------------------------------


def _resource_warnings(make) -> list[str]:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        make()
        collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.filterwarnings("default::ResourceWarning")
def test_a_collected_green_socket_warns_once_like_the_stdlib_and_a_closed_one_not_at_all(loop_kind):
    def registered_then_dropped() -> None:
        a, b = socket.socketpair()
        tgreen.spawn(b.sendall, b"1")
        assert a.recv(1) == b"1"      # a's registration is kept
        b.close()

    def closed() -> None:
        a, b = socket.socketpair()
        tgreen.spawn(b.sendall, b"1")
        assert a.recv(1) == b"1"
        a.close()
        b.close()

    def detached() -> None:
        a, b = socket.socketpair()
        os.close(a.detach())
        b.close()

    got = _resource_warnings(registered_then_dropped)
    assert len(got) == 1 and got[0].startswith("unclosed <tgreen.socket.socket"), got
    assert _resource_warnings(closed) == []
    assert _resource_warnings(detached) == []
    pair_that_must_work()
