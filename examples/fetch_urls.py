"""Fetch 100 URLs concurrently with plain urllib.request, made green by patch_all().

It starts its own little HTTP server on loopback (each response takes 0.1 s),
then fetches 100 URLs from it through a pool of greenlets: about 0.1 s in
total instead of 10 s sequentially. Run: python examples/fetch_urls.py [N]
"""

import tgreen.monkey

tgreen.monkey.patch_all()

import http.server  # noqa: E402 - after patching, on purpose
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

import tgreen  # noqa: E402


class SlowHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        time.sleep(0.1)  # a green sleep: the server handles others meanwhile
        body = f"you asked for {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.HTTPServer):
    request_queue_size = 1024


def serve(server):
    while True:
        conn, addr = server.socket.accept()
        tgreen.spawn(server.process_request, conn, addr)


def main(n: int = 100) -> None:
    server = Server(("127.0.0.1", 0), SlowHandler)
    tgreen.spawn(serve, server)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}/page/{i}" for i in range(n)]

    t0 = time.monotonic()
    bodies = tgreen.Pool(100).map(lambda url: urllib.request.urlopen(url).read(), urls)
    elapsed = time.monotonic() - t0

    assert all(b == f"you asked for /page/{i}\n".encode() for i, b in enumerate(bodies))
    print(f"fetched {len(bodies)} URLs in {elapsed:.2f} s (sequentially: {n * 0.1:.1f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
