"""The one retry rule for calls to the cluster (protocol/failover.py), against real HTTP
servers in this process: which answers move a call to the next node, which go back to the
caller, and how long a call keeps trying."""

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from bench.cluster import free_ports
from protocol.failover import RETRY_STATUSES, Failover, NoNodeAnswers


class Node:
    """An HTTP server answering every request with the next of `statuses` (the last repeats)."""

    def __init__(self, statuses, retry_after=None):
        self.statuses = list(statuses)
        self.retry_after = retry_after
        self.calls = 0

    async def handle(self, request):
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        headers = {"Retry-After": self.retry_after} if self.retry_after else None
        return web.json_response(
            {"error": f"said {status}", "n": self.calls}, status=status, headers=headers
        )

    async def start(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


def closed_port_url():
    (port,) = free_ports(1)
    return f"http://127.0.0.1:{port}"


async def call(nodes, deadline=0.0, urls_before=()):
    urls = [*urls_before, *[await n.start() for n in nodes]]
    async with aiohttp.ClientSession() as session:
        failover = Failover(urls, session, headers={"X": "y"}, deadline=deadline)
        try:
            first = await failover.request("GET", "/a", timeout=5)
            second = await failover.request("GET", "/b", timeout=5)
            return first, second, urls
        finally:
            for n in nodes:
                await n.runner.cleanup()


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
def test_a_retry_answer_moves_the_call_to_the_next_node_which_keeps_it(status):
    a, b = Node([status]), Node([200])
    first, second, urls = asyncio.run(call([a, b]))
    assert (first.status, first.node, second.node) == (200, urls[1], urls[1])
    assert (a.calls, b.calls) == (1, 2)


@pytest.mark.parametrize("status", [200, 400, 401, 404, 409, 413, 422])
def test_any_other_answer_goes_back_to_the_caller(status):
    a, b = Node([status]), Node([200])
    first, _, urls = asyncio.run(call([a, b]))
    assert (first.status, first.node, b.calls) == (status, urls[0], 0)
    assert first.body["n"] == 1 and (status < 400 or first.error() == f"said {status}")


def test_a_node_that_refuses_connections_is_skipped():
    b = Node([200])
    first, second, urls = asyncio.run(call([b], urls_before=[closed_port_url()]))
    assert first.node == second.node == urls[1]


def test_without_a_deadline_one_round_of_failures_raises_naming_each_node():
    a, b = Node([503]), Node([429])
    with pytest.raises(NoNodeAnswers) as e:
        asyncio.run(call([a, b]))
    assert "503 said 503" in str(e.value) and "429 said 429" in str(e.value)
    assert (a.calls, b.calls) == (1, 1)


def test_with_a_deadline_the_call_waits_and_goes_round_again_until_a_node_answers():
    a, b = Node([503, 503, 200]), Node([503])
    started = time.monotonic()
    first, _, urls = asyncio.run(call([a, b], deadline=10))
    assert (first.status, first.node) == (200, urls[0])
    assert a.calls >= 3 and 0.2 <= time.monotonic() - started < 5


def test_retry_after_is_honoured_and_the_deadline_still_holds():
    a = Node([503], retry_after="1")
    started = time.monotonic()
    with pytest.raises(NoNodeAnswers, match="within 1.5s"):
        asyncio.run(call([a], deadline=1.5))
    elapsed = time.monotonic() - started
    # Tried at 0 s, after Retry-After (1 s), and once more when the deadline came.
    assert a.calls == 3 and 1.5 <= elapsed < 3
