"""Green TLS (tgreen.ssl) against real loopback TLS servers with a test CA.

The PKI (a CA, a server certificate for localhost/127.0.0.1, one for
other.test, and an unrelated CA) is generated at test time with
``cryptography``. In-process tests use ``tgreen.ssl`` without patching;
everything under ``patch_all()`` runs in a fresh interpreter.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import os
import socket as stdsocket
import socketserver
import ssl as stdssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse

import pytest

import tgreen
from tgreen import socket, ssl

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


# -- test PKI ------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _make_leaf(ca_key, ca_cert, names: list[str], usage=ExtendedKeyUsageOID.SERVER_AUTH):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _write(path, cert=None, key=None) -> str:
    with open(path, "wb") as f:
        if cert is not None:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return str(path)


class PKI:
    def __init__(self, d) -> None:
        ca_key, ca_cert = _make_ca("tgreen test CA")
        self.ca = _write(d / "ca.pem", ca_cert)
        key, cert = _make_leaf(ca_key, ca_cert, ["localhost", HOST])
        self.cert, self.key = _write(d / "server.pem", cert), _write(d / "server.key", key=key)
        key, cert = _make_leaf(ca_key, ca_cert, ["other.test"])
        self.other_cert, self.other_key = _write(d / "other.pem", cert), _write(d / "other.key", key=key)
        key, cert = _make_leaf(ca_key, ca_cert, ["client.test"], ExtendedKeyUsageOID.CLIENT_AUTH)
        self.client_cert, self.client_key = _write(d / "client.pem", cert), _write(d / "client.key", key=key)
        _, wrong_cert = _make_ca("some other CA")
        self.wrong_ca = _write(d / "wrong-ca.pem", wrong_cert)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def client_ctx(pki, cafile=None):
    return ssl.create_default_context(cafile=cafile or pki.ca)


# -- servers -------------------------------------------------------------------

def read_line(s) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


class GreenTLSServer:
    """A green TLS line server: one greenlet per connection, handshake in it."""

    def __init__(self, ctx, handler) -> None:
        self.ctx, self.handler = ctx, handler
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.served = 0
        self.acceptor = tgreen.spawn(self._serve)

    def _serve(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            tgreen.spawn(self._handle, conn)

    def _handle(self, conn) -> None:
        try:
            with self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as s:
                s.do_handshake()
                self.handler(s)
                self.served += 1
        except (stdssl.SSLError, OSError) as e:
            self.errors.append(e)

    def close(self) -> None:
        self.acceptor.kill()
        self.listener.close()


def echo_after(delay: float):
    def handler(s) -> None:
        line = read_line(s)
        tgreen.sleep(delay)
        s.sendall(b"echo:" + line)
    return handler


@pytest.fixture
def echo_server(pki):
    srv = GreenTLSServer(ssl.server_context(pki.cert, pki.key), echo_after(0.2))
    yield srv
    srv.close()


def _sched() -> tuple[float, float]:
    """(seconds on CPU, seconds runnable but waiting for a CPU) of this thread."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            oncpu, runq, _ = f.read().split()
        return int(oncpu) / 1e9, int(runq) / 1e9
    except OSError:
        return time.thread_time(), 0.0


def ticker(stop: list, gaps: list) -> None:
    """Tick every 5 ms until ``stop``; record each gap as (wall, slept).

    A long gap is other greenlets computing (cooperative scheduling: fifty
    handshakes or requests.get() calls run back to back when they become
    ready together), the OS preempting a busy machine, or the thread asleep
    in a blocking call. Only the last means "the hub was blocked": it is the
    part of the gap spent neither on a CPU nor waiting for one
    (/proc/thread-self/schedstat). A healthy hub sleeps at most until the
    ticker's next 5 ms timer.
    """
    last, (cpu0, runq0) = time.monotonic(), _sched()
    while not stop:
        tgreen.sleep(0.005)
        now, (cpu, runq) = time.monotonic(), _sched()
        gaps.append((now - last, (now - last) - (cpu - cpu0) - (runq - runq0)))
        last, cpu0, runq0 = now, cpu, runq


def max_slept(gaps) -> float:
    return max(s for _, s in gaps)


def tls_request(ctx, port: int, payload: bytes, hostname: str = "localhost", timeout=5.0) -> bytes:
    with (socket.create_connection((HOST, port), timeout=timeout) as raw,
          ctx.wrap_socket(raw, server_hostname=hostname) as s):
        s.sendall(payload)
        return read_line(s)


# -- the module ----------------------------------------------------------------

def test_module_mirrors_stdlib_names():
    missing = [n for n in dir(stdssl) if not n.startswith("__") and not hasattr(ssl, n)]
    assert missing == []
    assert issubclass(ssl.SSLSocket, stdssl.SSLSocket)
    assert issubclass(ssl.SSLSocket, socket.socket)
    assert issubclass(ssl.SSLContext, stdssl.SSLContext)
    assert ssl.SSLObject is stdssl.SSLObject and ssl.MemoryBIO is stdssl.MemoryBIO
    ctx = ssl.create_default_context()
    assert type(ctx) is ssl.SSLContext and ctx.sslsocket_class is ssl.SSLSocket
    assert type(ssl._create_default_https_context()) is ssl.SSLContext
    assert type(ssl._create_unverified_context()) is ssl.SSLContext
    # Without patching, the stdlib is untouched.
    assert stdssl.SSLContext.sslsocket_class is not ssl.SSLSocket
    with socket.socket() as raw, pytest.raises(TypeError, match="public constructor"):
        ssl.SSLSocket(raw)


def test_context_property_setters_still_work():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.options |= ssl.OP_NO_TICKET
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_TICKET and ctx.verify_mode == ssl.CERT_REQUIRED


# -- concurrency ---------------------------------------------------------------

def test_fifty_concurrent_handshakes_and_requests_never_block_the_hub(pki, echo_server):
    ctx = client_ctx(pki)
    stop: list = []
    gaps: list = []
    tick = tgreen.spawn(ticker, stop, gaps)
    t0 = time.monotonic()
    gs = [tgreen.spawn(tls_request, ctx, echo_server.port, b"req %d\n" % i) for i in range(50)]
    results = [g.get(timeout=10) for g in gs]
    elapsed = time.monotonic() - t0
    stop.append(1)
    tick.join(1)
    assert results == [b"echo:req %d\n" % i for i in range(50)]
    assert elapsed < 6.0, elapsed  # one after the other: 50 x 0.2 s = 10 s
    assert echo_server.served == 50 and echo_server.errors == []
    assert max_slept(gaps) < 0.05, gaps


def test_client_socket_is_green_and_negotiates_alpn(pki, echo_server):
    ctx = client_ctx(pki)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (socket.create_connection((HOST, echo_server.port)) as raw,
          ctx.wrap_socket(raw, server_hostname="localhost") as s):
        assert type(s) is ssl.SSLSocket
        assert s.selected_alpn_protocol() == "http/1.1"
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        assert s.getpeercert()["subjectAltName"] == (("DNS", "localhost"), ("IP Address", HOST))
        s.sendall(b"x\n")
        assert read_line(s) == b"echo:x\n"


def test_makefile_and_large_sendall_roundtrip(pki):
    def handler(s):
        f = s.makefile("rwb")
        n = int(f.readline())
        data = f.read(n)
        f.write(b"%d %d\n" % (len(data), sum(data) % 251))
        f.flush()
    srv = GreenTLSServer(ssl.server_context(pki.cert, pki.key), handler)
    try:
        payload = os.urandom(3 * 1024 * 1024)
        with (socket.create_connection((HOST, srv.port), timeout=10) as raw,
              client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as s):
            s.sendall(b"%d\n" % len(payload))
            s.sendall(payload)
            assert read_line(s) == b"%d %d\n" % (len(payload), sum(payload) % 251)
    finally:
        srv.close()


def test_one_greenlet_reads_while_another_writes_the_same_tls_socket(pki):
    def echo(s):
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return
            s.sendall(chunk)
    srv = GreenTLSServer(ssl.server_context(pki.cert, pki.key), echo)
    try:
        payload = os.urandom(4 * 1024 * 1024)
        with (socket.create_connection((HOST, srv.port), timeout=10) as raw,
              client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as s):
            def reader():
                got = bytearray()
                while len(got) < len(payload):
                    got += s.recv(65536)
                return bytes(got)
            r = tgreen.spawn(reader)
            w = tgreen.spawn(s.sendall, payload)  # blocks on a full buffer until r reads
            w.get(timeout=10)
            assert r.get(timeout=10) == payload
    finally:
        srv.close()


def test_sendfile_falls_back_to_send_over_tls(pki, tmp_path):
    got = []

    def handler(s):
        buf = b""
        while len(buf) < 200_000:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        got.append(buf)
        s.sendall(b"ok\n")
    srv = GreenTLSServer(ssl.server_context(pki.cert, pki.key), handler)
    try:
        data = os.urandom(200_000)
        path = tmp_path / "blob"
        path.write_bytes(data)
        with (socket.create_connection((HOST, srv.port)) as raw,
              client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as s):
            with open(path, "rb") as f:
                assert s.sendfile(f) == len(data)
            assert read_line(s) == b"ok\n"
        assert got == [data]
    finally:
        srv.close()


# -- SNI -----------------------------------------------------------------------

def test_sni_callback_picks_certificate_and_sees_green_socket(pki):
    other = ssl.server_context(pki.other_cert, pki.other_key)
    seen = []

    def pick(sslsock, name, ctx):
        seen.append((type(sslsock), name))
        if name == "other.test":
            sslsock.context = other
    main = ssl.server_context(pki.cert, pki.key)
    main.sni_callback = pick
    srv = GreenTLSServer(main, echo_after(0))
    try:
        ctx = client_ctx(pki)
        assert tls_request(ctx, srv.port, b"a\n", hostname="other.test") == b"echo:a\n"
        assert tls_request(ctx, srv.port, b"b\n", hostname="localhost") == b"echo:b\n"
        assert seen == [(ssl.SSLSocket, "other.test"), (ssl.SSLSocket, "localhost")]
        # The client really got other.test's certificate.
        with (socket.create_connection((HOST, srv.port)) as raw,
              ctx.wrap_socket(raw, server_hostname="other.test") as s):
            assert s.getpeercert()["subjectAltName"] == (("DNS", "other.test"),)
            s.sendall(b"c\n")
            read_line(s)
    finally:
        srv.close()


# -- failures and timeouts -----------------------------------------------------

def test_failed_handshakes_raise_in_the_calling_greenlet_only(pki, echo_server):
    def wrong_ca():
        return tls_request(client_ctx(pki, cafile=pki.wrong_ca), echo_server.port, b"x\n")

    def wrong_name():
        return tls_request(client_ctx(pki), echo_server.port, b"y\n", hostname="other.test")

    bad = [tgreen.spawn(wrong_ca), tgreen.spawn(wrong_name)]
    for g in bad:
        g.report_errors = False
    good = [tgreen.spawn(tls_request, client_ctx(pki), echo_server.port, b"ok %d\n" % i) for i in range(5)]
    assert [g.get(timeout=5) for g in good] == [b"echo:ok %d\n" % i for i in range(5)]
    tgreen.joinall(bad, timeout=5)
    for g in bad:
        assert isinstance(g.exception, stdssl.SSLCertVerificationError), g.exception
    assert "self-signed" in str(bad[0].exception) or "unable to get local issuer" in str(bad[0].exception)
    assert "Hostname mismatch" in str(bad[1].exception) or "hostname" in str(bad[1].exception).lower()
    # The server saw two failed handshakes and kept serving.
    assert not echo_server.acceptor.dead
    assert tls_request(client_ctx(pki), echo_server.port, b"again\n") == b"echo:again\n"


@pytest.fixture
def silent_listener():
    """Completes TCP connections (backlog) but never says a word."""
    s = socket.create_server((HOST, 0))
    yield s
    s.close()


def test_handshake_timeout_against_a_silent_server(pki, silent_listener):
    stop: list = []
    gaps: list = []
    tick = tgreen.spawn(ticker, stop, gaps)
    raw = socket.create_connection(silent_listener.getsockname(), timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="handshake operation timed out"):
        client_ctx(pki).wrap_socket(raw, server_hostname="localhost")
    elapsed = time.monotonic() - t0
    stop.append(1)
    tick.join(1)
    assert 0.25 < elapsed < 2.0, elapsed  # a hung handshake never returns
    assert raw.fileno() == -1  # detached into the SSLSocket, which closed on failure
    assert max_slept(gaps) < 0.05 and len(gaps) > 20, gaps


def test_recv_timeout_and_tgreen_timeout_on_tls_socket(pki):
    srv = GreenTLSServer(ssl.server_context(pki.cert, pki.key), lambda s: tgreen.sleep(2))
    try:
        with (socket.create_connection((HOST, srv.port)) as raw,
              client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as s):
            s.settimeout(0.2)
            t0 = time.monotonic()
            with pytest.raises(TimeoutError, match="read operation timed out"):
                s.recv(10)
            assert 0.15 < time.monotonic() - t0 < 0.5
            s.settimeout(None)
            with tgreen.Timeout(0.2, False):
                s.recv(10)
                pytest.fail("recv returned")
    finally:
        srv.close()


def test_close_wakes_a_greenlet_blocked_in_recv(pki):
    srv = GreenTLSServer(ssl.server_context(pki.cert, pki.key), lambda s: tgreen.sleep(2))
    try:
        raw = socket.create_connection((HOST, srv.port))
        s = client_ctx(pki).wrap_socket(raw, server_hostname="localhost")
        reader = tgreen.spawn(s.recv, 10)
        reader.report_errors = False
        tgreen.sleep(0.05)
        s.close()
        reader.join(1)
        assert reader.ready() and isinstance(reader.exception, OSError)
    finally:
        srv.close()


# -- unwrap and non-blocking mode ----------------------------------------------

def test_starttls_then_unwrap_back_to_clear_text(pki):
    sctx = ssl.server_context(pki.cert, pki.key)
    log = []

    def serve(listener):
        conn, _ = listener.accept()
        assert read_line(conn) == b"STARTTLS\n"
        conn.sendall(b"GO\n")
        tls = sctx.wrap_socket(conn, server_side=True)
        log.append(read_line(tls))
        tls.sendall(b"secret ok\n")
        plain = tls.unwrap()
        log.append(read_line(plain))
        plain.sendall(b"clear ok\n")
        plain.close()

    listener = socket.create_server((HOST, 0))
    server = tgreen.spawn(serve, listener)
    try:
        c = socket.create_connection(listener.getsockname(), timeout=5)
        c.sendall(b"STARTTLS\n")
        assert read_line(c) == b"GO\n"
        tls = client_ctx(pki).wrap_socket(c, server_hostname="localhost")
        tls.sendall(b"secret\n")
        assert read_line(tls) == b"secret ok\n"
        plain = tls.unwrap()
        assert plain is tls and plain.version() is None
        plain.sendall(b"clear\n")
        assert read_line(plain) == b"clear ok\n"
        plain.close()
        server.get(timeout=5)
        assert log == [b"secret\n", b"clear\n"]
    finally:
        listener.close()


def test_non_blocking_mode_matches_the_stdlib(pki, echo_server):
    ctx = client_ctx(pki)
    other = socket.create_connection((HOST, echo_server.port))
    other.setblocking(False)
    with pytest.raises(ValueError, match="non-blocking"):
        ctx.wrap_socket(other, server_hostname="localhost")
    raw = socket.create_connection((HOST, echo_server.port))
    raw.setblocking(False)
    s = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    assert s.gettimeout() == 0.0
    with pytest.raises(ssl.SSLWantReadError):
        s.do_handshake()
    waits = 0
    while True:
        try:
            s.do_handshake()
            break
        except ssl.SSLWantReadError:
            waits += 1
            tgreen.get_hub().wait_read(s.fileno(), 2)
    assert waits >= 1 and s.version()
    with pytest.raises(ssl.SSLWantReadError):
        s.recv(10)
    s.send(b"nb\n")
    while True:  # readable may mean only a TLS 1.3 session ticket arrived
        try:
            data = s.recv(100)
            break
        except ssl.SSLWantReadError:
            assert tgreen.get_hub().wait_read(s.fileno(), 2)
    assert data == b"echo:nb\n"
    s.close()


def test_do_handshake_block_true_on_a_non_blocking_socket(pki, echo_server):
    raw = socket.create_connection((HOST, echo_server.port))
    raw.setblocking(False)
    s = client_ctx(pki).wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    s.do_handshake(block=True)
    assert s.version() and s.gettimeout() == 0.0
    s.close()


def test_connect_on_unconnected_wrapped_socket(pki, echo_server):
    s = client_ctx(pki).wrap_socket(socket.socket(), server_hostname="localhost")
    assert s.version() is None
    s.settimeout(5)
    s.connect((HOST, echo_server.port))
    s.sendall(b"late\n")
    assert read_line(s) == b"echo:late\n"
    s.close()


def test_plain_os_thread_still_works_blocking(pki):
    """A thread that never used tgreen: green TLS sockets block only it."""
    sctx = ssl.server_context(pki.cert, pki.key)
    listener = socket.create_server((HOST, 0))
    result = []

    def serve():
        conn, _ = listener.accept()
        with sctx.wrap_socket(conn, server_side=True) as s:
            result.append(read_line(s))
            s.sendall(b"thread ok\n")

    t = threading.Thread(target=serve)
    t.start()
    try:
        assert tls_request(client_ctx(pki), listener.getsockname()[1], b"hi\n") == b"thread ok\n"
    finally:
        t.join(5)
        listener.close()
    assert result == [b"hi\n"]


def test_server_context_verifies_client_certificates(pki):
    ctx = ssl.server_context(pki.cert, pki.key, cafile=pki.ca)
    assert isinstance(ctx, stdssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    srv = GreenTLSServer(ctx, echo_after(0))
    try:
        # No client certificate: the server refuses (TLS 1.3 reports it on read).
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls_request(client_ctx(pki), srv.port, b"x\n")
        cctx = client_ctx(pki)
        cctx.load_cert_chain(pki.client_cert, pki.client_key)
        assert tls_request(cctx, srv.port, b"y\n") == b"echo:y\n"
    finally:
        srv.close()


def test_server_context_serves_asyncio_streams_on_the_hub_loop(pki):
    import asyncio

    async def handle(reader, writer):
        line = await reader.readline()
        writer.write(b"asyncio:" + line)
        await writer.drain()
        writer.close()

    server = tgreen.wait(asyncio.start_server(handle, HOST, 0, ssl=ssl.server_context(pki.cert, pki.key)))
    try:
        port = server.sockets[0].getsockname()[1]
        gs = [tgreen.spawn(tls_request, client_ctx(pki), port, b"g%d\n" % i) for i in range(10)]
        assert [g.get(timeout=5) for g in gs] == [b"asyncio:g%d\n" % i for i in range(10)]
    finally:
        server.close()
        tgreen.wait(server.wait_closed())


# -- under patch_all(), in fresh interpreters -------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        time.sleep(float(q.get("delay", ["0"])[0]))
        body = f"hello {urllib.parse.urlsplit(self.path).path}".encode()
        # One write: headers and body in two would meet Nagle + delayed ACK.
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def log_message(self, *args) -> None:
        pass


class _ThreadedHTTPS(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """A stdlib HTTPS server in OS threads (no tgreen): handshake per thread."""

    daemon_threads = True
    request_queue_size = 256

    def finish_request(self, request, client_address) -> None:
        # The TLS 1.3 session tickets and the response are two writes: no Nagle.
        request.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
        with self.tls.wrap_socket(request, server_side=True) as s:
            self.RequestHandlerClass(s, client_address, self)

    def handle_error(self, request, client_address) -> None:
        self.failures += 1


@pytest.fixture(scope="module")
def https_server(pki):
    srv = _ThreadedHTTPS((HOST, 0), _Handler)
    srv.tls = stdssl.SSLContext(stdssl.PROTOCOL_TLS_SERVER)
    srv.tls.load_cert_chain(pki.cert, pki.key)
    srv.failures = 0
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def run_script(code: str, *args: str, timeout: float = 60) -> dict:
    out = subprocess.run([sys.executable, "-W", "always", "-c", textwrap.dedent(code), *args],
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


_CLIENTS = """
    import json, sys, time, warnings
    {prelude}
    import http.client, ssl, urllib.request
    import requests, urllib3
    import tgreen

    port, ca = int(sys.argv[1]), sys.argv[2]
    url = f"https://127.0.0.1:{{port}}"

    def sched():  # as tests/test_ssl.py's _sched and ticker
        try:
            with open("/proc/thread-self/schedstat") as f:
                oncpu, runq, _ = f.read().split()
            return int(oncpu) / 1e9, int(runq) / 1e9
        except OSError:
            return time.thread_time(), 0.0

    def ticker(stop, gaps):
        last, (cpu0, runq0) = time.monotonic(), sched()
        while not stop:
            time.sleep(0.005)
            now, (cpu, runq) = time.monotonic(), sched()
            gaps.append((now - last, (now - last) - (cpu - cpu0) - (runq - runq0)))
            last, cpu0, runq0 = now, cpu, runq

    def via_requests(i):
        return requests.get(f"{{url}}/r{{i}}?delay=0.2", verify=ca, timeout=5).text

    pool = urllib3.PoolManager(ca_certs=ca, maxsize=50, timeout=5)
    def via_urllib3(i):
        return pool.request("GET", f"{{url}}/u{{i}}?delay=0.2").data.decode()

    def via_http_client(i):
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                        context=ssl.create_default_context(cafile=ca))
        c.request("GET", f"/h{{i}}?delay=0.2")
        body = c.getresponse().read().decode()
        c.close()
        return body

    def via_urllib_request(i):
        ctx = ssl.create_default_context(cafile=ca)
        with urllib.request.urlopen(f"{{url}}/q{{i}}?delay=0.2", context=ctx, timeout=5) as r:
            return r.read().decode()

    report = {{}}
    for name, fn, prefix in (("requests", via_requests, "r"), ("urllib3", via_urllib3, "u"),
                             ("http.client", via_http_client, "h"),
                             ("urllib.request", via_urllib_request, "q")):
        stop, gaps = [], []
        tick = tgreen.spawn(ticker, stop, gaps)
        t0 = time.monotonic()
        gs = [tgreen.spawn(fn, i) for i in range(50)]
        bodies = [g.get(timeout=20) for g in gs]
        elapsed = time.monotonic() - t0
        stop.append(1); tick.join()
        assert bodies == [f"hello /{{prefix}}{{i}}" for i in range(50)], (name, bodies[:3])
        report[name] = {{"elapsed": elapsed, "max_gap": max(w for w, _ in gaps),
                        "max_slept": max(i for _, i in gaps)}}
    report["sslsocket_class"] = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).sslsocket_class.__module__
    report["warnings"] = [str(w.message) for w in caught if "ssl" in str(w.message).lower()]
    print(json.dumps(report))
"""


@pytest.mark.parametrize("order", ["patch_first", "requests_imported_first"])
def test_https_libraries_are_concurrent_under_patch_all(pki, https_server, order):
    if order == "patch_first":
        prelude = ("caught = []\n    import tgreen.monkey; tgreen.monkey.patch_all()")
    else:
        # requests/urllib3 copied ssl.SSLContext (and created contexts) before
        # patching: with tgreen those still make green sockets.
        prelude = ("import requests, urllib3, ssl\n"
                   "    early_ctx = ssl.create_default_context()\n"
                   "    with warnings.catch_warnings(record=True) as caught:\n"
                   "        warnings.simplefilter('always')\n"
                   "        import tgreen.monkey; tgreen.monkey.patch_all()")
    rep = run_script(_CLIENTS.format(prelude=prelude), str(https_server.server_address[1]), pki.ca)
    for name in ("requests", "urllib3", "http.client", "urllib.request"):
        assert rep[name]["elapsed"] < 6.0, (name, rep)  # serially: 50 x 0.2 s = 10 s
        # A blocked hub would sleep through the server's 0.2 s delay.
        assert rep[name]["max_slept"] < 0.05, (name, rep)
    assert rep["sslsocket_class"] == "tgreen.ssl"
    assert rep["warnings"] == []


def test_patch_ssl_makes_every_context_green_and_warns_about_stale_subclasses(pki):
    rep = run_script("""
        import json, socket, ssl, sys, warnings
        early = ssl.create_default_context()          # before patching
        from ssl import SSLContext as EarlySSLContext  # copied names
        from ssl import SSLSocket as EarlySSLSocket    # (fine for isinstance: no warning)
        class EarlySock(ssl.SSLSocket):                # a subclass of the blocking class
            pass
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import tgreen.monkey; tgreen.monkey.patch_all()
            tgreen.monkey.patch_ssl()                  # idempotent
        import tgreen.ssl
        msgs = [str(w.message) for w in caught
                if issubclass(w.category, tgreen.monkey.MonkeyPatchWarning) and "ssl" in str(w.message)]
        assert ssl.SSLSocket is tgreen.ssl.SSLSocket
        assert tgreen.monkey.is_module_patched("ssl")
        assert tgreen.monkey.get_original("ssl", "SSLSocket") is EarlySock.__base__
        s = early.wrap_socket(socket.socket(), server_hostname="localhost")
        assert type(s) is tgreen.ssl.SSLSocket, type(s)
        s.close()
        assert EarlySSLContext(ssl.PROTOCOL_TLS_CLIENT).sslsocket_class is tgreen.ssl.SSLSocket
        # The stdlib property setters do not recurse (the gevent RecursionError).
        early.options |= ssl.OP_NO_TICKET
        early.verify_mode = ssl.CERT_REQUIRED
        early.minimum_version = ssl.TLSVersion.TLSv1_2
        early._msg_callback = lambda *a: None
        # A stale subclass still constructs (blocking) instead of crashing.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.sslsocket_class = EarlySock
        with ctx.wrap_socket(socket.socket(), server_hostname="x") as s:
            assert type(s) is EarlySock
        class Late(ssl.SSLSocket):
            pass
        assert issubclass(Late, tgreen.ssl.SSLSocket)
        assert issubclass(ssl.SSLSocket, EarlySSLSocket)
        print(json.dumps({"warnings": msgs}))
    """)
    assert len(rep["warnings"]) == 1 and "__main__.EarlySock subclasses" in rep["warnings"][0], rep


def test_tornado_and_asyncio_tls_still_work_after_patch_all(pki):
    rep = run_script("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, json, ssl, sys, time
        import requests
        import tornado.httpserver, tornado.web, tornado.gen, tornado.httpclient, tornado.netutil
        import tgreen
        cert, key, ca = sys.argv[1:4]

        class H(tornado.web.RequestHandler):
            async def get(self):
                await tornado.gen.sleep(0.2)
                self.write("tornado " + self.request.path)

        # ssl_options as a dict: tornado builds an original SSLContext and sets
        # options on it (the path where gevent-style patching recurses).
        server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/.*", H)]),
                                               ssl_options={"certfile": cert, "keyfile": key})
        sock, = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets([sock])
        port = sock.getsockname()[1]
        url = f"https://127.0.0.1:{port}"

        # Tornado's own client (SSLIOStream over the loop), awaited from a greenlet.
        resp = tgreen.wait(tornado.httpclient.AsyncHTTPClient().fetch(
            url + "/t", ssl_options=ssl.create_default_context(cafile=ca)))
        assert resp.body == b"tornado /t", resp.body

        # Green requests against the Tornado server in the same loop, concurrently.
        t0 = time.monotonic()
        gs = [tgreen.spawn(lambda i: requests.get(f"{url}/g{i}", verify=ca, timeout=5).text, i)
              for i in range(30)]
        bodies = [g.get(timeout=10) for g in gs]
        green_elapsed = time.monotonic() - t0
        assert bodies == [f"tornado /g{i}" for i in range(30)]

        # asyncio's sslproto (SSLObject over memory BIOs), server and client.
        async def handle(reader, writer):
            line = await reader.readline()
            writer.write(b"asyncio " + line)
            await writer.drain()
            writer.close()

        async def main():
            sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            sctx.load_cert_chain(cert, key)
            srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=sctx)
            p = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", p,
                                                 ssl=ssl.create_default_context(cafile=ca),
                                                 server_hostname="localhost")
            w.write(b"hi\\n")
            line = await r.readline()
            w.close()
            srv.close()
            await srv.wait_closed()
            return line

        line = tgreen.wait(main())
        assert line == b"asyncio hi\\n", line
        print(json.dumps({"green_elapsed": green_elapsed}))
    """, pki.cert, pki.key, pki.ca)
    assert rep["green_elapsed"] < 4.5, rep  # 30 requests of 0.2 s: 6 s one at a time
