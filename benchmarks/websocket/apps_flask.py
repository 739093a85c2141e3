"""flask-sock (simple-websocket) app for benchmarks/websocket/bench.py: the
same code under gunicorn -k gevent, gunicorn -k tgreen.gunicorn.Worker and
tgreen-serve. Each connection waits in ``ws.receive()``; a message
"broadcast PAYLOAD" is sent to every connected client."""

from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)
CLIENTS: set = set()


@sock.route("/ws")
def ws_route(ws):
    CLIENTS.add(ws)
    try:
        while True:
            msg = ws.receive()
            if msg is None:
                break
            if msg.startswith("broadcast "):
                payload = msg[len("broadcast "):]
                for other in list(CLIENTS):
                    try:
                        other.send(payload)
                    except Exception:  # noqa: BLE001, S110 - a closed client
                        pass
    finally:
        CLIENTS.discard(ws)


@app.route("/count")
def count():
    return str(len(CLIENTS))
