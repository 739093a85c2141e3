"""A Flask app that calls an upstream HTTP service with requests, made
concurrent by ``tgreen.monkey.patch_all()``.

``/fetch`` calls ``UPSTREAM_URL`` (default: this app's own ``/upstream``,
which takes 0.2 s) with a plain ``requests.Session``. Its socket is green,
so while one request waits for the upstream the same worker serves others:
50 concurrent ``/fetch`` finish in about 0.2 s, not 10 s. ::

    tgreen-serve examples/wsgi_flask_requests.py --cores 200
    curl http://127.0.0.1:8000/fetch

Patch first: requests (urllib3) looks up ``socket``, ``ssl`` and
``threading`` when imported and when it builds its pools.
"""

import tgreen.monkey

tgreen.monkey.patch_all()

import os  # noqa: E402
import time  # noqa: E402

import flask  # noqa: E402
import requests  # noqa: E402

app = flask.Flask(__name__)
http = requests.Session()
http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=100))


@app.get("/upstream")
def upstream():
    time.sleep(0.2)  # green after patch_all()
    return {"upstream": True}


@app.get("/fetch")
def fetch():
    url = os.environ.get("UPSTREAM_URL") or flask.request.host_url + "upstream"
    started = time.monotonic()
    r = http.get(url, timeout=10)
    return {"status": r.status_code, "body": r.json(), "seconds": round(time.monotonic() - started, 3)}


application = app
