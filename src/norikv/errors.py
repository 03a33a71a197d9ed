"""The exception hierarchy of norikv.

Every error norikv raises on purpose derives from :class:`NoriError`. Where a
builtin exception says the same thing, the class inherits it too, so code that
already catches ``OSError`` or ``ValueError`` keeps working::

    NoriError
    ├── ConfigError        (ValueError)  invalid configuration
    ├── ClosedError        (ValueError)  the Wal/KvStore was closed
    ├── CorruptionError    (ValueError)  bytes on disk fail validation
    ├── LockError          (OSError)     another Wal holds the directory
    ├── StoreFullError                   max_keys / max_bytes would be exceeded
    └── NoriIOError        (OSError)     an I/O call failed (errno, filename)
        └── WalFailedError               a failed fsync/write poisoned the Wal

Wrong argument types raise the builtin ``TypeError``; wrong argument values
raise ``ValueError`` (or :class:`ConfigError` for configuration).
"""

from __future__ import annotations

import os as _os

__all__ = [
    "NoriError",
    "ConfigError",
    "ClosedError",
    "CorruptionError",
    "LockError",
    "StoreFullError",
    "NoriIOError",
    "WalFailedError",
]


class NoriError(Exception):
    """Base class of every error raised by norikv."""


class ConfigError(NoriError, ValueError):
    """A configuration value is invalid; the message says which and why."""


class ClosedError(NoriError, ValueError):
    """An operation was attempted on a closed Wal, KvStore, batch or iterator."""


class CorruptionError(NoriError, ValueError):
    """Bytes on disk failed validation.

    ``path`` is the segment file, ``offset`` the byte offset of the first bad
    record in it and ``segment_id`` its id (any may be ``None`` when unknown).
    """

    def __init__(
        self, message: str, path: str | None = None, offset: int | None = None, segment_id: int | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset
        self.segment_id = segment_id


class LockError(NoriError, OSError):
    """The directory is locked by another open Wal (this process or another).

    ``pid`` is the holder's process id as it wrote it into the ``LOCK`` file
    when it took the lock (the message names it too), or None when unknown:
    the directory is already open in this process, or the holder has not
    written it yet (or is a norikv from before pids were written)."""

    pid: int | None = None


class StoreFullError(NoriError):
    """A put of a new key would exceed the store's ``max_keys``/``max_bytes``."""


class NoriIOError(NoriError, OSError):
    """An operating-system call failed. ``errno`` and ``filename`` are set."""


class WalFailedError(NoriIOError):
    """The Wal refuses writes after an unrecoverable I/O failure.

    After a failed fsync the kernel may already have dropped the unwritten
    pages, so retrying could report success for data that is gone (the
    PostgreSQL "fsyncgate" lesson). The Wal therefore fails every write and
    sync until it is closed and reopened, which re-reads what is on disk.
    """


class ReadOnlyError(NoriIOError):
    """A write (put, delete, batch, compact, sync...) on a store opened with
    ``readonly=True``; errno is EROFS. Nothing was written."""


def io_error(
    err: int,
    path: str | bytes | _os.PathLike[str] | _os.PathLike[bytes] | None,
    what: str,
    cls: type[NoriIOError] = NoriIOError,
) -> NoriIOError:
    """The single place that turns an errno from a system call into an exception."""
    return cls(err, f"{what}: {_os.strerror(err)}", _os.fsdecode(path) if path is not None else None)
