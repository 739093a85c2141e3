"""Shared fixtures: every test starts with a fresh hub on a fresh loop, so one
test's leftovers (a stuck greenlet, a registered fd) cannot leak into the next."""

import asyncio

import pytest

from tgreen import hub as _hub


@pytest.fixture(autouse=True)
def fresh_hub():
    _hub._local.__dict__.clear()
    loop = _hub._new_loop()
    asyncio.set_event_loop(loop)
    yield
    h = getattr(_hub._local, "hub", None)
    _hub._local.__dict__.clear()
    asyncio.set_event_loop(None)
    for lp in {loop, h.loop if h else loop}:
        if not lp.is_closed() and not lp.is_running():
            lp.close()
