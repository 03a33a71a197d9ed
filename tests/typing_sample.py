"""A program using norikv's public API, type-checked by tests/test_api.py with
``mypy --strict``. It is also executed there, so it must run as well as check.

Every ``reveal``-style expectation is written as an annotated assignment: if a
stub or annotation in norikv changes a public type, mypy reports it here.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import norikv
from norikv import (
    ClosedError,
    CodecStore,
    Compression,
    CorruptionError,
    FsyncPolicy,
    KvStore,
    NoriError,
    Position,
    Record,
    RecoveryInfo,
    RecoveryMode,
    Wal,
    WalConfig,
    WalIterator,
    crc32c,
)
from norikv.aio import AsyncKvStore


def use_store(path: str) -> list[tuple[bytes, bytes]]:
    with KvStore.open(path, fsync_policy=FsyncPolicy.batch(0.005), compression="lz4") as store:
        store.put(b"user:1", b"Alice")
        store.put(bytearray(b"user:2"), memoryview(b"Bob"), ttl=3600.0)
        store[b"user:3"] = b"Charlie"
        value: bytes | None = store.get(b"user:1")
        assert value == b"Alice"
        fallback: bytes | str = store.get(b"missing", "default")
        assert fallback == "default"
        item: bytes = store[b"user:3"]
        assert item == b"Charlie"
        present: bool = b"user:1" in store
        assert present
        deleted: bool = store.delete(b"user:2")
        assert deleted
        with store.batch() as batch:
            batch.put(b"a", b"1")
            batch.put(b"b", b"2", compression=Compression.ZSTD)
            batch.delete(b"user:3")
        store.sync()
        count: int = len(store)
        keys: list[bytes] = store.keys()
        assert count == len(keys)
        ranged: Iterator[tuple[bytes, bytes]] = store.range(b"a", b"c")
        prefixed = list(store.prefix(b"user:"))
        info: RecoveryInfo = store.recovery_info
        assert info.valid_records >= 0
        stats: dict[str, object] = store.stats()
        assert "keys" in stats
        ratio: float = store.dead_ratio()
        assert 0.0 <= ratio <= 1.0
        store.update({b"m1": b"1"})
        store.update([(b"m2", b"2")])
        popped: bytes = store.pop(b"m1")
        maybe: bytes | None = store.pop(b"absent", None)
        assert popped == b"1" and maybe is None
        pair: tuple[bytes, bytes] = store.popitem()
        assert pair == (b"m2", b"2")
        kept: bytes = store.setdefault(b"user:1", b"other")
        assert kept == b"Alice"
        remaining: float | None = store.ttl(b"user:1")
        assert remaining is None
        figures: dict[str, Any] = store.backup(path + "-backup")
        assert figures["segments"] >= 1
        result = list(ranged) + prefixed
    try:
        store.get(b"user:1")
    except ClosedError:
        pass
    else:
        raise AssertionError("a closed store must refuse reads")
    return result


def use_wal(path: str) -> int:
    config = WalConfig(dir=path, fsync_policy=FsyncPolicy.ALWAYS, recovery_mode=RecoveryMode.POINT_IN_TIME)
    wal, info = Wal.open(config)
    with wal:
        assert isinstance(info, RecoveryInfo)
        first: Position = wal.append(Record.put(b"k", b"v"))
        wal.append(Record(b"k2", b"v2", ttl_ms=1000, compression=Compression.LZ4, version=(1, 2)))
        positions: list[Position] = wal.append_batch(
            [Record.delete(b"k"), Record.put_with_ttl(b"k3", b"v3", 1.5)], atomic=True
        )
        wal.sync()
        segment, offset = first
        assert segment == first.segment_id and offset == first.offset
        assert positions[0] < positions[1]
        it: WalIterator = wal.read_from(Position(0, 0))
        n = 0
        with it:
            for record, pos in it:
                key: bytes = record.key
                ttl: int | None = record.ttl_ms
                version: tuple[int, int] | None = record.version
                assert key and pos.offset >= 0 and (ttl is None or ttl > 0)
                assert version is None or version == (1, 2)
                n += 1
    encoded: bytes = Record.put(b"x", b"y").encode()
    decoded, size = Record.decode(encoded)
    assert decoded == Record.put(b"x", b"y") and size == len(encoded)
    try:
        Record.decode(encoded[:-1])
    except CorruptionError as exc:
        assert isinstance(exc, NoriError)
    checksum: int = crc32c(b"123456789")
    assert checksum == 0xE3069283
    return n


def use_codecs(path: str) -> list[tuple[Any, Any]]:
    with CodecStore.open(path, key_codec="str", value_codec="json") as users:
        users["ada"] = {"admin": True}
        users.update({"bob": [1, 2]})
        with users.batch() as b:
            b.put("eve", None)
        return users.items()


async def use_aio(path: str) -> bytes | None:
    async with AsyncKvStore.open(path, fsync_policy=FsyncPolicy.ALWAYS) as store:
        await store.put(b"k", b"v")
        async with store.batch() as b:
            b.put(b"k2", b"v2")
        await store.sync()
        value: bytes | None = store.get(b"k")
        return value


def main(argv: list[str]) -> None:
    version: str = norikv.__version__
    print(
        version,
        use_store(argv[1] + "/store"),
        use_wal(argv[1] + "/wal"),
        use_codecs(argv[1] + "/codecs"),
        asyncio.run(use_aio(argv[1] + "/aio")),
    )


if __name__ == "__main__":
    main(sys.argv)
