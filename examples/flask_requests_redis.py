"""Flask + requests + redis-py, unmodified, made concurrent by ``patch_all()``.

Every request to ``/fetch`` calls an upstream HTTP service with requests and
counts the call in Redis with redis-py. Both libraries use plain sockets,
which ``patch_all()`` made green: while one request waits for the upstream,
the same thread serves the others. 100 requests that each wait 0.2 s
upstream finish in about 0.2 s, in one process and one OS thread.

Run it (a Redis server on 127.0.0.1:6379, or set ``REDIS_URL``)::

    tgreen-serve examples/flask_requests_redis.py --cores 1000
    python examples/flask_requests_redis.py --port 8000     # the same, without the CLI

    curl 'http://127.0.0.1:8000/fetch'                   # upstream: this app's /slow
    curl 'http://127.0.0.1:8000/fetch?url=http://example.test/'
    curl 'http://127.0.0.1:8000/stats'

Settings (environment): ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``),
``UPSTREAM_URL`` (default: this app's own ``/slow?seconds=0.2``, so the
example needs nothing but Redis; a request to ``/fetch`` then holds one core
while its ``/slow`` needs another, hence ``--cores`` at twice the expected
concurrency).

Why ``patch_all()`` first: requests and redis-py look up ``socket``,
``ssl``, ``threading`` and ``time`` when they are imported and when they
build their connection pools; patching afterwards leaves them the blocking
originals (tgreen warns about it).
"""

import tgreen.monkey

tgreen.monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import flask  # noqa: E402
import redis  # noqa: E402
import requests  # noqa: E402
import requests.adapters  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
UPSTREAM_URL = os.environ.get("UPSTREAM_URL")

app = flask.Flask(__name__)
application = app  # what tgreen-serve (and other WSGI servers) look for

# One pool each per process, shared by all greenlets: their locks and queues
# are green too, so a greenlet waiting for a pooled connection lets others run.
store = redis.Redis.from_url(REDIS_URL, socket_timeout=10, max_connections=200)
http = requests.Session()
http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=100))
http.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=100))


@app.get("/")
def index():
    return {"endpoints": ["/fetch?url=URL", "/slow?seconds=S", "/stats"]}


@app.get("/slow")
def slow():
    """A stand-in for a slow upstream: ``time.sleep`` is green after patch_all()."""
    seconds = min(float(flask.request.args.get("seconds", "0.2")), 10.0)
    time.sleep(seconds)
    return {"slept": seconds}


@app.get("/fetch")
def fetch():
    url = flask.request.args.get("url") or UPSTREAM_URL or flask.request.host_url + "slow?seconds=0.2"
    started = time.monotonic()
    upstream = http.get(url, timeout=10)
    hits = store.incr("tgreen-example:fetches")
    return {
        "url": url,
        "status": upstream.status_code,
        "bytes": len(upstream.content),
        "seconds": round(time.monotonic() - started, 3),
        "fetches": hits,
    }


@app.get("/stats")
def stats():
    return {"fetches": int(store.get("tgreen-example:fetches") or 0)}


def serve(host: str, port: int, server: str = "auto") -> None:
    """Serve ``app`` in this process with tgreen's WSGI server (what
    ``tgreen-serve`` does), or with the stdlib's wsgiref server over green
    sockets, one greenlet per connection (``server="wsgiref"``, or when
    tgreen.wsgi is not there)."""
    WSGIServer = None
    if server != "wsgiref":
        try:
            from tgreen.wsgi import WSGIServer
        except ImportError:
            if server == "tgreen":
                raise
    if WSGIServer is not None:
        # Each /fetch holds a core while its default upstream, this app's
        # own /slow, needs another: give twice the cores of the concurrency.
        server = WSGIServer((host, port), app, cores=1000)
        print(f"serving on http://{host}:{server.address[1]}/ (tgreen.wsgi)", flush=True)
        server.serve_forever()
        return

    import wsgiref.simple_server

    class Handler(wsgiref.simple_server.WSGIRequestHandler):
        def log_request(self, *args):
            pass

    class GreenWSGIServer(wsgiref.simple_server.WSGIServer):
        """wsgiref, but each connection is handled in its own greenlet."""

        request_queue_size = 1024  # the listen() backlog; socketserver's 5 drops SYNs

        def process_request(self, request, client_address):
            tgreen.spawn(self._handle, request, client_address)

        def _handle(self, request, client_address):
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    server = wsgiref.simple_server.make_server(host, port, app, GreenWSGIServer, Handler)
    print(f"serving on http://{host}:{server.server_port}/ (wsgiref, green)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--server", choices=["auto", "tgreen", "wsgiref"], default="auto",
                        help="tgreen.wsgi.WSGIServer (auto: when available) or green wsgiref")
    args = parser.parse_args()
    try:
        serve(args.host, args.port, args.server)
    except KeyboardInterrupt:
        sys.exit(0)
