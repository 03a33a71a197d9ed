"""What a log and a store are opened with: :class:`FsyncPolicy`,
:class:`RecoveryMode`, :class:`WalConfig`, and the option tables that
``WalConfig.validate`` and ``KvStore.open`` check (norikv._options) before
anything on disk is touched.

A leaf module (it imports no other part of norikv but errors, compression and
_options), so that the engine can take these types at import time.
:mod:`norikv.wal` re-exports the three types, their documented home.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import ClassVar

from norikv import _options
from norikv.compression import DEFAULT_MAX_VALUE_SIZE, Compression
from norikv.errors import ConfigError

__all__ = ["FsyncPolicy", "RecoveryMode", "WalConfig"]

MIN_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 1 << 40


@dataclass(frozen=True)
class FsyncPolicy:
    """When appended records reach stable storage.

    Use the constants ``FsyncPolicy.ALWAYS`` and ``FsyncPolicy.OS`` or
    ``FsyncPolicy.batch(window_seconds)``."""

    kind: str
    window: float = 0.0

    ALWAYS: ClassVar[FsyncPolicy]
    OS: ClassVar[FsyncPolicy]

    @classmethod
    def batch(cls, window_seconds: float = 0.005) -> FsyncPolicy:
        """fsync at most ``window_seconds`` after an append (default 5 ms)."""
        return cls("batch", window_seconds)

    def validate(self) -> None:
        if not isinstance(self.kind, str):
            raise TypeError(f"the fsync policy kind must be a str, not {type(self.kind).__name__}")
        if self.kind not in ("always", "os", "batch"):
            raise ConfigError(f"unknown fsync policy {self.kind!r}")
        if self.kind == "batch":
            _options.check_options(_BATCH_OPTIONS, {"the batch window": self.window})

    @property
    def code(self) -> int:
        return {"os": 0, "always": 1, "batch": 2}[self.kind]

    def __repr__(self) -> str:
        if self.kind == "batch":
            return f"FsyncPolicy.batch({self.window!r})"
        return f"FsyncPolicy.{self.kind.upper()}"


FsyncPolicy.ALWAYS = FsyncPolicy("always")
FsyncPolicy.OS = FsyncPolicy("os")


class RecoveryMode(enum.Enum):
    """What open does with a damaged log (after RocksDB's WAL recovery modes).

    ``TOLERATE_CORRUPTED_TAIL`` (default): the last segment is cut back to its
    longest valid prefix (a torn or corrupt tail, reported); damage in any
    earlier segment raises CorruptionError and changes nothing.
    ``ABSOLUTE_CONSISTENCY``: any damage raises CorruptionError; nothing is
    changed (a torn tail and an atomic batch left unterminated by a crash are
    damage too). A zero-filled preallocated tail is still a clean end.
    ``POINT_IN_TIME``: the log is cut at the first damage wherever it is and
    every later segment is deleted, so what remains is a prefix of what was
    written.
    ``SKIP_ANY_CORRUPTED_RECORDS``: damaged spans are skipped (the segment is
    rewritten without them) and every record that still checks out is kept.

    A whole record whose CRC holds but whose compressed value does not
    decompress to at most ``max_value_size`` bytes is damage, never a torn
    tail: TOLERATE_CORRUPTED_TAIL refuses it wherever it is, like
    ABSOLUTE_CONSISTENCY; POINT_IN_TIME cuts the log at it;
    SKIP_ANY_CORRUPTED_RECORDS skips exactly that record (with the rest of
    the atomic batch it belongs to).
    """

    TOLERATE_CORRUPTED_TAIL = "tolerate_corrupted_tail"
    ABSOLUTE_CONSISTENCY = "absolute_consistency"
    POINT_IN_TIME = "point_in_time"
    SKIP_ANY_CORRUPTED_RECORDS = "skip_any_corrupted_records"


@dataclass(frozen=True)
class WalConfig:
    """Configuration of a Wal, validated like nori-wal's."""

    dir: str | os.PathLike[str] = "wal"
    max_segment_size: int = 128 << 20
    fsync_policy: FsyncPolicy = field(default_factory=lambda: FsyncPolicy.batch(0.005))
    preallocate: bool = True
    node_id: int = 0
    recovery_mode: RecoveryMode = RecoveryMode.TOLERATE_CORRUPTED_TAIL
    #: The largest value (uncompressed) ``append`` takes, and the most a
    #: compressed value may decompress to when read (a bound against
    #: decompression bombs): 256 MiB by default.
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    #: Under ``FsyncPolicy.OS``: start writing the log back to the disk every
    #: this many bytes (without waiting for it), as RocksDB's
    #: ``wal_bytes_per_sync``, so that the fsync that seals a full segment
    #: finds little left to write (a nonzero value below 2 MiB counts as
    #: 2 MiB). 0 (the default) leaves it to the kernel.
    #: The other policies write the log back within their window anyway.
    writeback_bytes: int = 0

    def validate(self) -> None:
        """Raises TypeError (wrong type) or ConfigError (wrong value) naming
        the option; touches nothing on disk."""
        _options.check_options(_WAL_OPTIONS, vars(self))


# The options of WalConfig (and so of Wal.open and KvStore.open), checked
# before anything on disk is touched (norikv._options).
_WAL_OPTIONS: dict[str, _options.Spec] = {
    "dir": _options.Path(),
    "max_segment_size": _options.Int(MIN_SEGMENT_SIZE, MAX_SEGMENT_SIZE, unit=" bytes (1 MiB to 1 TiB)"),
    "fsync_policy": _options.Instance(FsyncPolicy),
    "preallocate": _options.Bool(),
    "node_id": _options.Int(0, _options.UINT32_MAX),  # nori-wal's node_id is a u32
    "recovery_mode": _options.Instance(RecoveryMode),
    "max_value_size": _options.Int(1, (1 << 63) - 1, unit=" bytes"),
    "writeback_bytes": _options.Int(0, MAX_SEGMENT_SIZE, unit=" bytes"),
}
_BATCH_OPTIONS: dict[str, _options.Spec] = {
    "the batch window": _options.Real(0, 1, open_lo=True, unit=" second"),
}


# The options of KvStore.open (those it passes to WalConfig are checked by
# WalConfig's table), checked before anything on disk is touched.
STORE_OPTIONS: dict[str, _options.Spec] = {
    "path": _options.Path(),
    "fsync_policy": _options.Instance(FsyncPolicy, optional=True),
    "compression": _options.Parsed(Compression.parse),
    "compress_min_size": _options.Int(0, _options.INT64_MAX, unit=" bytes"),
    "max_keys": _options.Int(1, _options.INT64_MAX, optional=True),
    "max_bytes": _options.Int(1, _options.INT64_MAX, optional=True, unit=" bytes"),
    "auto_compact": _options.Bool(),
    "compact_dead_ratio": _options.Real(0, 1, open_lo=True, open_hi=True),
    "compact_min_bytes": _options.Int(0, _options.INT64_MAX, unit=" bytes"),
    "values": _options.Choice("memory", "disk"),
    "readonly": _options.Bool(),
    "lock_timeout": _options.Real(0, float("inf"), optional=True),
}
