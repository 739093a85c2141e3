"""Streaming responses from a generator, fairly.

``/count`` streams a line every 0.1 s (a green sleep: the core is free for
other requests meanwhile, and each line is flushed as soon as the generator
blocks). ``/big`` streams 64 x 1 KiB as fast as it can; chunks produced in
one burst leave in one write, and a long CPU-bound stream yields to the loop
every few milliseconds so it cannot starve other requests. ``close()`` of the
generator runs even when the client disconnects mid-stream. ::

    tgreen-serve examples/wsgi_streaming.py
    curl -N http://127.0.0.1:8000/count
    curl -s http://127.0.0.1:8000/big | wc -c
"""

import tgreen


def count(n):
    try:
        for i in range(n):
            yield f"{i}\n".encode()
            tgreen.sleep(0.1)
    finally:
        # Runs on normal end, and when the client goes away (GeneratorExit).
        pass


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/count":
        n = int(environ.get("QUERY_STRING") or 10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return count(n)  # no Content-Length: chunked on HTTP/1.1
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * 1024 for _ in range(64))
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"try /count or /big\n"]
