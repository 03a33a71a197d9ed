# Declarations of norikv._engine: each part's interface (its cdef classes
# with their attributes and cdef methods, the cdef functions other parts
# call), in dependency order. __init__.pyx includes the implementations.
include "clib.pxd"        # the C headers in include/, errno names, pthread
include "runtime.pxd"
include "codec.pxd"
include "log.pxd"         # the append contract between the log and its writers
include "logdir.pxd"
include "segment.pxd"
include "scan.pxd"
include "loader.pxd"
include "index.pxd"
include "store.pxd"
include "batch.pxd"
include "compact.pxd"
include "fastcall.pxd"
include "api.pxd"
