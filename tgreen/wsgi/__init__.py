"""A WSGI server on the tgreen hub: N green cores per process, HTTP/1.1 with
the httptools (llhttp) parser, and a Tornado-friendly container. ::

    from tgreen.wsgi import WSGIServer

    def application(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, World!\\n"]

    WSGIServer(("127.0.0.1", 8000), application, cores=100).serve_forever()

From the command line: ``tgreen-serve app.py --cores 100 --workers 2``.
Inside a Tornado application: ``tgreen.wsgi.WSGIContainer(app, cores=100)``.
"""

from __future__ import annotations

from ._input import ClientDisconnected, RequestError
from ._response import FileWrapper
from .config import Config
from .server import WSGIServer

__all__ = ["WSGIServer", "WSGIContainer", "Config", "FileWrapper", "ClientDisconnected",
           "RequestError"]


def __getattr__(name: str):
    # Tornado is imported only by those who use the container.
    if name == "WSGIContainer":
        from ._container import WSGIContainer

        return WSGIContainer
    raise AttributeError(f"module 'tgreen.wsgi' has no attribute {name!r}")
