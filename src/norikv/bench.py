"""Comparison runner: one workload, the same keys and values, on norikv and the
stores a user would pick instead.

Run ``python -m norikv.bench`` (or ``norikv bench``); ``--help`` lists the
options. Every (store, value size) pair is measured in a fresh subprocess so
that memory figures do not mix. Peers come from the ``bench`` extra
(``pip install norikv[bench]``); a peer that is not installed is skipped with a
note, never faked.

Durability levels are named the same way for every store:

* ``none``: nothing survives the process (the plain ``dict``).
* ``os``: an acknowledged write is in OS buffers (survives the death of the
  process, not a power loss or kernel crash).
* ``synced``: an acknowledged write is on stable storage (fsync/fdatasync).

Plain operations (put, get, get_missing, delete, reopen, memory, disk) run with
each store at its ``os`` configuration (norikv: at each fsync policy, one row
per policy). The durable operations (batch_sync, put_sync, threads8_sync) run
with each store at its ``synced`` configuration. The configuration used is
printed next to the numbers and stored in the JSON file.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterable

__all__ = ["main", "STORES", "OPS"]

KEY_SIZE = 16
CHUNK = 10_000  # values are generated per chunk, outside the timed loop

# Operation name -> human description (the order is the table's column order).
OPS: dict[str, str] = {
    "put": "individual puts of new keys (N)",
    "get": "random gets of present keys (N)",
    "get_missing": "gets of absent keys (N)",
    "delete": "deletes of present keys, random order (N)",
    "batch_sync": "durable batches: --batch-size puts, then one durable commit",
    "put_sync": "put + fsync per operation (--sync-ops)",
    "threads8_sync": "8 threads doing put + fsync per operation (--sync-ops in total)",
    "reopen": "close, then open with N keys and read one",
}
THROUGHPUT_OPS = ["put", "get", "get_missing", "delete", "batch_sync", "put_sync", "threads8_sync"]


class NotAvailable(Exception):
    """The store cannot run this operation at the level asked (reported n/a)."""


# ---------------------------------------------------------------- adapters
#
# An adapter opens a store in a directory at a durability level ("os" or
# "synced") and offers put/get/delete, a durable batch, a per-op durable put
# and close. `config(level)` is the text printed next to the numbers.


class Adapter:
    name = ""
    module = ""           # import name, for the version and the skip note
    package = ""          # pip name
    os_level = "os"       # the level of plain writes in this row
    per_op_synced = False  # plain writes already fsync (norikv ALWAYS)
    thread_safe = True

    def __init__(self) -> None:
        self.db: Any = None

    @classmethod
    def version(cls) -> str:
        mod = __import__(cls.module)
        for attr in ("__version__", "version", "VERSION"):
            v = getattr(mod, attr, None)
            if callable(v):
                try:
                    v = v()
                except Exception:  # noqa: BLE001
                    v = None
            if v is not None:
                return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        try:
            from importlib.metadata import version
            return version(cls.package or cls.module)
        except Exception:  # noqa: BLE001
            return "unknown"

    @classmethod
    def available(cls) -> str | None:
        """None when usable, else the reason it is skipped."""
        try:
            __import__(cls.module)
        except Exception as e:  # noqa: BLE001
            return f"{cls.package or cls.module} is not installed ({type(e).__name__}: {e}); pip install 'norikv[bench]'"
        return None

    def config(self, level: str) -> str:
        raise NotImplementedError

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        raise NotImplementedError

    def put(self, k: bytes, v: bytes) -> None:
        raise NotImplementedError

    def get(self, k: bytes) -> Any:
        return self.db.get(k)

    def delete(self, k: bytes) -> None:
        self.db.delete(k)

    def _native(self) -> tuple[Any, Any, Any]:
        """(get, put, delete) callables the timed loops call: the store's own
        bound methods where their signatures fit, so that no adapter call is
        timed. Default: the adapter's methods."""
        return self.get, self.put, self.delete

    def get_many(self, keys: list[bytes]) -> int:
        """Gets every key; returns how many were found (checked by the runner)."""
        get = self._native()[0]
        found = 0
        for k in keys:
            if get(k) is not None:
                found += 1
        return found

    def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        put = self._native()[1]
        for k, v in items:
            put(k, v)

    def delete_many(self, keys: list[bytes]) -> None:
        delete = self._native()[2]
        for k in keys:
            delete(k)

    def durable_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        """Writes all items, returning once they are on stable storage."""
        raise NotAvailable("no durable batch")

    def put_synced(self, k: bytes, v: bytes) -> None:
        """One put that returns once it is on stable storage."""
        raise NotAvailable("no synced put")

    def close(self) -> None:
        self.db.close()


class DictAdapter(Adapter):
    name = "dict"
    module = "builtins"
    os_level = "none"

    @classmethod
    def version(cls) -> str:
        return "Python " + platform.python_version()

    def config(self, level: str) -> str:
        return "plain dict in memory: the in-memory ceiling, nothing is durable"

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        if level == "synced":
            raise NotAvailable("a dict is not durable")
        self.db = {}

    def put(self, k: bytes, v: bytes) -> None:
        self.db[k] = v

    def _native(self) -> tuple[Any, Any, Any]:
        return self.db.get, self.db.__setitem__, self.db.__delitem__

    def delete(self, k: bytes) -> None:
        del self.db[k]

    def close(self) -> None:
        self.db = None


class NorikvAdapter(Adapter):
    module = "norikv"
    package = "norikv"
    policy = "os"

    def _policy(self) -> Any:
        from norikv import FsyncPolicy
        return {"os": FsyncPolicy.OS, "batch": FsyncPolicy.batch(0.005),
                "always": FsyncPolicy.ALWAYS}[self.policy]

    def config(self, level: str) -> str:
        base = f"KvStore.open(fsync_policy={self._policy()!r})"
        if level == "synced":
            if self.policy == "always":
                return base + "; put() returns after fdatasync; batch: WriteBatch (one fdatasync)"
            return base + "; put() then store.sync() (fdatasync, group commit); batch: WriteBatch then sync()"
        return base

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        from norikv import KvStore
        self.db = KvStore.open(path, fsync_policy=self._policy())

    def put(self, k: bytes, v: bytes) -> None:
        self.db.put(k, v)

    def _native(self) -> tuple[Any, Any, Any]:
        return self.db.get, self.db.put, self.db.delete

    def durable_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        with self.db.batch() as b:
            for k, v in items:
                b.put(k, v)
        if self.policy != "always":
            self.db.sync()

    def put_synced(self, k: bytes, v: bytes) -> None:
        self.db.put(k, v)
        if self.policy != "always":
            self.db.sync()


class NorikvOs(NorikvAdapter):
    name = "norikv-os"
    policy = "os"


class NorikvBatch(NorikvAdapter):
    name = "norikv-batch"
    policy = "batch"
    os_level = "os (synced <=5 ms later)"


class NorikvAlways(NorikvAdapter):
    name = "norikv-always"
    policy = "always"
    os_level = "synced"
    per_op_synced = True


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
        return (f"journal_mode=WAL, synchronous={sync}, autocommit (one transaction per put), "
                f"{table}{extra}")

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
        return ("lmdb.open(sync=False): commits are not flushed (OS buffers); one write transaction "
                "per put; gets in one read transaction per 10,000")

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        import lmdb
        map_size = max(256 << 20, (n_hint * (value_size + KEY_SIZE + 64)) * 3)
        self.db = lmdb.open(path, map_size=map_size, sync=(level == "synced"),
                            metasync=(level == "synced"), max_readers=64)

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
        return (f"Cache(sqlite_journal_mode='wal', sqlite_synchronous={s} ({name}), "
                f"size_limit=2**40, eviction_policy='none'){extra}")

    def open(self, path: str, level: str, n_hint: int, value_size: int) -> None:
        import diskcache  # type: ignore[import-untyped]
        self.db = diskcache.Cache(path, sqlite_journal_mode="wal",
                                  sqlite_synchronous=2 if level == "synced" else 1,
                                  size_limit=2 ** 40, eviction_policy="none")

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


STORES: dict[str, type[Adapter]] = {a.name: a for a in (
    NorikvOs, NorikvBatch, NorikvAlways, DictAdapter, SqliteAdapter, LmdbAdapter,
    RocksdictAdapter, PlyvelAdapter, SemidbmAdapter, DiskcacheAdapter)}


# ---------------------------------------------------------------- measuring


def _proc_status() -> dict[str, int]:
    """VmHWM / VmRSS / RssAnon of this process in bytes (Linux)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("VmHWM", "VmRSS", "RssAnon"):
                    out[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    if "VmHWM" not in out:  # macOS and others: ru_maxrss only
        import resource
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = r if sys.platform == "darwin" else r * 1024
    return out


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _disk_usage(path: str) -> dict[str, Any]:
    allocated = apparent = 0
    files_seen: list[tuple[int, str]] = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            apparent += st.st_size
            blocks = getattr(st, "st_blocks", 0) * 512
            allocated += blocks
            files_seen.append((blocks, os.path.relpath(full, path)))
    files_seen.sort(reverse=True)
    return {"allocated": allocated, "apparent": apparent, "files": len(files_seen),
            "largest": {name: b for b, name in files_seen[:5]}}


def _keys(seed: int, n: int, tag: int) -> list[bytes]:
    """n distinct 16-byte keys; `tag` keeps the present and absent sets apart."""
    rng = random.Random(seed * 1000 + tag)
    blob = rng.randbytes(n * (KEY_SIZE - 1))
    t = bytes([tag])
    return [t + blob[i:i + KEY_SIZE - 1] for i in range(0, n * (KEY_SIZE - 1), KEY_SIZE - 1)]


class _Values:
    """Deterministic, incompressible values generated chunk by chunk (so the
    harness does not hold N values and generation is never timed)."""

    def __init__(self, seed: int, size: int) -> None:
        self.rng = random.Random(seed * 1000 + 7)
        self.size = size

    def take(self, n: int) -> list[bytes]:
        s = self.size
        blob = self.rng.randbytes(n * s)
        return [blob[i:i + s] for i in range(0, n * s, s)]


def _figure(ops: int, seconds: float, **extra: Any) -> dict[str, Any]:
    d = {"status": "ok", "ops": ops, "seconds": seconds,
         "ops_per_s": ops / seconds if seconds > 0 else None,
         "us_per_op": seconds / ops * 1e6 if ops else None}
    d.update(extra)
    return d


def _na(reason: str) -> dict[str, Any]:
    return {"status": "n/a", "reason": reason}


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs every requested operation on one store at one value size. Runs in
    its own process (see _run_one)."""
    cls = STORES[spec["store"]]
    n: int = spec["n"]
    vs: int = spec["value_size"]
    ops: list[str] = spec["ops"]
    sync_ops: int = spec["sync_ops"]
    batch_size: int = spec["batch_size"]
    batches: int = spec["batches"]
    seed: int = spec["seed"]
    root: str = spec["dir"]
    res: dict[str, Any] = {"ops": {}, "config": {}}
    figs = res["ops"]

    keys = _keys(seed, n, 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    _trim()
    base = _proc_status()
    res["memory_baseline_rss_anon"] = base.get("RssAnon")
    res["memory_baseline_rss"] = base.get("VmRSS")

    store = cls()
    path = os.path.join(root, "main")
    store.open(path, "os", n, vs)
    res["config"]["plain_ops"] = store.config("os")
    res["level"] = cls.os_level

    def phase(name: str) -> None:
        _emit({"phase": name})

    # -- put: load N keys, timed chunk by chunk
    phase("put")
    values = _Values(seed, vs)
    timed = n if not cls.per_op_synced else min(n, sync_ops)
    t_total = 0.0
    loaded = 0
    while loaded < n:
        m = min(CHUNK, n - loaded)
        if loaded < timed:
            m = min(m, timed - loaded)
        items = list(zip(keys[loaded:loaded + m], values.take(m)))
        if loaded < timed:
            t0 = time.perf_counter()
            store.put_many(items)
            t_total += time.perf_counter() - t0
        else:  # ALWAYS: the rest is loaded in batches, untimed
            for i in range(0, m, 1000):
                store.durable_batch(items[i:i + 1000])
        loaded += m
        del items
    if "put" in ops:
        note = None if timed == n else f"bounded to --sync-ops={timed} (each put is fsynced); the rest loaded untimed in batches"
        figs["put"] = _figure(timed, t_total, **({"note": note} if note else {}))

    _trim()
    st = _proc_status()
    res["memory_rss_anon_after_load"] = st.get("RssAnon")
    if st.get("RssAnon") is not None and base.get("RssAnon") is not None:
        res["memory_store_anon"] = st["RssAnon"] - base["RssAnon"]
    if st.get("VmRSS") is not None and base.get("VmRSS") is not None:
        res["memory_store_rss"] = st["VmRSS"] - base["VmRSS"]

    if "get" in ops:
        phase("get")
        found = 0
        t_total = 0.0
        for i in range(0, n, CHUNK):
            chunk = [keys[j] for j in order[i:i + CHUNK]]
            t0 = time.perf_counter()
            found += store.get_many(chunk)
            t_total += time.perf_counter() - t0
        if found != n:
            raise AssertionError(f"{cls.name}: {n - found} of {n} keys written were not found")
        figs["get"] = _figure(n, t_total)

    if "get_missing" in ops:
        phase("get_missing")
        missing = _keys(seed, n, 2)
        t0 = time.perf_counter()
        found = 0
        for i in range(0, n, CHUNK):
            found += store.get_many(missing[i:i + CHUNK])
        dt = time.perf_counter() - t0
        if found:
            raise AssertionError(f"{cls.name}: {found} absent keys were found")
        figs["get_missing"] = _figure(n, dt)
        del missing

    if "reopen" in ops:
        phase("reopen")
        if cls.os_level == "none":
            figs["reopen"] = _na("not persistent")
        else:
            store.close()
            _trim()
            t0 = time.perf_counter()
            store.open(path, "os", n, vs)
            v = store.get(keys[order[0]])
            dt = time.perf_counter() - t0
            if v is None:
                raise AssertionError(f"{cls.name}: a key is missing after reopen")
            figs["reopen"] = _figure(1, dt, keys=n)
            _trim()
            st = _proc_status()
            res["memory_rss_anon_after_reopen"] = st.get("RssAnon")
            if st.get("RssAnon") is not None and base.get("RssAnon") is not None:
                res["memory_store_anon_after_reopen"] = st["RssAnon"] - base["RssAnon"]

    if cls.os_level != "none":
        # Disk bytes with N keys (after a close, so that every store has flushed).
        store.close()
        res["disk_bytes"] = _disk_usage(path)
        store.open(path, "os", n, vs)

    if "delete" in ops:
        phase("delete")
        timed = n if not cls.per_op_synced else min(n, sync_ops)
        t_total = 0.0
        for i in range(0, timed, CHUNK):
            chunk = [keys[j] for j in order[i:min(i + CHUNK, timed)]]
            t0 = time.perf_counter()
            store.delete_many(chunk)
            t_total += time.perf_counter() - t0
        if store.get(keys[order[0]]) is not None:
            raise AssertionError(f"{cls.name}: a deleted key is still there")
        note = None if timed == n else f"bounded to --sync-ops={timed} (each delete is fsynced)"
        figs["delete"] = _figure(timed, t_total, **({"note": note} if note else {}))
    store.close()
    del keys, order
    _trim()

    # -- durable operations, on a fresh store at the "synced" configuration
    durable = [o for o in ("batch_sync", "put_sync", "threads8_sync") if o in ops]
    if durable:
        dstore = cls()
        dpath = os.path.join(root, "synced")
        try:
            dstore.open(dpath, "synced", max(sync_ops, batch_size * batches), vs)
        except NotAvailable as e:
            for o in durable:
                figs[o] = _na(str(e))
            dstore = None  # type: ignore[assignment]
        if dstore is not None:
            res["config"]["durable_ops"] = dstore.config("synced")
            dvalues = _Values(seed + 1, vs)
            if "batch_sync" in ops:
                phase("batch_sync")
                bkeys = _keys(seed, batch_size * batches, 3)
                t_total = 0.0
                for b in range(batches):
                    items = list(zip(bkeys[b * batch_size:(b + 1) * batch_size], dvalues.take(batch_size)))
                    t0 = time.perf_counter()
                    dstore.durable_batch(items)
                    t_total += time.perf_counter() - t0
                figs["batch_sync"] = _figure(batch_size * batches, t_total, batches=batches,
                                             batch_size=batch_size,
                                             commits_per_s=batches / t_total if t_total else None)
            if "put_sync" in ops:
                phase("put_sync")
                skeys = _keys(seed, sync_ops, 4)
                items = list(zip(skeys, dvalues.take(sync_ops)))
                put = dstore.put_synced
                t0 = time.perf_counter()
                for k, v in items:
                    put(k, v)
                figs["put_sync"] = _figure(sync_ops, time.perf_counter() - t0)
            if "threads8_sync" in ops:
                phase("threads8_sync")
                figs["threads8_sync"] = _threads(dstore, _keys(seed, sync_ops, 5),
                                                 dvalues.take(sync_ops), 8)
            dstore.close()
    _emit({"phase": "done"})
    res["peak_rss"] = _proc_status().get("VmHWM")
    return res


def _threads(store: Adapter, keys: list[bytes], values: list[bytes], nthreads: int) -> dict[str, Any]:
    per = len(keys) // nthreads
    barrier = threading.Barrier(nthreads + 1)
    errors: list[BaseException] = []

    def run(t: int) -> None:
        put = store.put_synced
        mine = list(zip(keys[t * per:(t + 1) * per], values[t * per:(t + 1) * per]))
        barrier.wait()
        try:
            for k, v in mine:
                put(k, v)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return _figure(per * nthreads, dt, threads=nthreads)


# ---------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_usable": affinity, "memory_bytes": mem,
            "kernel": platform.release(), "os": platform.system(), "machine": platform.machine(),
            "python": sys.version.split()[0], "python_implementation": platform.python_implementation()}


def peer_versions(names: Iterable[str]) -> dict[str, str]:
    out = {}
    for name in names:
        cls = STORES[name]
        if cls.available() is None:
            try:
                out[name] = cls.version()
            except Exception as e:  # noqa: BLE001
                out[name] = f"unknown ({e})"
    return out


# ---------------------------------------------------------------- progress


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.label = ""

    def step(self, label: str, advance: int = 0) -> None:
        self.done += advance
        self.label = label
        if not self.enabled:
            return
        width = 28
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        el = time.monotonic() - self.t0
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {el:6.0f}s {label[:40]:<40}")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


# ---------------------------------------------------------------- running


def _run_one(spec: dict[str, Any], progress: _Progress, phases: int, timeout: float) -> dict[str, Any]:
    """Runs _worker in a fresh interpreter; returns its result or an error."""
    cmd = [sys.executable, "-m", "norikv.bench", "--_worker", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result: dict[str, Any] | None = None
    seen = 0
    label = f"{spec['store']} {spec['value_size']}B"
    stderr_buf: list[str] = []
    reader = threading.Thread(target=lambda: stderr_buf.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.daemon = True
    timer.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "phase" in msg:
            if seen < phases:
                seen += 1
                progress.step(f"{label}: {msg['phase']}", 1)
        elif "result" in msg:
            result = msg["result"]
    rc = proc.wait()
    timed_out = not timer.is_alive() and rc != 0
    timer.cancel()
    reader.join(5)
    progress.step(label, max(phases - seen, 0))
    if result is None or rc != 0:
        err = "".join(stderr_buf).strip().splitlines()
        if timed_out:
            err.append(f"killed after --timeout={timeout:g} s")
        return {"status": "error", "reason": f"worker exited with {rc}: " + (err[-1] if err else "no output"),
                "stderr_tail": err[-15:]}
    result["status"] = "measured"
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    stores = args.stores
    sizes = args.value_size
    ops = args.ops
    out: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m norikv.bench " + " ".join(args.argv),
        "machine": machine_info(),
        "versions": peer_versions(stores),
        "parameters": {"n": args.n, "key_size": KEY_SIZE, "value_sizes": sizes, "ops": ops,
                       "sync_ops": args.sync_ops, "batch_size": args.batch_size,
                       "batches": args.batches, "seed": args.seed, "threads": 8,
                       "dir": args.dir},
        "levels": {"none": "nothing survives the process",
                   "os": "an acknowledged write is in OS buffers: survives the process, not a power loss",
                   "synced": "an acknowledged write is on stable storage (fsync/fdatasync)"},
        "operations": {o: OPS[o] for o in ops},
        "results": {},
    }
    phases = len([o for o in ops if o != "put"]) + 2  # put and done are always emitted
    todo = [(s, vs) for vs in sizes for s in stores]
    progress = _Progress(len(todo) * phases, enabled=(not args.quiet) and sys.stderr.isatty())
    for store, vs in todo:
        key = f"{store}/{vs}"
        reason = STORES[store].available()
        if reason is not None:
            out["results"][key] = {"store": store, "value_size": vs, "status": "skipped", "reason": reason}
            progress.step(f"{store} skipped", phases)
            continue
        work = tempfile.mkdtemp(prefix=f"norikv-bench-{store}-", dir=args.dir)
        try:
            spec = {"store": store, "value_size": vs, "n": args.n, "ops": ops, "sync_ops": args.sync_ops,
                    "batch_size": args.batch_size, "batches": args.batches, "seed": args.seed,
                    "dir": work}
            r = _run_one(spec, progress, phases, args.timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        r.update({"store": store, "value_size": vs})
        out["results"][key] = r
    progress.finish()
    return out


# ---------------------------------------------------------------- output


def _fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def _fmt_bytes(x: int | None) -> str:
    if x is None:
        return "-"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x}B"


def format_table(data: dict[str, Any]) -> str:
    ops = data["parameters"]["ops"]
    rate_ops = [o for o in THROUGHPUT_OPS if o in ops]
    lines: list[str] = []
    p = data["parameters"]
    m = data["machine"]
    lines.append(f"norikv bench  {data['date_utc']}  N={p['n']:,}  key={p['key_size']}B  "
                 f"sync_ops={p['sync_ops']:,}  batches={p['batches']}x{p['batch_size']}")
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, {_fmt_bytes(m['memory_bytes'])}, "
                 f"Linux {m['kernel']}, Python {m['python']}")
    lines.append("throughput in operations per second (higher is better); reopen in ms (open + first get);")
    lines.append("anon mem / rss mem = growth of RssAnon / VmRSS while the store holds N keys (rss includes "
                 "mapped file pages); peak rss = whole process, including the workload's key list; "
                 "disk = allocated bytes with N keys, after close")
    for vs in p["value_sizes"]:
        lines.append("")
        lines.append(f"== value size {vs} B ==")
        head = ["store", "level"] + rate_ops + (["reopen ms"] if "reopen" in ops else []) + ["anon mem", "rss mem", "peak rss", "disk"]
        rows = [head]
        notes: list[str] = []
        for key, r in data["results"].items():
            if r["value_size"] != vs:
                continue
            if r["status"] != "measured":
                notes.append(f"{r['store']}: {r['status']}: {r['reason']}")
                continue
            row = [r["store"], r.get("level", "")]
            for o in rate_ops:
                f = r["ops"].get(o)
                if f is None:
                    row.append("-")
                elif f["status"] != "ok":
                    row.append("n/a")
                else:
                    row.append(_fmt_rate(f["ops_per_s"]) + ("*" if f.get("note") else ""))
                    if f.get("note"):
                        notes.append(f"{r['store']} {o}*: {f['note']}")
            if "reopen" in ops:
                f = r["ops"].get("reopen")
                row.append("n/a" if not f or f["status"] != "ok" else f"{f['seconds'] * 1e3:.1f}")
            row.append(_fmt_bytes(r.get("memory_store_anon")))
            row.append(_fmt_bytes(r.get("memory_store_rss")))
            row.append(_fmt_bytes(r.get("peak_rss")))
            row.append(_fmt_bytes(r.get("disk_bytes", {}).get("allocated")) if r.get("disk_bytes") else "n/a")
            rows.append(row)
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
        for j, row in enumerate(rows):
            lines.append("  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(row, widths))))
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        for nline in notes:
            lines.append("  note: " + nline)
    lines.append("")
    lines.append("configuration (plain = put/get/get_missing/delete/reopen at the row's level; "
                 "synced = batch_sync/put_sync/threads8_sync):")
    configs: dict[tuple[str, str], dict[str, list[int]]] = {}
    na: dict[str, str] = {}
    for r in data["results"].values():
        if r["status"] != "measured":
            continue
        for lvl in ("plain_ops", "durable_ops"):
            c = r.get("config", {}).get(lvl)
            if c:
                configs.setdefault((r["store"], lvl), {}).setdefault(c, []).append(r["value_size"])
        for o in ("batch_sync", "put_sync", "threads8_sync"):
            f = r["ops"].get(o)
            if f and f.get("status") == "n/a" and "durable_ops" not in r.get("config", {}):
                na[r["store"]] = f["reason"]
    stores_seen: list[str] = []
    for (store, _lvl) in configs:
        if store not in stores_seen:
            stores_seen.append(store)
    for store in stores_seen:
        for lvl, label in (("plain_ops", "plain"), ("durable_ops", "synced")):
            texts = configs.get((store, lvl), {})
            for c, sizes in texts.items():
                suffix = "" if len(texts) == 1 else " [value size " + ", ".join(f"{v} B" for v in sizes) + "]"
                lines.append(f"  {store:<14} {label:<6} {c}{suffix}")
        if store in na:
            lines.append(f"  {store:<14} synced n/a: {na[store]}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()))
    return "\n".join(lines)


def write_chart(data: dict[str, Any], path: str) -> str | None:
    """Throughput per operation per store (log scale), one panel per value
    size. Returns None when matplotlib is missing (the reason otherwise)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib is not installed ({e}); no chart"
    p = data["parameters"]
    ops = [o for o in THROUGHPUT_OPS if o in p["ops"]]
    sizes = p["value_sizes"]
    stores = []
    for r in data["results"].values():
        if r["status"] == "measured" and r["store"] not in stores:
            stores.append(r["store"])
    if not ops or not stores:
        return "nothing measured; no chart"
    fig, axes = plt.subplots(len(sizes), 1, figsize=(max(11, 1.6 * len(ops) + 4), 4.8 * len(sizes)),
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    width = 0.8 / len(stores)
    for ax, vs in zip(axes[:, 0], sizes):
        missing: dict[int, list[float]] = {}
        for si, store in enumerate(stores):
            r = data["results"].get(f"{store}/{vs}")
            ys = []
            for o in ops:
                f = (r or {}).get("ops", {}).get(o) if r and r["status"] == "measured" else None
                ys.append(f["ops_per_s"] if f and f.get("status") == "ok" else 0)
            xs = [i + (si - (len(stores) - 1) / 2) * width for i in range(len(ops))]
            ax.bar(xs, [y if y else float("nan") for y in ys], width, label=store,
                   color=cmap(si % 10), edgecolor="black", linewidth=0.3)
            missing[si] = [x for x, y in zip(xs, ys) if not y]
        ax.set_yscale("log")
        lo = ax.get_ylim()[0]
        for xs_na in missing.values():
            for x in xs_na:
                ax.text(x, lo * 1.3, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="grey")
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels(ops)
        ax.set_ylabel("operations / second (log)")
        ax.set_title(f"{KEY_SIZE}-byte keys, {vs}-byte values, N={p['n']:,}")
        ax.grid(axis="y", which="major", alpha=0.4)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0)
    m = data["machine"]
    fig.suptitle(f"norikv bench {data['date_utc']} - {m['cpu']}, {m['cores']} cores, Python {m['python']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ---------------------------------------------------------------- CLI


def _csv(choices: Iterable[str], what: str) -> Callable[[str], list[str]]:
    allowed = list(choices)

    def parse(s: str) -> list[str]:
        items = [x.strip() for x in s.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {what} {bad or s!r}; choose from {', '.join(allowed)}")
        return items
    return parse


def _sizes(s: str) -> list[int]:
    out = []
    for x in s.split(","):
        x = x.strip().lower()
        mult = 1
        if x.endswith("kb") or x.endswith("k"):
            mult, x = 1024, x.rstrip("b").rstrip("k")
        try:
            v = int(x) * mult
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad value size {s!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError("value sizes must be > 0")
        out.append(v)
    return out


def _positive(s: str) -> int:
    try:
        v = int(s.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="norikv bench",
        description="Compare norikv with dict, sqlite3, lmdb, rocksdict, plyvel, semidbm and diskcache "
                    "on one workload (16-byte keys). Peers not installed are skipped with a note.")
    ap.add_argument("--stores", type=_csv(STORES, "store"), default=list(STORES),
                    help="comma-separated subset of: " + ", ".join(STORES))
    ap.add_argument("--ops", type=_csv(OPS, "operation"), default=list(OPS),
                    help="comma-separated subset of: " + ", ".join(OPS) + " (memory and disk are always measured)")
    ap.add_argument("--value-size", type=_sizes, default=[100, 1024],
                    help="comma-separated value sizes in bytes, e.g. 100,1k (default 100,1024)")
    ap.add_argument("--n", type=_positive, default=None, help="keys loaded (default 1,000,000; 20,000 with --quick)")
    ap.add_argument("--quick", action="store_true", help="CI size: N=20,000, 200 synced ops, 50 batches")
    ap.add_argument("--sync-ops", type=_positive, default=None,
                    help="operations for put_sync and threads8_sync (default 2,000; 200 with --quick)")
    ap.add_argument("--batch-size", type=_positive, default=100, help="puts per durable batch (default 100)")
    ap.add_argument("--batches", type=_positive, default=None, help="durable batches (default 1,000; 50 with --quick)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="bench-results", help="directory for results.json and chart.png")
    ap.add_argument("--dir", default=None, help="where the stores are created (default: the system temp dir)")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds allowed per store and value size")
    ap.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    args = ap.parse_args(argv)
    if args._worker:
        spec = json.loads(args._worker)
        _emit({"result": _worker(spec)})
        return 0
    args.argv = argv
    if args.n is None:
        args.n = 20_000 if args.quick else 1_000_000
    if args.sync_ops is None:
        args.sync_ops = 200 if args.quick else 2_000
    if args.batches is None:
        args.batches = 50 if args.quick else 1_000
    args.sync_ops = max(8, args.sync_ops - args.sync_ops % 8)  # 8 threads share it evenly
    if args.dir is not None:
        os.makedirs(args.dir, exist_ok=True)
    data = run(args)
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "results.json")
    png_path = os.path.join(args.out, "chart.png")
    chart_note = write_chart(data, png_path)
    data["chart"] = None if chart_note else os.path.basename(png_path)
    if chart_note:
        data["chart_note"] = chart_note
    with open(json_path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    if not args.quiet:
        print(format_table(data))
        print(f"\nresults: {json_path}" + (f"\nchart:   {png_path}" if not chart_note else f"\n{chart_note}"))
    errors = [k for k, r in data["results"].items() if r["status"] == "error"]
    for k in errors:
        print(f"error: {k}: {data['results'][k]['reason']}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
