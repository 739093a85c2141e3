"""patch_all() in fresh interpreters: real scripts, real loopback servers."""

import subprocess
import sys
import textwrap


def run(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-W", "always", "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_patched_stdlib_runs_blocking_calls_concurrently():
    out = run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import socket, time, select, selectors, threading
        import tgreen
        assert socket.socket is tgreen.socket.socket
        assert select.select is tgreen.select.select
        assert selectors.DefaultSelector is tgreen.selectors.DefaultSelector
        t0 = time.monotonic()
        gs = [tgreen.spawn(time.sleep, 0.2) for _ in range(50)]
        tgreen.joinall(gs)
        print("elapsed", round(time.monotonic() - t0, 2))
    """)
    assert float(out.stdout.split()[-1]) < 1.0


def test_asyncio_and_tornado_keep_original_modules():
    run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, asyncio.selector_events, asyncio.base_events, tornado.netutil
        import socket, selectors
        assert asyncio.selector_events.selectors.DefaultSelector is not selectors.DefaultSelector
        assert asyncio.base_events.socket.socket is not socket.socket
        assert tornado.netutil.socket.socket is not socket.socket
        loop = asyncio.new_event_loop()
        # The real selector; only as a loop's selector inside a greenlet does it
        # wait through the hub (patch_asyncio).
        from tgreen.monkey import get_original
        from tgreen.selectors import LoopSelector
        assert type(loop._selector) is LoopSelector
        assert isinstance(loop._selector, get_original("selectors", "DefaultSelector"))
        async def echo():
            srv = await asyncio.start_server(lambda r, w: w.write(b"hi"), "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            data = await r.read(2)
            w.close(); srv.close()
            return data
        assert loop.run_until_complete(echo()) == b"hi"
        loop.close()
        assert asyncio.run(echo()) == b"hi"
    """)


def test_patching_is_idempotent_and_originals_available():
    run("""
        import socket, time
        orig_sleep, orig_socket = time.sleep, socket.socket
        import tgreen.monkey as m
        m.patch_all(); m.patch_all()
        assert m.is_module_patched("socket") and m.is_module_patched("time")
        assert m.is_object_patched("socket", "socket")
        assert not m.is_object_patched("socket", "inet_aton")
        assert m.get_original("time", "sleep") is orig_sleep
        assert m.get_original("socket", "socket") is orig_socket
        assert m.get_original("socket", ["socket"]) == [orig_socket]
        assert time.sleep.__name__ == "sleep"  # wrapt keeps introspection
    """)


def test_late_patch_warns_about_stale_copies():
    out = run("""
        import types, sys
        mod = types.ModuleType("userlib")
        exec("from time import sleep", mod.__dict__)
        sys.modules["userlib"] = mod
        import tgreen.monkey; tgreen.monkey.patch_all()
    """)
    assert "userlib.sleep" in out.stderr and "MonkeyPatchWarning" in out.stderr


def test_urllib_against_local_http_server_concurrently():
    out = run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import http.server, time, urllib.request
        import tgreen

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                time.sleep(0.2)          # green: other requests proceed
                body = self.path.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *a): pass

        class Server(http.server.HTTPServer):
            request_queue_size = 128  # the default 5 drops SYNs: 1 s retransmits

        srv = Server(("127.0.0.1", 0), H)
        port = srv.server_address[1]
        def serve():
            while True:
                conn, addr = srv.socket.accept()
                tgreen.spawn(srv.process_request, conn, addr)
        tgreen.spawn(serve)
        t0 = time.monotonic()
        urls = [f"http://127.0.0.1:{port}/{i}" for i in range(30)]
        bodies = tgreen.Pool(30).map(lambda u: urllib.request.urlopen(u).read(), urls)
        assert bodies == [f"/{i}".encode() for i in range(30)]
        print("elapsed", time.monotonic() - t0)
    """)
    assert float(out.stdout.split()[-1]) < 2.0


def test_time_sleep_in_plain_thread_stays_blocking_and_works():
    run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import threading, time, concurrent.futures, asyncio
        out = []
        t = threading.Thread(target=lambda: (time.sleep(0.01), out.append(1)))
        t.start(); t.join()
        assert out == [1]
        async def main():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, lambda: (time.sleep(0.01), 5)[1])
        assert asyncio.run(main()) == 5
    """)


def test_python_m_tgreen_monkey_runs_script(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import socket, tgreen\nprint(socket.socket is tgreen.socket.socket)\n")
    out = subprocess.run([sys.executable, "-m", "tgreen.monkey", str(script)],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
