"""A chat room over WebSockets in a plain WSGI app, with ``tgreen.websocket``.

Every message a client sends goes to everyone in the room; a client that
says nothing for 30 s gets a ping to keep proxies from dropping it. Run it
with the production server (each connection holds one green core, so give
it as many cores as you expect clients)::

    pip install 'tgreen[websocket]'
    tgreen-serve examples/websocket_chat.py --cores 1000
    # or: gunicorn -k tgreen.gunicorn.Worker --worker-connections 1000 websocket_chat:application

then open http://127.0.0.1:8000/ in two browser tabs, or from a shell::

    python -m websockets ws://127.0.0.1:8000/chat
"""

from tgreen import websocket

ROOM: set = set()

PAGE = b"""<!doctype html><meta charset="utf-8"><title>tgreen chat</title>
<pre id="log"></pre><input id="msg" autofocus placeholder="say something, press Enter">
<script>
const ws = new WebSocket(`ws://${location.host}/chat`);
const log = document.getElementById("log");
ws.onmessage = (e) => { log.textContent += e.data + "\\n"; };
ws.onclose = (e) => { log.textContent += `[closed ${e.code}]\\n`; };
document.getElementById("msg").onkeydown = (e) => {
  if (e.key === "Enter" && e.target.value) { ws.send(e.target.value); e.target.value = ""; }
};
</script>
"""


@websocket.route(max_message_size=16 * 1024)
def chat(ws, environ):
    """One client, in its own green core, for as long as it stays."""
    me = f"{environ['REMOTE_ADDR']}:{environ.get('REMOTE_PORT', '')}"
    ROOM.add(ws)
    _say(f"* {me} joined ({len(ROOM)} here)")
    try:
        while True:
            try:
                text = ws.receive(timeout=30)
            except TimeoutError:
                ws.ping()            # quiet client: keep the connection warm
                continue
            except websocket.ConnectionClosed:
                break
            if isinstance(text, str):
                _say(f"{me}: {text}")
    finally:
        ROOM.discard(ws)
        _say(f"* {me} left")


def _say(line: str) -> None:
    # Sends block only while a client's buffers are full (backpressure);
    # a client that is gone is simply skipped.
    for ws in list(ROOM):
        try:
            ws.send(line)
        except websocket.ConnectionClosed:
            ROOM.discard(ws)


def application(environ, start_response):
    if environ["PATH_INFO"] == "/chat":
        return chat(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(PAGE)))])
    return [PAGE]
