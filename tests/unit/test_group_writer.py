"""Payload writes grouped into one transaction: every put lands, errors reach every waiter."""
import asyncio

import pytest

from node.blobs import GroupWriter
from node.store import Store


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


def run_db(fn, *args):
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_concurrent_puts_share_transactions_and_all_land(tmp_path):
    store = CountingStore(str(tmp_path))
    writer = GroupWriter(store, run_db)
    payloads = {f"{n:032x}": bytes([n % 256]) * (100 + n) for n in range(200)}

    async def main():
        await asyncio.gather(*(writer.put(job_id, data) for job_id, data in payloads.items()))

    asyncio.run(main())
    assert sum(store.groups) == 200 and len(store.groups) < 200
    for job_id, data in payloads.items():
        assert store.get_payload(job_id) == data


def test_a_failed_write_fails_every_put_of_its_group(tmp_path):
    store = CountingStore(str(tmp_path))
    store.fail = True
    writer = GroupWriter(store, run_db)

    async def main():
        return await asyncio.gather(*(writer.put(f"{n:032x}", b"x") for n in range(20)),
                                    return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, OSError) for r in results)
    store.fail = False

    async def again():
        await writer.put("f" * 32, b"after")      # the writer recovers

    asyncio.run(again())
    assert store.get_payload("f" * 32) == b"after"


def test_a_group_is_bounded_in_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(GroupWriter, "MAX_GROUP_BYTES", 1000)
    store = CountingStore(str(tmp_path))
    writer = GroupWriter(store, run_db)

    async def main():
        await asyncio.gather(*(writer.put(f"{n:032x}", b"y" * 600) for n in range(10)))

    asyncio.run(main())
    assert max(store.groups) <= 2 and sum(store.groups) == 10


@pytest.mark.parametrize("n", [1, 2])
def test_a_lone_put_is_written_at_once(tmp_path, n):
    store = CountingStore(str(tmp_path))
    writer = GroupWriter(store, run_db)

    async def main():
        for i in range(n):
            await writer.put(f"{i:032x}", b"z")

    asyncio.run(main())
    assert store.groups == [1] * n
