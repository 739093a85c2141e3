import os
import time

import requests
from django.db import connection
from django.db.models import CharField, Func, Value
from django.http import JsonResponse

from .models import Item

UPSTREAM_URL = os.environ["UPSTREAM_URL"]


class PgSleep(Func):
    function = "pg_sleep"
    output_field = CharField()


def request_args(request):
    return int(request.GET.get("i", 0)), float(request.GET.get("d", 0))


def sleep(request):
    i, d = request_args(request)
    time.sleep(d)
    return JsonResponse({"kind": "sleep", "i": i})


def upstream(request):
    i, d = request_args(request)
    r = requests.get(f"{UPSTREAM_URL}/slow", params={"i": i, "d": d}, timeout=30)
    r.raise_for_status()
    return JsonResponse({"kind": "upstream", "i": i, "upstream": r.json()})


def db(request):
    i, d = request_args(request)
    item = Item.objects.annotate(slept=PgSleep(Value(d))).get(pk=i)
    return JsonResponse({"kind": "db", "i": i, "db": item.name,
                         "driver": connection.Database.__name__})
