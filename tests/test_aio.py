"""norikv.aio.AsyncKvStore under a running event loop: what is awaited runs
in the store's pool (never on the loop's thread), reads and OS/batch writes
are plain calls."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from norikv import ConfigError, FsyncPolicy, KvStore
from norikv.aio import AsyncKvStore


class CountingExecutor(ThreadPoolExecutor):
    """Records the thread of every job it runs."""

    def __init__(self):
        super().__init__(max_workers=2, thread_name_prefix="counted")
        self.threads: list[int] = []

    def submit(self, fn, /, *args, **kwargs):
        def run():
            self.threads.append(threading.get_ident())
            return fn(*args, **kwargs)

        return super().submit(run)


def test_always_writes_run_off_the_loop_and_are_durable_when_awaited(tmp_path):
    ex = CountingExecutor()

    async def main():
        loop_thread = threading.get_ident()
        store = await AsyncKvStore.open(tmp_path, fsync_policy=FsyncPolicy.ALWAYS, executor=ex)
        assert store.writes_block
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = len(ex.threads)
        for i in range(20):
            ticks_before = ticks
            fut = store.put(b"k%d" % i, b"v")
            assert not fut.done()  # it runs in the pool
            await fut
            assert ticks > ticks_before  # the loop ran other tasks meanwhile
            assert store.stats()["unsynced_bytes"] == 0  # durable when the await returned
        assert len(ex.threads) - before == 20
        assert loop_thread not in ex.threads
        assert await store.delete(b"k0") is True
        assert await store.delete(b"k0") is False
        done.set()
        await t
        assert store.get(b"k1") == b"v" and b"k0" not in store and len(store) == 19
        await store.close()
        assert store.closed

    asyncio.run(main())
    ex.shutdown()
    with KvStore.open(tmp_path) as s:
        assert len(s) == 19


@pytest.mark.parametrize("policy", [FsyncPolicy.OS, FsyncPolicy.batch(0.005)], ids=["os", "batch"])
def test_os_and_batch_writes_are_plain_calls(tmp_path, policy):
    ex = CountingExecutor()

    async def main():
        store = await AsyncKvStore.open(tmp_path / "s", fsync_policy=policy, executor=ex)
        opened = len(ex.threads)
        fut = store.put(b"a", b"1")
        assert fut.done() and store[b"a"] == b"1"  # written before put returned
        await store.put(b"b", b"2")
        assert store.delete(b"a").result() is True
        with pytest.raises(TypeError):
            store.put("text", b"v")  # raised at the call
        async with store.batch() as b:
            b.put(b"c", b"3")
            b.delete(b"b")
        assert len(ex.threads) == opened  # nothing went to the pool
        assert store.items() == [(b"c", b"3")]
        await store.sync()
        await store.compact()
        res = await store.backup(tmp_path / "backup")
        assert res["segments"] >= 1
        assert len(ex.threads) == opened + 3
        await store.close()

    asyncio.run(main())
    ex.shutdown()
    with KvStore.open(tmp_path / "backup") as s:
        assert s.items() == [(b"c", b"3")]


def test_async_with_codecs_and_batches(tmp_path):
    async def main():
        async with AsyncKvStore.open(
            tmp_path, key_codec="str", value_codec="json", fsync_policy=FsyncPolicy.ALWAYS
        ) as store:
            await store.put("user:1", {"n": 1})
            assert store["user:1"] == {"n": 1} and "user:1" in store
            with pytest.raises(TypeError):
                async with store.batch() as b:
                    b.put("a", 1)
                    b.put("bad", {1, 2})  # not JSON: the batch never writes
            with pytest.raises(RuntimeError):
                async with store.batch() as b:
                    b.put("a", 1)
                    raise RuntimeError("discarded")
            async with store.batch() as b:
                b.put("x", [1])
                b.put("y", None)
            assert store.items() == [("user:1", {"n": 1}), ("x", [1]), ("y", None)]
            assert [k for k, _ in store.range("x")] == ["x", "y"]
        assert store.closed
        await store.close()  # idempotent

    asyncio.run(main())


def test_open_errors_come_from_the_await(tmp_path):
    async def main():
        with pytest.raises(ConfigError):
            await AsyncKvStore.open(tmp_path / "x", max_keys=0)
        with pytest.raises(ConfigError):
            await AsyncKvStore.open(tmp_path / "x", value_codec="yaml")
        with pytest.raises(TypeError, match="threads"):
            AsyncKvStore.open(tmp_path / "x", threads=0.5)
        with pytest.raises(ConfigError, match="threads"):
            AsyncKvStore.open(tmp_path / "x", threads=0)
        with pytest.raises(TypeError, match="executor"):
            AsyncKvStore.open(tmp_path / "x", executor="pool")

    asyncio.run(main())
    assert not (tmp_path / "x").exists()
