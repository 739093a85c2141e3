"""Django's ORM and asgiref in greenlets: a greenlet is synchronous code, so
Django's async-safety check lets the ORM run there (without
DJANGO_ALLOW_ASYNC_UNSAFE) and still refuses it in a coroutine on the hub;
asgiref's async_to_sync / sync_to_async work in greenlets without blocking
the others. Real Django on a real sqlite file; each script runs in a fresh
interpreter."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("django")
pytest.importorskip("asgiref")

DJANGO_SETUP = """
import os, sys
os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
import django
from django.conf import settings
settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                           "NAME": sys.argv[1], "OPTIONS": {"timeout": 30}}},
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    USE_TZ=True,
)
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth.models import Group
from django.db import connections
"""


def run(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                         capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def elapsed(out: subprocess.CompletedProcess) -> float:
    return float(out.stdout.split("elapsed")[-1].split()[0])


def test_django_orm_runs_in_twenty_concurrent_greenlets_under_patch_all(tmp_path):
    run("import tgreen.monkey; tgreen.monkey.patch_all()\n" + DJANGO_SETUP + """
import time, tgreen
def work(i):
    try:
        for j in range(5):
            Group.objects.create(name=f"g{i}-{j}")
            time.sleep(0.001)        # green: the others run in between
        return Group.objects.filter(name__startswith=f"g{i}-").count()
    finally:
        connections.close_all()      # this greenlet's own connection
gs = [tgreen.spawn(work, i) for i in range(20)]
tgreen.joinall(gs)
assert [g.get() for g in gs] == [5] * 20, [g.exception for g in gs]
assert Group.objects.count() == 100
connections.close_all()
""", str(tmp_path / "db.sqlite3"))


@pytest.mark.parametrize("patched", [True, False], ids=["patch_all", "unpatched"])
def test_django_orm_runs_in_greenlets_of_a_running_asyncio_program_but_not_in_its_coroutines(
        tmp_path, patched):
    run(("import tgreen.monkey; tgreen.monkey.patch_all()\n" if patched else "") + DJANGO_SETUP + """
import asyncio, tgreen
from django.core.exceptions import SynchronousOnlyOperation
def work(i):
    Group.objects.create(name=f"a{i}")
    tgreen.sleep(0.001)
    return Group.objects.get(name=f"a{i}").name
async def main():
    names = await asyncio.gather(*[tgreen.run_green(work, i) for i in range(20)])
    assert names == [f"a{i}" for i in range(20)], names
    try:
        Group.objects.count()        # on the loop itself: still refused
    except SynchronousOnlyOperation:
        pass
    else:
        raise AssertionError("the ORM ran in a coroutine")
    def finish():
        n = Group.objects.count()
        connections.close_all()
        return n
    return await tgreen.run_green(finish)
assert asyncio.run(main()) == 20
connections.close_all()
""", str(tmp_path / "db.sqlite3"))


def test_async_to_sync_in_twenty_greenlets_runs_them_side_by_side():
    out = run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, time, tgreen
        from asgiref.sync import async_to_sync
        async def slow(i):
            await asyncio.sleep(0.3)
            return i
        t0 = time.monotonic()
        gs = [tgreen.spawn(async_to_sync(slow), i) for i in range(20)]
        tgreen.joinall(gs)
        assert [g.get() for g in gs] == list(range(20)), [g.exception for g in gs]
        print("elapsed", time.monotonic() - t0)
    """)
    assert elapsed(out) < 2.5  # one after the other: 6 s


def test_sync_to_async_inside_async_to_sync_comes_back_to_the_calling_greenlet():
    run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, tgreen
        from asgiref.sync import async_to_sync, sync_to_async
        def where():
            tgreen.sleep(0.01)   # a green wait in the sync part
            return tgreen.getcurrent()
        async def roundtrip():
            await asyncio.sleep(0.01)
            return await sync_to_async(where)()   # thread-sensitive: our greenlet
        def work():
            return async_to_sync(roundtrip)() is tgreen.getcurrent()
        gs = [tgreen.spawn(work) for _ in range(5)]
        tgreen.joinall(gs)
        assert [g.get() for g in gs] == [True] * 5
    """)


def test_async_to_sync_in_greenlets_of_a_running_asyncio_program_does_not_block_its_loop():
    run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, tgreen
        from asgiref.sync import async_to_sync, sync_to_async
        async def slow(i):
            await asyncio.sleep(0.2)
            return i
        def blocking_part():
            return async_to_sync(slow)(7)
        async def main():
            ticks = 0
            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1
            t = asyncio.ensure_future(ticker())
            got = await asyncio.gather(*[tgreen.run_green(blocking_part) for _ in range(5)])
            t.cancel()
            assert got == [7] * 5
            assert ticks >= 5, ticks
            # sync_to_async from the loop itself still runs in a worker thread.
            assert await sync_to_async(lambda: 42)() == 42
        asyncio.run(main())
    """)
