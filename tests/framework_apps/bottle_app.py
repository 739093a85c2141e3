"""Bottle with psycopg2, a connection per request (see README.md here).

Written as Bottle's docs write it; it never imports tgreen.
"""

import os
import time
from contextlib import closing

import psycopg2
import requests
from bottle import Bottle, request

UPSTREAM_URL = os.environ["UPSTREAM_URL"]
DSN = {"host": os.environ["PG_HOST"], "port": os.environ["PG_PORT"],
       "user": os.environ["PG_USER"], "dbname": os.environ["PG_DB"]}

app = Bottle()


def request_args():
    return int(request.query.get("i", 0)), float(request.query.get("d", 0))


@app.get("/sleep")
def sleep():
    i, d = request_args()
    time.sleep(d)
    return {"kind": "sleep", "i": i}


@app.get("/upstream")
def upstream():
    i, d = request_args()
    r = requests.get(f"{UPSTREAM_URL}/slow", params={"i": i, "d": d}, timeout=30)
    r.raise_for_status()
    return {"kind": "upstream", "i": i, "upstream": r.json()}


@app.get("/db")
def db():
    i, d = request_args()
    with closing(psycopg2.connect(**DSN)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_sleep(%s), %s", (d, i))
        row = cur.fetchone()
    return {"kind": "db", "i": i, "db": row[1]}
