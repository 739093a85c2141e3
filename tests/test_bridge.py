"""Bridges between greenlets and Tornado/asyncio coroutines."""

import asyncio
import contextvars

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.web import Application, RequestHandler

import tgreen

var = contextvars.ContextVar("var", default="unset")


def test_wait_on_coroutine_returns_result():
    async def coro():
        await asyncio.sleep(0.01)
        return "done"

    assert tgreen.spawn(tgreen.wait, coro()).get(timeout=2) == "done"
    assert tgreen.wait(coro()) == "done"  # from the main greenlet too


def test_wait_propagates_exception():
    async def coro():
        raise KeyError("k")

    with pytest.raises(KeyError):
        tgreen.wait(coro())


def test_wait_timeout_cancels_owned_task():
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(TimeoutError):
        tgreen.wait(slow(), timeout=0.05)
    tgreen.sleep(0.01)
    assert cancelled == [True]


def test_killing_greenlet_cancels_awaited_task():
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    g = tgreen.spawn(tgreen.wait, slow())
    tgreen.sleep(0.01)
    g.kill()
    tgreen.sleep(0.01)
    assert cancelled == [True]


def test_cancelled_future_raises_cancelled_error_in_greenlet():
    fut = tgreen.get_hub().loop.create_future()
    g = tgreen.spawn(tgreen.wait, fut)
    tgreen.sleep(0)
    fut.cancel()
    with pytest.raises(asyncio.CancelledError):
        g.get(timeout=1)


def test_wait_on_concurrent_future_from_thread():
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        assert tgreen.wait(ex.submit(lambda: 41 + 1)) == 42


def test_run_green_result_exception_context_and_current_task():
    async def main():
        var.set("coro")
        task = asyncio.current_task()

        def blocking(x):
            tgreen.sleep(0.01)
            return x, var.get()

        assert await tgreen.run_green(blocking, 1) == (1, "coro")
        assert asyncio.current_task() is task

        @tgreen.green
        def fail():
            raise ValueError("bad")

        with pytest.raises(ValueError, match="bad"):
            await fail()

    asyncio.run(main())


def test_cancelling_run_green_kills_greenlet():
    killed = []

    def long():
        try:
            tgreen.sleep(10)
        except tgreen.GreenletExit:
            killed.append(True)
            raise

    async def main():
        t = asyncio.ensure_future(tgreen.run_green(long))
        await asyncio.sleep(0.01)
        t.cancel()
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert killed == [True]


def test_asynchttpclient_fetch_as_plain_code_in_greenlet():
    class Hello(RequestHandler):
        async def get(self):
            # a coroutine handler that calls blocking-style code
            body = await tgreen.run_green(lambda: (tgreen.sleep(0.01), b"hello")[1])
            self.write(body)

    app = Application([("/", Hello)])
    server = HTTPServer(app)
    sockets = __import__("tornado.netutil", fromlist=["x"]).bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]

    def client():
        response = tgreen.wait(AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/"))
        return response.body

    gs = [tgreen.spawn(client) for _ in range(10)]
    assert [g.get(timeout=5) for g in gs] == [b"hello"] * 10
    server.stop()
    IOLoop.current()
