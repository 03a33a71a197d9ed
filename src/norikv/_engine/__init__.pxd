# Declarations of norikv._engine (the parts' interfaces).
include "clib.pxd"
