"""Adapters of the stores norikv is compared with: sqlite3, lmdb, rocksdict,
plyvel, semidbm and diskcache (one class each; interface in adapter.py).
Each imports its module only when opened, so a peer that is not installed
costs nothing until it is chosen."""

from __future__ import annotations

import os
import threading
from typing import Any

from norikv.bench.adapter import Adapter
from norikv.bench.workload import KEY_SIZE


class SqliteAdapter(Adapter):
    name = "sqlite3"
    module = "sqlite3"

    @classmethod
    def version(cls) -> str:
        import sqlite3

        return "SQLite " + sqlite3.sqlite_version

    # SQLite's documentation: WITHOUT ROWID "works best" when a row is smaller
    # than about 1/20 of a page (4 KiB pages here); above that a rowid table.
    page_size = 4096

    def _table(self) -> str:
        if self.value_size + KEY_SIZE <= self.page_size // 20:
            return "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID"
        return "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB)"

    def config(self, level: str) -> str:
        sync = "FULL" if level == "synced" else "NORMAL"
        extra = "; batch: BEGIN ... COMMIT" if level == "synced" else ""
        table = self._table().replace("CREATE TABLE IF NOT EXISTS ", "")
        return f"journal_mode=WAL, synchronous={sync}, autocommit (one transaction per put), {table}{extra}"

    def _connect(self) -> Any:
        import sqlite3

        conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=" + ("FULL" if self.level == "synced" else "NORMAL"))
        return conn

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        os.makedirs(path, exist_ok=True)
        self.file = os.path.join(path, "kv.sqlite")
        self.level = level
        self.value_size = value_size
        self.db = self._connect()
        self.db.execute(self._table())
        self.local = threading.local()

    def _conn(self) -> Any:
        # sqlite3's recommendation for threads: one connection per thread.
        if threading.current_thread() is threading.main_thread():
            return self.db
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = self._connect()
            self.extra = getattr(self, "extra", [])
            self.extra.append(c)
        return c

    def put(self, k: bytes, v: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))

    def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        ex = self.db.execute
        for kv in items:
            ex("INSERT OR REPLACE INTO kv VALUES (?, ?)", kv)

    def get(self, k: bytes) -> Any:
        row = self.db.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
        return None if row is None else row[0]

    def delete(self, k: bytes) -> None:
        self.db.execute("DELETE FROM kv WHERE k = ?", (k,))

    def durable_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        c = self.db
        c.execute("BEGIN")
        c.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", items)
        c.execute("COMMIT")

    def put_synced(self, k: bytes, v: bytes) -> None:
        self._conn().execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))

    def close(self) -> None:
        for c in getattr(self, "extra", []):
            c.close()
        self.extra = []
        self.db.close()


class LmdbAdapter(Adapter):
    name = "lmdb"
    module = "lmdb"
    package = "lmdb"

    def config(self, level: str) -> str:
        if level == "synced":
            return "lmdb.open(sync=True, metasync=True) (the defaults); one write transaction per put"
        return (
            "lmdb.open(sync=False): commits are not flushed (OS buffers); one write transaction "
            "per put; gets in one read transaction per 10,000"
        )

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        import lmdb

        map_size = max(256 << 20, (n_hint * (value_size + KEY_SIZE + 64)) * 3)
        self.db = lmdb.open(
            path, map_size=map_size, sync=(level == "synced"), metasync=(level == "synced"), max_readers=64
        )

    def put(self, k: bytes, v: bytes) -> None:
        with self.db.begin(write=True) as txn:
            txn.put(k, v)

    def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        begin = self.db.begin
        for k, v in items:
            with begin(write=True) as txn:
                txn.put(k, v)

    def get(self, k: bytes) -> Any:
        with self.db.begin() as txn:
            return txn.get(k)

    def get_many(self, keys: list[bytes]) -> int:
        found = 0
        with self.db.begin(buffers=False) as txn:
            get = txn.get
            for k in keys:
                if get(k) is not None:
                    found += 1
        return found

    def delete(self, k: bytes) -> None:
        with self.db.begin(write=True) as txn:
            txn.delete(k)

    def delete_many(self, keys: list[bytes]) -> None:
        begin = self.db.begin
        for k in keys:
            with begin(write=True) as txn:
                txn.delete(k)

    def durable_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        with self.db.begin(write=True) as txn:
            for k, v in items:
                txn.put(k, v)

    put_synced = put


class RocksdictAdapter(Adapter):
    name = "rocksdict"
    module = "rocksdict"
    package = "rocksdict"

    def config(self, level: str) -> str:
        s = "True" if level == "synced" else "False"
        extra = "; batch: WriteBatch + write(sync=True)" if level == "synced" else ""
        return f"Rdict(Options(raw_mode=True)), WriteOptions.sync={s} (WAL on){extra}"

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        from rocksdict import Options, Rdict, WriteOptions

        self.db = Rdict(path, Options(raw_mode=True))
        wo = WriteOptions()
        wo.sync = level == "synced"
        self.db.set_write_options(wo)

    def put(self, k: bytes, v: bytes) -> None:
        self.db.put(k, v)

    def _native(self) -> tuple[Any, Any, Any]:
        return self.db.get, self.db.put, self.db.delete

    def durable_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        from rocksdict import WriteBatch

        wb = WriteBatch(raw_mode=True)
        for k, v in items:
            wb.put(k, v)
        self.db.write(wb)

    put_synced = put


class PlyvelAdapter(Adapter):
    name = "plyvel"
    module = "plyvel"
    package = "plyvel"

    def config(self, level: str) -> str:
        if level == "synced":
            return "plyvel.DB(create_if_missing=True); put(sync=True); batch: write_batch(sync=True)"
        return "plyvel.DB(create_if_missing=True); put(sync=False) (LevelDB's default)"

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        import plyvel  # type: ignore[import-untyped]

        self.db = plyvel.DB(path, create_if_missing=True)
        self.sync = level == "synced"

    def put(self, k: bytes, v: bytes) -> None:
        self.db.put(k, v, sync=self.sync)

    def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        put = self.db.put
        s = self.sync
        for k, v in items:
            put(k, v, sync=s)

    def _native(self) -> tuple[Any, Any, Any]:
        return self.db.get, self.put, self.delete

    def delete(self, k: bytes) -> None:
        self.db.delete(k, sync=self.sync)

    def durable_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        with self.db.write_batch(sync=True) as wb:
            for k, v in items:
                wb.put(k, v)

    put_synced = put


class SemidbmAdapter(Adapter):
    name = "semidbm"
    module = "semidbm"
    package = "semidbm"
    thread_safe = False

    @classmethod
    def version(cls) -> str:
        from importlib.metadata import version

        return version("semidbm")

    def config(self, level: str) -> str:
        base = "semidbm.open(path, 'c'): every put is an unbuffered os.write (OS buffers)"
        if level == "synced":
            return base + "; then db.sync() (fsync) per put / per batch; threads share one lock (not thread-safe)"
        return base

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        import semidbm  # type: ignore[import-untyped]

        self.db = semidbm.open(path, "c")
        self.lock = threading.Lock()

    def put(self, k: bytes, v: bytes) -> None:
        self.db[k] = v

    def _native(self) -> tuple[Any, Any, Any]:
        return self.get, self.db.__setitem__, self.db.__delitem__

    def get(self, k: bytes) -> Any:
        try:
            return self.db[k]
        except KeyError:
            return None

    def delete(self, k: bytes) -> None:
        del self.db[k]

    def durable_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        db = self.db
        for k, v in items:
            db[k] = v
        db.sync()

    def put_synced(self, k: bytes, v: bytes) -> None:
        with self.lock:
            self.db[k] = v
            self.db.sync()


class DiskcacheAdapter(Adapter):
    name = "diskcache"
    module = "diskcache"
    package = "diskcache"

    def config(self, level: str) -> str:
        s = 2 if level == "synced" else 1
        name = "FULL" if s == 2 else "NORMAL"
        extra = "; batch: cache.transact()" if level == "synced" else ""
        return (
            f"Cache(sqlite_journal_mode='wal', sqlite_synchronous={s} ({name}), "
            f"size_limit=2**40, eviction_policy='none'){extra}"
        )

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        import diskcache  # type: ignore[import-untyped]

        self.db = diskcache.Cache(
            path,
            sqlite_journal_mode="wal",
            sqlite_synchronous=2 if level == "synced" else 1,
            size_limit=2**40,
            eviction_policy="none",
        )

    def put(self, k: bytes, v: bytes) -> None:
        self.db.set(k, v)

    def _native(self) -> tuple[Any, Any, Any]:
        return self.db.get, self.db.set, self.db.delete

    def durable_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        c = self.db
        with c.transact():
            for k, v in items:
                c.set(k, v)

    put_synced = put
