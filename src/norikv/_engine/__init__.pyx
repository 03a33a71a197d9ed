# cython: language_level=3, freethreading_compatible=False
"""The engine of norikv: CRC32C, the nori-wal record codec, segment scanning,
the write path of the log and the whole KvStore. The public names are
re-exported by :mod:`norikv`, :mod:`norikv.store` and :mod:`norikv.wal`;
this module is an implementation detail.

Built from the parts included below, in layer order; each part's .pxd
(included by __init__.pxd) declares its interface. docs/DESIGN.md has the map."""

include "runtime.pyx"     # the clocks, fork()
include "codec.pyx"       # CRC32C, Record, Position, a value's bytes, runs of records
include "scan.pyx"        # reading segments, the recovery scan, WalIterator
include "logdir.pyx"      # segment names, listing, open directories
include "log.pyx"         # _WalCore: the append path, group commit
include "segment.pyx"     # the active segment's file and mapping
include "shared.pyx"      # many processes on one log: SHM, the writers' mutex
include "flusher.pyx"     # the background fsyncs and prefaulting, without the GIL
include "lockdir.pyx"     # taking a log directory: exclusive, shared, read-only
include "views.pyx"       # read-only mappings of segments (values="disk")
include "loader.pyx"      # replaying a log into a store's map
include "keydir.pyx"      # _KeyDir, the key directory of values="disk"
include "hints.pyx"       # hint files: a sealed segment's key directory
include "store.pyx"       # KvStore
include "limits.pyx"      # its limits: max_keys, max_bytes
include "opening.pyx"     # KvStore.open
include "follow.pyx"      # other processes' writes applied to the map
include "ondisk.pyx"      # what values="disk" adds to it
include "ttl.pyx"         # deadlines, relative TTLs, purging expired keys
include "stats.pyx"       # KvStore.stats()
include "batch.pyx"       # WriteBatch, atomic batches
include "index.pyx"       # the range index
include "snapshot.pyx"    # range() and items(): the map at one instant
include "compact.pyx"     # compaction, the dead ratio
include "fastcall.pyx"    # the METH_FASTCALL entries of get and put
include "mapping.pyx"     # pop, popitem, setdefault, update, clear, ttl, backup
