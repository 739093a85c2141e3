"""tgreen.websocket app for benchmarks/websocket/bench.py: the same protocol
as apps_flask.py (wait in receive; "broadcast PAYLOAD" goes to everyone)."""

from tgreen import websocket

CLIENTS: set = set()


@websocket.route
def ws_route(ws, environ):
    CLIENTS.add(ws)
    try:
        for msg in ws:
            if msg.startswith("broadcast "):
                payload = msg[len("broadcast "):]
                for other in list(CLIENTS):
                    try:
                        other.send(payload)
                    except websocket.ConnectionClosed:
                        pass
    finally:
        CLIENTS.discard(ws)


def application(environ, start_response):
    if environ["PATH_INFO"] == "/count":
        body = str(len(CLIENTS)).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    return ws_route(environ, start_response)
