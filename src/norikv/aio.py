"""An asyncio facade: :class:`AsyncKvStore`, for event-loop services
(FastAPI, aiohttp, ...).

::

    store = await AsyncKvStore.open("./data", fsync_policy=FsyncPolicy.ALWAYS)
    await store.put(b"k", b"v")      # durable when the await returns
    store.get(b"k")                  # a plain call: served from memory
    await store.close()

    async with AsyncKvStore.open("./data") as store:   # the same, closed on exit
        ...

What blocks runs off the loop, in the store's own thread pool (a
``ThreadPoolExecutor`` of ``threads`` threads, 4 by default, shut down by
``close()``; pass ``executor=`` to use yours instead): ``open``, ``sync``,
``compact``, ``backup``, ``close``, and the writes (``put``, ``delete``,
batches) of a store whose fsync policy is ``ALWAYS``. Several threads let
concurrent ALWAYS writes share fsyncs (the store's group commit).

What never waits for the disk is a plain call: every read (``get``, ``in``,
``len``, ``keys``, ``range``, ``ttl``, ``stats``, ...) and, under the ``OS``
and ``batch`` policies, the writes: ``put`` and ``delete`` write at once and
return an awaitable that is already done. So ``await store.put(...)`` is
right under every policy, and under OS/batch ``store.put(...)`` alone is
enough. (Under OS/batch a put that fills a segment, every
``max_segment_size`` bytes, also seals it: an fdatasync of the finished
segment on the loop's thread.) Writes awaited one after the other apply in
that order; writes started together without awaiting may apply in any order.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import IO, Any, TypeVar

from norikv import _options
from norikv.codecs import CodecStore, CodecWriteBatch
from norikv.store import KvStore, WriteBatch

__all__ = ["AsyncKvStore", "AsyncWriteBatch"]

# The options AsyncKvStore.open adds to KvStore.open's (norikv._options);
# those are checked by KvStore.open in the pool's thread.
_AIO_OPTIONS: dict[str, _options.Spec] = {
    "threads": _options.Int(1, 1024),
    "executor": _options.Instance(Executor, optional=True),
}

_T = TypeVar("_T")


class AsyncKvStore:
    """A KvStore (or a :class:`~norikv.CodecStore` when a codec is given)
    for asyncio code; see the module docstring for what is awaited. Make it
    with :meth:`open`. ``store`` is the synchronous store underneath."""

    def __init__(self, store: KvStore | CodecStore, executor: Executor, own_executor: bool) -> None:
        self.store = store
        self._executor = executor
        self._own_executor = own_executor
        kv = store.store if isinstance(store, CodecStore) else store
        #: True when writes wait for an fsync (FsyncPolicy.ALWAYS)
        self.writes_block: bool = kv.wal.config.fsync_policy.kind == "always"

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        key_codec: Any = None,
        value_codec: Any = None,
        threads: int = 4,
        executor: Executor | None = None,
        **options: Any,
    ) -> _Opening:
        """Opens the store off the loop: ``await AsyncKvStore.open(...)`` or
        ``async with AsyncKvStore.open(...) as store``. ``options`` are
        KvStore.open's; with ``key_codec``/``value_codec`` the store is a
        CodecStore. The options are checked in the pool's thread: a bad one
        raises from the await, before anything on disk changes."""
        _options.check_options(_AIO_OPTIONS, {"threads": threads, "executor": executor})
        if key_codec is None and value_codec is None:
            opener: Callable[[], KvStore | CodecStore] = functools.partial(KvStore.open, path, **options)
        else:
            opener = functools.partial(CodecStore.open, path, key_codec=key_codec, value_codec=value_codec, **options)
        return _Opening(cls, opener, executor, threads)

    # ---------------------------------------------------------------- running

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _write(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> asyncio.Future[_T]:
        """fn(*args) off the loop under ALWAYS; else now, as a done future."""
        loop = asyncio.get_running_loop()
        if self.writes_block:
            return loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        result = fn(*args, **kwargs)  # an error raises here, at the call
        fut: asyncio.Future[_T] = loop.create_future()
        fut.set_result(result)
        return fut

    # ---------------------------------------------------------------- reads (plain calls)

    def get(self, key: Any, default: Any = None) -> Any:
        return self.store.get(key, default)

    def __getitem__(self, key: Any) -> Any:
        return self.store[key]

    def __contains__(self, key: object) -> bool:
        return key in self.store

    def __len__(self) -> int:
        return len(self.store)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.store)

    def keys(self) -> list[Any]:
        return list(self.store.keys())

    def values(self) -> list[Any]:
        return list(self.store.values())

    def items(self) -> list[tuple[Any, Any]]:
        return list(self.store.items())

    def range(self, start: Any = None, end: Any = None, *, reverse: bool = False) -> Iterator[tuple[Any, Any]]:
        return self.store.range(start, end, reverse=reverse)

    def prefix(self, prefix: Any, *, reverse: bool = False) -> Iterator[tuple[Any, Any]]:
        return self.store.prefix(prefix, reverse=reverse)

    def ttl(self, key: Any) -> float | None:
        return self.store.ttl(key)

    def stats(self) -> dict[str, object]:
        return self.store.stats()

    @property
    def path(self) -> str:
        return self.store.path

    @property
    def closed(self) -> bool:
        return self.store.closed

    # ---------------------------------------------------------------- writes

    def put(self, key: Any, value: Any, *, ttl: float | None = None, compression: Any = None) -> asyncio.Future[None]:
        """Writes key = value. Under ALWAYS the write and its fsync run off
        the loop: durable when the returned future is done. Otherwise it is
        written before put returns (errors raise here) and the future is done."""
        return self._write(self.store.put, key, value, ttl=ttl, compression=compression)

    def delete(self, key: Any) -> asyncio.Future[bool]:
        """As put: the future's result is whether the key was present."""
        return self._write(self.store.delete, key)

    def batch(self) -> AsyncWriteBatch:
        """``async with store.batch() as b: b.put(...); b.delete(...)``: all
        or none, written on leaving the block (off the loop under ALWAYS)."""
        return AsyncWriteBatch(self, self.store.batch())

    # ---------------------------------------------------------------- awaited

    async def sync(self) -> None:
        await self._run(self.store.sync)

    async def compact(self) -> dict[str, float]:
        return await self._run(self.store.compact)

    async def backup(self, dest: str | os.PathLike[str] | IO[bytes], *, incremental: bool = True) -> dict[str, Any]:
        return await self._run(functools.partial(self.store.backup, dest, incremental=incremental))

    async def close(self) -> None:
        """Closes the store off the loop (KvStore.close), then the pool it
        made. Idempotent."""
        try:
            if self.store.closed:
                return
            await self._run(self.store.close)
        finally:
            if self._own_executor:
                self._executor.shutdown(wait=False)

    async def __aenter__(self) -> AsyncKvStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<norikv.aio.AsyncKvStore {self.store!r}>"


class _Opening:
    """What AsyncKvStore.open returns: awaitable, and an async context manager."""

    def __init__(
        self,
        cls: type[AsyncKvStore],
        opener: Callable[[], KvStore | CodecStore],
        executor: Executor | None,
        threads: int,
    ) -> None:
        self._cls, self._opener, self._executor, self._threads = cls, opener, executor, threads
        self._store: AsyncKvStore | None = None

    async def _open(self) -> AsyncKvStore:
        own = self._executor is None
        ex = self._executor or ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="norikv-aio")
        try:
            store = await asyncio.get_running_loop().run_in_executor(ex, self._opener)
        except BaseException:
            if own:
                ex.shutdown(wait=False)
            raise
        return self._cls(store, ex, own)

    def __await__(self) -> Generator[Any, None, AsyncKvStore]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncKvStore:
        self._store = await self._open()
        return self._store

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.close()


class AsyncWriteBatch:
    """A WriteBatch (or CodecWriteBatch) for ``async with``; its puts and
    deletes are plain calls that only collect."""

    def __init__(self, owner: AsyncKvStore, batch: WriteBatch | CodecWriteBatch) -> None:
        self._owner, self._batch = owner, batch

    def put(self, key: Any, value: Any, **kwargs: Any) -> None:
        self._batch.put(key, value, **kwargs)

    def delete(self, key: Any) -> None:
        self._batch.delete(key)

    def __len__(self) -> int:
        return len(self._batch)

    async def write(self) -> None:
        await self._owner._write(self._batch.write)

    async def __aenter__(self) -> AsyncWriteBatch:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.write()
        else:
            self._batch.__exit__(exc_type, exc, tb)
