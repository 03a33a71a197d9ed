"""norikv's own rows (one per fsync policy), the plain dict (the in-memory
ceiling), and STORES: every store the command line and the runner choose
from, in the table's row order."""

from __future__ import annotations

import platform
from typing import Any

from norikv.bench.adapter import Adapter, NotAvailable
from norikv.bench.peers import (
    DiskcacheAdapter,
    LmdbAdapter,
    PlyvelAdapter,
    RocksdictAdapter,
    SemidbmAdapter,
    SqliteAdapter,
)


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

        return {"os": FsyncPolicy.OS, "batch": FsyncPolicy.batch(0.005), "always": FsyncPolicy.ALWAYS}[self.policy]

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


STORES: dict[str, type[Adapter]] = {
    a.name: a
    for a in (
        NorikvOs,
        NorikvBatch,
        NorikvAlways,
        DictAdapter,
        SqliteAdapter,
        LmdbAdapter,
        RocksdictAdapter,
        PlyvelAdapter,
        SemidbmAdapter,
        DiskcacheAdapter,
    )
}
