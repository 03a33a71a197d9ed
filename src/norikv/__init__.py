"""norikv: a durable key-value store for Python services.

The store keeps its data in memory (reads never touch the disk) and makes
every write durable through a write-ahead log whose segments are byte for byte
those of the Rust crate nori-wal. See the README for the durability promise of
each fsync policy.
"""

from norikv._engine import Position, Record, WalIterator, crc32c
from norikv._version import __version__
from norikv.codecs import CodecStore
from norikv.compression import Compression
from norikv.errors import (
    ClosedError,
    ConfigError,
    CorruptionError,
    LockError,
    NoriError,
    NoriIOError,
    ReadOnlyError,
    StoreFullError,
    WalFailedError,
)
from norikv.store import KvStore, WriteBatch
from norikv.wal import FsyncPolicy, RecoveryInfo, RecoveryMode, Wal, WalConfig

__all__ = [
    "__version__",
    "KvStore",
    "WriteBatch",
    "CodecStore",
    "Wal",
    "WalConfig",
    "WalIterator",
    "FsyncPolicy",
    "RecoveryMode",
    "RecoveryInfo",
    "Record",
    "Position",
    "Compression",
    "crc32c",
    "NoriError",
    "ConfigError",
    "ClosedError",
    "CorruptionError",
    "LockError",
    "StoreFullError",
    "NoriIOError",
    "WalFailedError",
    "ReadOnlyError",
]
