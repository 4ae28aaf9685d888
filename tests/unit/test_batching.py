"""Payload writes and peer copies go in groups: every item lands, errors reach every waiter,
groups are bounded; the peer-copy body round-trips and malformed bodies are refused."""

import asyncio
import functools
import hashlib
import json

import pytest

from node.replication.payloads import Batcher
from node.storage.store import Store
from protocol.wire import MalformedBatch, decode_batch, encode_batch


class CountingStore(Store):
    def __init__(self, path):
        super().__init__(path)
        self.groups: list[int] = []
        self.fail = False

    def put_payloads(self, items):
        self.groups.append(len(items))
        if self.fail:
            raise OSError("disk full")
        super().put_payloads(items)


async def run_db(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


def writer_for(store, max_items=1024, max_bytes=1 << 20):
    return Batcher(functools.partial(run_db, store.put_payloads), max_items, max_bytes)


def put(writer, job_id, data):
    return writer.submit((job_id, data, 0.0), len(data))


def test_concurrent_puts_share_transactions_and_all_land(tmp_path):
    store = CountingStore(str(tmp_path))
    writer = writer_for(store)
    payloads = {f"{n:032x}": bytes([n % 256]) * (100 + n) for n in range(200)}

    async def main():
        await asyncio.gather(*(put(writer, job_id, data) for job_id, data in payloads.items()))

    asyncio.run(main())
    assert sum(store.groups) == 200 and len(store.groups) < 200
    for job_id, data in payloads.items():
        assert store.get_payload(job_id) == data


def test_a_failed_write_fails_every_put_of_its_group(tmp_path):
    store = CountingStore(str(tmp_path))
    store.fail = True
    writer = writer_for(store)

    async def main():
        return await asyncio.gather(
            *(put(writer, f"{n:032x}", b"x") for n in range(20)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, OSError) for r in results)
    store.fail = False

    async def again():
        await put(writer, "f" * 32, b"after")  # the writer recovers

    asyncio.run(again())
    assert store.get_payload("f" * 32) == b"after"


@pytest.mark.parametrize(
    "max_items,max_bytes,sizes,largest_group",
    [
        (1024, 1000, [600] * 10, 1),  # two 600-byte items exceed 1000 bytes
        (1024, 1200, [600] * 10, 2),
        (3, 1 << 20, [10] * 10, 3),  # bounded in items
        (1024, 100, [500, 500], 1),  # an item larger than the bound still goes, alone
    ],
)
def test_a_group_is_bounded_in_items_and_bytes(max_items, max_bytes, sizes, largest_group):
    groups: list[list[int]] = []

    async def flush(items):
        groups.append(items)
        await asyncio.sleep(0)

    async def main():
        batcher = Batcher(flush, max_items, max_bytes)
        await asyncio.gather(*(batcher.submit(n, size) for n, size in enumerate(sizes)))

    asyncio.run(main())
    assert sorted(n for g in groups for n in g) == list(range(len(sizes)))
    assert max(len(g) for g in groups) == largest_group


@pytest.mark.parametrize("n", [1, 2])
def test_a_lone_put_is_written_at_once(tmp_path, n):
    store = CountingStore(str(tmp_path))
    writer = writer_for(store)

    async def main():
        for i in range(n):
            await put(writer, f"{i:032x}", b"z")

    asyncio.run(main())
    assert store.groups == [1] * n


def item(n: int, data: bytes) -> tuple[str, bytes, str]:
    return f"{n:032x}", data, hashlib.sha256(data).hexdigest()


def test_a_peer_copy_body_round_trips():
    items = [item(n, bytes([n]) * (1 + 1000 * n)) for n in range(5)]
    body = encode_batch(items)
    # The wire format, read independently: a JSON manifest line, then the bytes in order.
    head, rest = body.split(b"\n", 1)
    assert json.loads(head) == [{"id": i, "size": len(d), "digest": s} for i, d, s in items]
    assert rest == b"".join(d for _, d, _ in items)
    assert decode_batch(body) == items


def _manifest(entries) -> bytes:
    return json.dumps(entries).encode() + b"\n"


GOOD = item(1, b"payload")
GOOD_ENTRY = {"id": GOOD[0], "size": len(GOOD[1]), "digest": GOOD[2]}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"no manifest line",
        b"not json\n" + GOOD[1],
        _manifest({"id": GOOD[0]}) + GOOD[1],  # not a list
        _manifest([]),  # no payloads
        _manifest([GOOD_ENTRY] * 1025) + GOOD[1] * 1025,  # too many
        _manifest([{**GOOD_ENTRY, "id": "A" * 32}]) + GOOD[1],
        _manifest([{**GOOD_ENTRY, "digest": "0" * 63}]) + GOOD[1],
        _manifest([{**GOOD_ENTRY, "size": 0}]),
        _manifest([{**GOOD_ENTRY, "size": True}]) + GOOD[1][:1],
        _manifest([{**GOOD_ENTRY, "size": "7"}]) + GOOD[1],
        _manifest([GOOD_ENTRY]) + GOOD[1][:-1],  # short
        _manifest([GOOD_ENTRY]) + GOOD[1] + b"extra",  # bytes left over
        _manifest([{**GOOD_ENTRY, "digest": "0" * 64}]) + GOOD[1],  # wrong digest
        _manifest(["x"]) + GOOD[1],
    ],
)
def test_malformed_peer_copy_bodies_are_refused(body):
    with pytest.raises(MalformedBatch) as e:
        decode_batch(body)
    assert str(e.value).startswith("body:")
