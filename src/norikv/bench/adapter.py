"""The interface every measured store implements.

An adapter opens a store in a directory at a durability level ("os" or
"synced") and offers put/get/delete, a durable batch, a per-op durable put
and close. `config(level)` is the text printed next to the numbers.
"""

from __future__ import annotations

from typing import Any


class NotAvailable(Exception):
    """The store cannot run this operation at the level asked (reported n/a)."""


class Adapter:
    name = ""
    module = ""  # import name, for the version and the skip note
    package = ""  # pip name
    os_level = "os"  # the level of plain writes in this row
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
            return (
                f"{cls.package or cls.module} is not installed ({type(e).__name__}: {e}); pip install 'norikv[bench]'"
            )
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
