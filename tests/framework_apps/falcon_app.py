"""Falcon with psycopg 3, a connection per request (see README.md here).

Written as Falcon's and psycopg's docs write it; it never imports tgreen.
"""

import os
import time

import falcon
import psycopg
import requests

UPSTREAM_URL = os.environ["UPSTREAM_URL"]
CONNINFO = "host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={PG_DB}".format(**os.environ)


def request_args(req):
    return req.get_param_as_int("i", default=0), req.get_param_as_float("d", default=0.0)


class SleepResource:
    def on_get(self, req, resp):
        i, d = request_args(req)
        time.sleep(d)
        resp.media = {"kind": "sleep", "i": i}


class UpstreamResource:
    def on_get(self, req, resp):
        i, d = request_args(req)
        r = requests.get(f"{UPSTREAM_URL}/slow", params={"i": i, "d": d}, timeout=30)
        r.raise_for_status()
        resp.media = {"kind": "upstream", "i": i, "upstream": r.json()}


class DatabaseResource:
    def on_get(self, req, resp):
        i, d = request_args(req)
        with psycopg.connect(CONNINFO) as conn:
            row = conn.execute("SELECT pg_sleep(%s), %s", (d, i)).fetchone()
        resp.media = {"kind": "db", "i": i, "db": row[1]}


app = falcon.App()
app.add_route("/sleep", SleepResource())
app.add_route("/upstream", UpstreamResource())
app.add_route("/db", DatabaseResource())
