"""Helpers shared by the KvStore tests."""

from __future__ import annotations

import os

from norikv import FsyncPolicy, KvStore, Position, Wal, WalConfig


def open_store(path, **kw):
    """KvStore.open with the OS policy unless told otherwise."""
    kw.setdefault("fsync_policy", FsyncPolicy.OS)
    return KvStore.open(path, **kw)


def wal_entries(path):
    """(Record, Position) of every record in <path>/wal, read with norikv.Wal."""
    wal, _ = Wal.open(WalConfig(dir=os.path.join(path, "wal")))
    try:
        return list(wal.read_from(Position(0, 0)))
    finally:
        wal.close()


def wal_records(path):
    """The Records of <path>/wal, in log order."""
    return [r for r, _ in wal_entries(path)]
