"""Hello, World as a WSGI app, served by tgreen.

Run it with the production server (pre-forked workers, N green cores each)::

    tgreen-serve examples/wsgi_hello.py --cores 100 --workers 2
    curl http://127.0.0.1:8000/

or straight from Python, one process, no CLI::

    python examples/wsgi_hello.py [PORT]
"""

import sys

BODY = b"Hello, World!\n"


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


if __name__ == "__main__":
    from tgreen.wsgi import WSGIServer

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = WSGIServer(("127.0.0.1", port), application, cores=100)
    print(f"serving on http://127.0.0.1:{server.address[1]}/", flush=True)
    server.serve_forever()
