"""Green sockets against real loopback sockets: semantics match the stdlib."""

import os
import socket as stdsocket
import tempfile
import time

import pytest

import tgreen
from tgreen import socket


@pytest.fixture
def listener():
    srv = socket.create_server(("127.0.0.1", 0))
    yield srv
    srv.close()


def test_module_mirrors_stdlib_public_names():
    missing = [n for n in stdsocket.__all__ if not hasattr(socket, n)]
    assert missing == []
    assert issubclass(socket.socket, stdsocket.socket)


def test_accept_connect_roundtrip_concurrently(listener):
    port = listener.getsockname()[1]

    def serve():
        for _ in range(20):
            conn, _ = listener.accept()
            tgreen.spawn(echo, conn)

    def echo(conn):
        with conn:
            conn.sendall(conn.recv(100).upper())

    def client(i):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"hi%d" % i)
            return c.recv(100)

    s = tgreen.spawn(serve)
    gs = [tgreen.spawn(client, i) for i in range(20)]
    assert sorted(g.get(timeout=5) for g in gs) == sorted(b"HI%d" % i for i in range(20))
    s.join(5)


def test_accepted_socket_is_green(listener):
    c = socket.create_connection(listener.getsockname())
    conn, addr = listener.accept()
    assert isinstance(conn, socket.socket)
    assert conn.gettimeout() is None
    c.close(); conn.close()


def test_timeout_semantics_match_cpython():
    a, b = socket.socketpair()
    assert a.gettimeout() is None and a.getblocking()
    a.settimeout(0)
    assert a.gettimeout() == 0.0 and not a.getblocking()
    with pytest.raises(BlockingIOError):
        a.recv(1)
    a.settimeout(0.05)
    assert a.timeout == 0.05
    t0 = time.monotonic()
    with pytest.raises(socket.timeout, match="timed out"):
        a.recv(1)
    assert 0.04 <= time.monotonic() - t0 < 2
    assert socket.timeout is TimeoutError
    a.setblocking(True)
    assert a.gettimeout() is None
    with pytest.raises(ValueError):
        a.settimeout(-1)
    with pytest.raises(TypeError):
        a.settimeout("x")
    a.close(); b.close()


def test_default_timeout_applies_to_new_sockets():
    socket.setdefaulttimeout(0.5)
    try:
        s = socket.socket()
        assert s.gettimeout() == 0.5
        s.close()
    finally:
        socket.setdefaulttimeout(None)


def test_sendall_total_deadline():
    a, b = socket.socketpair()
    a.settimeout(0.1)
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        a.sendall(b"x" * (50 << 20))  # nobody reads
    assert time.monotonic() - t0 < 2
    a.close(); b.close()


def test_sendall_large_payload_intact():
    a, b = socket.socketpair()
    data = os.urandom(4 << 20)
    g = tgreen.spawn(a.sendall, data)
    chunks = []
    n = 0
    while n < len(data):
        d = b.recv(1 << 16)
        chunks.append(d)
        n += len(d)
    g.get(timeout=5)
    assert b"".join(chunks) == data
    a.close(); b.close()


def test_recv_into_recvfrom_and_udp():
    u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u1.bind(("127.0.0.1", 0))
    g = tgreen.spawn(u1.recvfrom, 100)
    tgreen.sleep(0.01)
    u2.sendto(b"dgram", u1.getsockname())
    data, addr = g.get(timeout=1)
    assert data == b"dgram" and addr[1] == u2.getsockname()[1]
    buf = bytearray(10)
    g = tgreen.spawn(u1.recvfrom_into, buf)
    tgreen.sleep(0.01)
    u2.sendto(b"abc", u1.getsockname())
    assert g.get(timeout=1)[0] == 3 and bytes(buf[:3]) == b"abc"
    u1.close(); u2.close()


def test_recvmsg_sendmsg_and_fd_passing():
    a, b = socket.socketpair()
    r, w = os.pipe()
    g = tgreen.spawn(socket.recv_fds, b, 10, 1)
    tgreen.sleep(0.01)
    socket.send_fds(a, [b"fd"], [w])
    msg, fds, flags, addr = g.get(timeout=1)
    assert msg == b"fd" and len(fds) == 1
    os.write(fds[0], b"Z")
    assert os.read(r, 1) == b"Z"
    for fd in (r, w, fds[0]):
        os.close(fd)
    a.close(); b.close()


def test_makefile_readline():
    a, b = socket.socketpair()
    f = a.makefile("rb")
    g = tgreen.spawn(f.readline)
    tgreen.sleep(0.01)
    b.sendall(b"line one\nrest")
    assert g.get(timeout=1) == b"line one\n"
    f.close(); a.close(); b.close()


def test_sendfile_sends_whole_file():
    a, b = socket.socketpair()
    data = os.urandom(3 << 20)
    with tempfile.TemporaryFile() as fh:
        fh.write(data)
        fh.seek(0)
        g = tgreen.spawn(a.sendfile, fh)
        got = bytearray()
        while len(got) < len(data):
            got += b.recv(1 << 16)
        assert g.get(timeout=5) == len(data)
    assert bytes(got) == data
    a.close(); b.close()


def test_connect_refused_and_connect_ex():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    c = socket.socket()
    with pytest.raises(ConnectionRefusedError):
        c.connect(("127.0.0.1", port))
    c.close()
    c = socket.socket()
    assert c.connect_ex(("127.0.0.1", port)) == 111
    c.close()


def test_connect_timeout_to_unresponsive_backlog():
    # A listener with a full backlog never completes the handshake.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fillers = []
    for _ in range(8):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(srv.getsockname())
        fillers.append(f)
    c = socket.socket()
    c.settimeout(0.2)
    t0 = time.monotonic()
    try:
        c.connect(srv.getsockname())
    except socket.timeout:
        assert time.monotonic() - t0 < 3
    finally:
        c.close()
        for f in fillers:
            f.close()
        srv.close()


def test_closed_socket_raises_ebadf_like_stdlib():
    a, b = socket.socketpair()
    a.close()
    with pytest.raises(OSError) as ei:
        a.recv(1)
    assert ei.value.errno == 9
    with pytest.raises(OSError):
        a.send(b"x")
    b.close()


def test_bad_address_types_raise_stdlib_errors():
    s = socket.socket()
    with pytest.raises(TypeError):
        s.connect("not-a-tuple")
    with pytest.raises(OverflowError):
        s.connect(("127.0.0.1", 70000))
    s.close()


def test_dup_detach_fromfd():
    a, b = socket.socketpair()
    a.settimeout(3)
    d = a.dup()
    assert isinstance(d, socket.socket) and d.gettimeout() == 3
    f = socket.fromfd(b.fileno(), b.family, b.type)
    assert isinstance(f, socket.socket)
    fd = d.detach()
    assert d.fileno() == -1
    os.close(fd)
    g = tgreen.spawn(f.recv, 3)
    tgreen.sleep(0.01)
    a.send(b"abc")
    assert g.get(timeout=1) == b"abc"
    for s in (a, b, f):
        s.close()


def test_shutdown_wakes_reader_with_eof():
    a, b = socket.socketpair()
    g = tgreen.spawn(a.recv, 10)
    tgreen.sleep(0.01)
    b.shutdown(socket.SHUT_WR)
    assert g.get(timeout=1) == b""
    a.close(); b.close()


def test_socket_in_plain_thread_blocks_natively():
    import threading

    a, b = socket.socketpair()
    out = []
    t = threading.Thread(target=lambda: out.append(a.recv(5)))
    t.start()
    time.sleep(0.05)
    b.send(b"hello")
    t.join(5)
    assert out == [b"hello"]
    a.close(); b.close()


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as e:
        pytest.skip(f"no ::1 here: {e}")
    c = tgreen.spawn(lambda: socket.create_connection(srv.getsockname()[:2]))
    conn, _ = srv.accept()
    cs = c.get(timeout=2)
    cs.sendall(b"v6")
    assert conn.recv(2) == b"v6"
    for s in (cs, conn, srv):
        s.close()


def test_msg_dontwait_on_blocking_socket_raises_instead_of_waiting():
    a, b = socket.socketpair()
    assert a.gettimeout() is None
    with pytest.raises(BlockingIOError):
        a.recv(10, socket.MSG_DONTWAIT)
    buf = bytearray(4)
    with pytest.raises(BlockingIOError):
        a.recv_into(buf, flags=socket.MSG_DONTWAIT)
    b.send(b"ok")
    assert a.recv(10, socket.MSG_DONTWAIT) == b"ok"
    a.close(); b.close()


def test_create_connection_follows_a_swapped_socket_class_when_patched():
    # The stdlib helpers look `socket` up at call time: tgreen patches only
    # the class, so a test double swapped in still takes effect.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import socket
        class Boom(socket.socket):
            def connect(self, addr):
                raise TimeoutError("mocked")
        socket.socket = Boom
        try:
            socket.create_connection(("127.0.0.1", 9))
        except TimeoutError as e:
            print("mock used:", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "mock used: mocked" in out.stdout, out.stderr
