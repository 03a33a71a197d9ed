"""Helpers shared by the KvStore tests."""

from __future__ import annotations

import os
import threading

from norikv import FsyncPolicy, KvStore, Position, Wal, WalConfig

#: keys of conftest's three_segment_store
THREE_SEGMENT_KEYS = 20000


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


def run_in_thread(fn, name=None):
    """Starts ``fn()`` in a daemon thread; returns (thread, box): once the
    thread ended, box holds ``result`` or the ``error`` it raised."""
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - inspected by the caller
            box["error"] = e

    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t, box
