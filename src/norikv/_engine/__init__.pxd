# Declarations of norikv._engine: each part's interface (its cdef classes
# with their attributes and cdef methods, the cdef functions other parts
# call), in dependency order. __init__.pyx includes the implementations.
include "clib.pxd"        # the C headers in include/, errno names, pthread
include "runtime.pxd"
include "codec.pxd"
include "log.pxd"         # the append contract between the log and its writers
include "logdir.pxd"
include "segment.pxd"
include "shared.pxd"        # many processes on one log
include "flusher.pxd"       # the background work without the GIL
include "lockdir.pxd"       # taking a log directory
include "views.pxd"       # read-only mappings of segments (values="disk")
include "scan.pxd"
include "keydir.pxd"      # the key directory (values="disk")
include "loader.pxd"
include "index.pxd"
include "store.pxd"
include "snapshot.pxd"    # the map at one instant (range, items)
include "limits.pxd"        # max_keys, max_bytes
include "ondisk.pxd"
include "ttl.pxd"
include "stats.pxd"
include "hints.pxd"       # hint files (values="disk")
include "batch.pxd"
include "compact.pxd"
include "fastcall.pxd"
include "opening.pxd"
include "follow.pxd"        # other processes' writes applied to the map
include "mapping.pxd"
