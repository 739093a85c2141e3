"""WebSockets from WSGI code, with real clients against real server processes:
``tgreen.websocket`` (the native API), flask-sock (simple-websocket) and
python-socketio/engineio in threading mode, under tgreen-serve and under
``gunicorn -k tgreen.gunicorn.Worker``; the connection takeover
(tgreen/wsgi/_takeover.py); many idle connections and a broadcast; a client
that vanishes; a client that does not read."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests
from _serve_helpers import ROOT, Serve, free_port

pytest.importorskip("wsproto")
websockets_sync = pytest.importorskip("websockets.sync.client")
websockets_asyncio = pytest.importorskip("websockets.asyncio.client")
ws_client = pytest.importorskip("websocket")          # websocket-client
pytest.importorskip("flask_sock")
socketio = pytest.importorskip("socketio")

from websockets.exceptions import ConnectionClosed as ClientClosed

APPS = textwrap.dedent('''
    import os

    import socketio
    from flask import Flask
    from flask_sock import Sock

    from tgreen import websocket

    # -- flask-sock (simple-websocket) -------------------------------------------------
    flask_app = Flask(__name__)
    sock = Sock(flask_app)

    @sock.route("/flask/echo")
    def flask_echo(ws):
        while True:
            data = ws.receive()
            if data == "bye":
                break
            ws.send(data)

    @flask_app.route("/flask/plain")
    def flask_plain():
        return "plain flask"

    # -- python-socketio / engineio, threading mode --------------------------------------
    sio = socketio.Server(async_mode="threading")
    sio_app = socketio.WSGIApp(sio, flask_app)

    @sio.event
    def echo(sid, data):
        sio.emit("echoed", data, to=sid)

    # -- tgreen.websocket ----------------------------------------------------------------
    CLIENTS = set()
    STATE = {"sent": 0, "closed": 0, "dropped": 0}

    @websocket.route(subprotocols=["chat", "superchat"], max_message_size=64 * 1024)
    def echo_ws(ws, environ):
        for msg in ws:
            if msg == "ping-me":
                ws.ping(b"srv")
            elif msg == "pongs?":
                ws.send(repr(ws.pongs))
            elif msg == "wait":
                try:
                    ws.receive(timeout=0.3)
                except TimeoutError:
                    ws.send("timed out")
            elif msg == "subprotocol?":
                ws.send(str(ws.subprotocol))
            elif msg == "close-4001":
                ws.close(4001, "as asked")
            elif msg == "boom":
                raise RuntimeError("the handler failed")
            else:
                ws.send(msg)
        if ws.close_code == 1006:
            STATE["dropped"] += 1

    @websocket.route
    def hub(ws, environ):
        CLIENTS.add(ws)
        try:
            for msg in ws:
                if msg.startswith("broadcast "):
                    for other in list(CLIENTS):
                        try:
                            other.send(msg[len("broadcast "):])
                        except websocket.ConnectionClosed:
                            pass
        finally:
            CLIENTS.discard(ws)
            STATE["closed"] += 1

    @websocket.route
    def flood(ws, environ):
        chunk = b"x" * (1 << 20)
        try:
            while True:
                ws.send(chunk)
                STATE["sent"] += 1
        except websocket.ConnectionClosed:
            pass

    def native(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/state":
            body = " ".join(str(v) for v in (os.getpid(), STATE["sent"], STATE["closed"],
                                              STATE["dropped"], len(CLIENTS))).encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        if path == "/plain-upgrade":
            # An Upgrade request the app answers in HTTP: gunicorn.socket unused.
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"plain answer"]
        return {"/echo": echo_ws, "/hub": hub, "/flood": flood}[path](environ, start_response)
''')


@pytest.fixture(scope="module")
def apps(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wsapps") / "wsapps.py"
    path.write_text(APPS)
    return path


@pytest.fixture(scope="module")
def native(apps):
    """One tgreen-serve for the native-API tests: 300 cores, a 1 s request
    timeout that a WebSocket must outlive."""
    with Serve(f"{apps}:native", "--cores", "300", "--timeout", "1") as srv:
        yield srv


def _ws(srv, path: str) -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


def _state(srv) -> list[int]:
    return [int(x) for x in requests.get(srv.url + "/state", timeout=10).text.split()]


def _wait_for(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# -- the native API ------------------------------------------------------------------------

def test_echo_of_text_and_binary_messages_keeps_their_type(native):
    with websockets_sync.connect(_ws(native, "/echo")) as ws:
        ws.send("héllo")
        assert ws.recv() == "héllo"
        ws.send(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff"
        big = "z" * 60000           # several frames' worth on the wire
        ws.send(big)
        assert ws.recv() == big


def test_a_fragmented_message_arrives_whole(native):
    with websockets_sync.connect(_ws(native, "/echo")) as ws:
        ws.send(iter(["one ", "two ", "three"]))
        assert ws.recv() == "one two three"


def test_the_first_subprotocol_the_endpoint_speaks_is_chosen(native):
    with websockets_sync.connect(_ws(native, "/echo"), subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat"
        ws.send("subprotocol?")
        assert ws.recv() == "chat"


def test_client_pings_are_answered_and_server_pings_get_the_clients_pongs(native):
    with websockets_sync.connect(_ws(native, "/echo")) as ws:
        assert ws.ping(b"cli").wait(5)
        ws.send("ping-me")
        ws.send("pongs?")          # read after the pong came back: the client answers at once
        assert _wait_for(lambda: (ws.send("pongs?"), "b'srv'" in ws.recv())[1], 5)


def test_receive_with_a_timeout_raises_timeout_error_and_the_connection_stays_open(native):
    with websockets_sync.connect(_ws(native, "/echo")) as ws:
        ws.send("wait")
        assert ws.recv(timeout=5) == "timed out"
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"


def test_close_sends_the_apps_code_and_reason(native):
    with websockets_sync.connect(_ws(native, "/echo")) as ws:
        ws.send("close-4001")
        with pytest.raises(ClientClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == 4001
    assert info.value.rcvd.reason == "as asked"


def test_a_message_over_max_message_size_closes_with_1009(native):
    with websockets_sync.connect(_ws(native, "/echo"), max_size=None) as ws:
        ws.send(b"x" * (64 * 1024 + 1))
        with pytest.raises(ClientClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == 1009


def test_a_message_of_exactly_max_message_size_is_accepted(native):
    with websockets_sync.connect(_ws(native, "/echo"), max_size=None) as ws:
        ws.send(b"x" * (64 * 1024))
        assert len(ws.recv(timeout=5)) == 64 * 1024


def test_invalid_utf8_in_a_text_message_closes_with_1007(native):
    client = ws_client.create_connection(_ws(native, "/echo"), timeout=5)
    try:
        client.send_frame(ws_client.ABNF.create_frame(b"\xff\xfe", ws_client.ABNF.OPCODE_TEXT))
        opcode, frame = client.recv_data_frame(control_frame=True)
        assert opcode == ws_client.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 1007
    finally:
        client.sock.close()


def test_a_handler_that_raises_closes_with_1011_and_its_error_is_logged(native):
    with websockets_sync.connect(_ws(native, "/echo")) as ws:
        ws.send("boom")
        with pytest.raises(ClientClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == 1011
    assert _wait_for(lambda: "RuntimeError: the handler failed" in native.output(), 5)
    assert "after it took the connection over" in native.output()


def test_a_plain_http_request_to_a_websocket_route_gets_426(native):
    r = requests.get(native.url + "/echo", timeout=10)
    assert r.status_code == 426
    assert r.headers["Upgrade"] == "websocket"


def test_a_bad_handshake_gets_400_and_the_connection_stays_http(native):
    with socket.create_connection(("127.0.0.1", native.port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")   # no Sec-WebSocket-Key
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 400 ")


def test_an_upgrade_request_the_app_answers_in_http_gets_that_answer(native):
    with socket.create_connection(("127.0.0.1", native.port), timeout=5) as s:
        s.sendall(b"GET /plain-upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert data.endswith(b"plain answer")


def test_a_websocket_outlives_the_request_timeout(native):
    with websockets_sync.connect(_ws(native, "/echo")) as ws:
        time.sleep(1.6)            # --timeout 1: the sweep would have cut a request
        ws.send("alive")
        assert ws.recv(timeout=5) == "alive"
    assert "ran longer" not in native.output()


# -- many connections, broadcast -----------------------------------------------------------

def test_one_worker_holds_200_idle_connections_and_broadcasts_to_all(native):
    n = 200
    base_closed = _state(native)[2]

    async def main() -> list:
        conns = await asyncio.gather(*(websockets_asyncio.connect(_ws(native, "/hub"), open_timeout=30)
                                       for _ in range(n)))
        assert _wait_for(lambda: _state(native)[4] == n, 10), _state(native)
        await asyncio.sleep(0.5)          # all idle, each holding its core
        await conns[0].send("broadcast to everyone")
        got = await asyncio.gather(*(asyncio.wait_for(c.recv(), 30) for c in conns))
        await asyncio.gather(*(c.close() for c in conns))
        return got

    got = asyncio.run(main())
    assert got == ["to everyone"] * n
    # Every handler ended when its client closed: every core is free again.
    assert _wait_for(lambda: _state(native)[2] - base_closed == n and _state(native)[4] == 0, 10)


# -- clients that vanish or do not read --------------------------------------------------

@pytest.fixture(scope="module")
def one_core(apps):
    with Serve(f"{apps}:native", "--cores", "1") as srv:
        yield srv


@pytest.mark.parametrize("how", ["reset", "fin"])
def test_a_client_that_vanishes_frees_its_core_at_once(one_core, how):
    # One core: the second client is served only once the first one's is free.
    srv = one_core
    dropped = _state(srv)[3]
    first = ws_client.create_connection(_ws(srv, "/echo"), timeout=5)
    first.send("hi")
    assert first.recv() == "hi"
    raw = first.sock
    if how == "reset":
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()                      # no close frame
    t0 = time.monotonic()
    second = ws_client.create_connection(_ws(srv, "/echo"), timeout=10)
    second.send("next")
    assert second.recv() == "next"
    took = time.monotonic() - t0
    second.close()
    assert _wait_for(lambda: _state(srv)[3] > dropped, 5), "the handler did not see the drop (1006)"
    assert took < 5, took            # sanity bound: at once, not after a timeout


def test_a_client_that_does_not_read_blocks_the_sender_with_memory_bounded(native):
    pid, sent0 = _state(native)[:2]
    rss0 = _rss(pid)
    client = ws_client.create_connection(_ws(native, "/flood"), timeout=10)
    try:
        # The sender fills the socket buffers and then waits (greenly: the
        # worker still answers), however long the client does not read.
        assert _wait_for(lambda: _state(native)[1] > sent0, 5)
        time.sleep(1.0)
        stalled = _state(native)[1] - sent0
        time.sleep(1.0)
        assert _state(native)[1] - sent0 == stalled, "the sender kept going while nobody read"
        assert stalled < 40, f"{stalled} MiB went out to a client that read nothing"
        assert _rss(pid) - rss0 < 100 * 1024 * 1024
        # Reading lets it go on.
        for _ in range(stalled + 20):
            assert len(client.recv()) == 1 << 20
        assert _state(native)[1] - sent0 > stalled + 10
    finally:
        client.sock.close()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- flask-sock and python-socketio, under tgreen-serve and gunicorn --------------------------

class _Gunicorn:
    """``gunicorn -k tgreen.gunicorn.Worker`` serving ``wsapps:APP``."""

    def __init__(self, apps: Path, app: str) -> None:
        self.port = free_port()
        self.log = apps.parent / f"gunicorn-{self.port}.log"
        self.cmd = [sys.executable, "-m", "gunicorn", "-k", "tgreen.gunicorn.Worker", "-w", "1",
                    "-b", f"127.0.0.1:{self.port}", "--control-socket", str(apps.parent / "g.ctl"),
                    "--error-logfile", str(self.log), f"wsapps:{app}"]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(apps.parent), str(ROOT)]))

    def __enter__(self) -> _Gunicorn:
        self.proc = subprocess.Popen(self.cmd, cwd=self.log.parent, env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60       # a loaded CI machine boots Flask slowly
        while True:
            try:
                requests.get(self.url + "/flask/plain", timeout=10)
                return self
            except requests.RequestException:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gunicorn did not start:\n{self.output()}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture(scope="module", params=["tgreen-serve", "gunicorn"])
def flask_server(request, apps):
    if request.param == "tgreen-serve":
        with Serve(f"{apps}:sio_app") as srv:
            yield srv
    else:
        with _Gunicorn(apps, "sio_app") as srv:
            yield srv


def test_flask_sock_echoes_and_the_server_ends_the_connection_quietly(flask_server):
    url = flask_server.url.replace("http://", "ws://") + "/flask/echo"
    with websockets_sync.connect(url) as ws:
        ws.send("from flask-sock")
        assert ws.recv(timeout=5) == "from flask-sock"
        ws.send(b"bin")
        assert ws.recv(timeout=5) == b"bin"
        ws.send("bye")
        with pytest.raises(ClientClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == 1000
    # The app's StopIteration after the takeover is how it ends, not an error;
    # and the server still serves HTTP.
    assert requests.get(flask_server.url + "/flask/plain", timeout=10).text == "plain flask"
    assert "Traceback" not in flask_server.output()


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]])
def test_a_socketio_client_talks_to_python_socketio_in_threading_mode(flask_server, transports):
    client = socketio.Client()
    got = threading.Event()
    received = []

    @client.on("echoed")
    def _on(data):
        received.append(data)
        got.set()

    client.connect(flask_server.url, transports=transports, wait_timeout=10)
    try:
        # A polling client upgrades to the WebSocket in the background.
        assert _wait_for(lambda: client.transport() == "websocket", 10)
        client.emit("echo", {"n": 1})
        assert got.wait(10)
        assert received == [{"n": 1}]
    finally:
        client.disconnect()
    assert "Traceback" not in flask_server.output()


def test_the_chat_example_relays_a_message_to_everyone_in_the_room():
    with Serve(ROOT / "examples" / "websocket_chat.py") as srv:
        assert "WebSocket" in requests.get(srv.url, timeout=10).text
        with websockets_sync.connect(_ws(srv, "/chat")) as a:
            assert "joined (1 here)" in a.recv(timeout=5)
            with websockets_sync.connect(_ws(srv, "/chat")) as b:
                assert "joined (2 here)" in b.recv(timeout=5)
                assert "joined (2 here)" in a.recv(timeout=5)
                b.send("hello room")
                assert a.recv(timeout=5).endswith(": hello room")
                assert b.recv(timeout=5).endswith(": hello room")
            assert a.recv(timeout=5).endswith(" left")


def test_a_server_stop_past_the_graceful_timeout_closes_open_websockets_with_1001(apps):
    srv = Serve(f"{apps}:native", "--graceful-timeout", "1")
    with srv:
        with websockets_sync.connect(_ws(srv, "/echo")) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            srv.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ClientClosed) as info:
                ws.recv(timeout=20)
        assert info.value.rcvd.code == 1001
        assert srv.proc.wait(20) == 0
