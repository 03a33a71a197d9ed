"""KvStore: an in-memory map made durable by a nori-wal compatible WAL.

Reads are served from memory and never touch the disk. Every write goes to
the WAL first and then to memory, so after a crash, replaying the WAL rebuilds
exactly the acknowledged state (how durable an acknowledgement is depends on
the fsync policy: see README, "Durability").

The store is written in the engine, whole (``src/norikv/_engine/store.pyx``
and the parts it names; docs/DESIGN.md says why); this module is its public
home.
"""

from collections.abc import MutableMapping

from norikv._engine import KvStore, WriteBatch, dead_ratio

# KvStore has every method of a MutableMapping (pop, popitem, setdefault,
# update and clear live in _engine/api.pyx); equality stays identity (README,
# "KvStore as a mapping").
MutableMapping.register(KvStore)

__all__ = ["KvStore", "WriteBatch", "dead_ratio"]
