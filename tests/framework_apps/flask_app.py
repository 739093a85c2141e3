"""Flask with SQLAlchemy's connection pool on psycopg2 (see README.md here).

Written as Flask's and SQLAlchemy's docs write it; it never imports tgreen.
"""

import os
import time

import requests
from flask import Flask, request
from sqlalchemy import create_engine, text

UPSTREAM_URL = os.environ["UPSTREAM_URL"]

engine = create_engine(
    "postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DB}".format(**os.environ),
    pool_size=20,
    max_overflow=10,
    pool_timeout=30,
    connect_args={"application_name": "flask_app"},
)

app = Flask(__name__)


def request_args():
    return request.args.get("i", 0, type=int), request.args.get("d", 0.0, type=float)


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
    with engine.connect() as conn:
        row = conn.execute(text("SELECT pg_sleep(:d), :i"), {"d": d, "i": i}).one()
    return {"kind": "db", "i": i, "db": row[1]}


@app.get("/pool")
def pool():
    return {"size": engine.pool.size(), "checkedin": engine.pool.checkedin(),
            "checkedout": engine.pool.checkedout()}
