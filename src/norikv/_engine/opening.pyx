# KvStore.open's body: the log recovered into the map (or the key directory)
# and the store made from them. Its one way to come to be.

import gc
import os
import threading
import time
import weakref
from functools import partial
from heapq import heapify

from norikv.config import FsyncPolicy, WalConfig
from norikv.errors import ConfigError


# Every store opened in this process, for the child of a fork() (_stores_after_fork).
_open_stores = weakref.WeakSet()


def _stores_after_fork():
    """In a child created by fork() (runtime.pyx's hook), for each store of
    the parent: see KvStore._after_fork_in_child."""
    for store in list(_open_stores):
        (<KvStore>store)._after_fork_in_child()


def _catch_up_of(ref):
    """The Wal's follow hook: the store's _catch_up, if it still exists."""
    store = ref()
    if store is not None:
        _catch_up(<KvStore>store)


cdef int _adopt(KvStore store, _StoreLoader loader) except -1:
    """Makes the map the loader built the store's (open, and a reload of a
    store other processes write: follow.pyx)."""
    if store._disk:
        (<_DiskLoader>loader).kd.fit()      # (hint files reserve for all their entries)
        store._kd = (<_DiskLoader>loader).kd
        store._views = (<_DiskLoader>loader).views
    else:
        store._data = loader.data
    store._expiry = loader.expiry
    store._heap = [(d, k) for k, d in loader.expiry.items()]
    heapify(store._heap)
    store.live_bytes = loader.live_bytes
    with store._index_lock:
        store._index = _RangeIndex(store._data, store._kd)
    return 0


cdef KvStore _open_store(type cls, dict o):
    """KvStore.open with its options ``o`` (checked by the caller)."""
    cdef KvStore store
    cdef _StoreLoader loader
    cdef bint disk = o["values"] == "disk"
    path = o["path"]
    fsync_policy = o["fsync_policy"]
    max_value_size = o["max_value_size"]
    # norikv.wal (recovery, the background thread) is the layer above
    # this module's log: imported when first used, not at import time.
    from norikv.wal import Wal
    if fsync_policy is None:
        fsync_policy = FsyncPolicy.batch(0.005)
    kind = _compression_enum().parse(o["compression"])
    config = WalConfig(dir=os.path.join(os.fsdecode(path), "wal"), max_segment_size=o["max_segment_size"],
                       fsync_policy=fsync_policy, preallocate=o["preallocate"],
                       recovery_mode=o["recovery_mode"], max_value_size=max_value_size,
                       writeback_bytes=o["writeback_bytes"])
    config.validate()   # the Wal creates <path>/wal and <path> durably
    if disk and max_value_size >= NK_KD_VSIZE_SAT:
        raise ConfigError(f"max_value_size must be below 4 GiB - 1 with values='disk', got {max_value_size}")
    loader = _new_loader(disk, config)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the rebuild allocates millions of objects the GC need not visit
    t0 = time.perf_counter()
    try:
        wal, info = Wal._open_config(config, loader, shared=True, readonly=o["readonly"],
                                     lock_timeout=o["lock_timeout"])
        if disk and info.spans_skipped:
            # SKIP_ANY_CORRUPTED_RECORDS rewrote segments without the
            # damaged records: the locations found by the scan moved.
            loader = _reload_disk(wal, config, loader)
    finally:
        if gc_was_enabled:
            gc.enable()
    store = cls.__new__(cls)
    try:
        store.wal = wal
        store.path = os.fspath(path)
        store.recovery_info = info
        store._recovery_seconds = time.perf_counter() - t0
        store._recovered_records = loader.records
        store._relative_ttl_records = loader.relative_ttls
        if disk:
            store._hinted_segments = (<_DiskLoader>loader).hinted_segments
        store._disk = disk
        store.value_storage = o["values"]
        store._index_lock = threading.Lock()
        _adopt(store, loader)
        store.max_keys = o["max_keys"] or 0
        store.max_bytes = o["max_bytes"] or 0
        store.max_value_size = max_value_size
        store._compression = int(kind)
        store.compress_min_size = o["compress_min_size"]
        store.compact_dead_ratio = o["compact_dead_ratio"]
        store.compact_min_bytes = o["compact_min_bytes"]
        store._auto_compact = o["auto_compact"]
        store._compact_lock = threading.Lock()
        store._hint_lock = threading.Lock()
        store._follow_mutex = PyThread_allocate_lock()
        if store._follow_mutex == NULL:
            raise MemoryError()
        store.lock_timeout = o["lock_timeout"]
        if (<_WalCore>wal).shm != NULL:
            _new_follower(store)
            store._pub_ver = &(<_WalCore>wal).shm.ver
            store._seen_ver = &(<_WalCore>wal).follow_ver
            if not wal.readonly:
                store._shm = (<_WalCore>wal).shm
            store._seen_epoch = &(<_WalCore>wal).seen_epoch
            store._applied = &(<_WalCore>wal).pub.total
            # (through a weak reference: the store holds the Wal, and a store
            # dropped without close() must still be freed at once)
            wal._follow_hook = partial(_catch_up_of, weakref.ref(store))
        store._closed = False
        _open_stores.add(store)
        if disk and not wal.readonly:
            store._hint_seen_seg = wal.seg_id
            _start_hint_writer(store)
        if not wal.readonly:
            _pin_relative_ttls(store, loader.relative)
    except BaseException:
        # A failed open releases the lock at once: the exception (its
        # traceback holds this frame) may live on in the caller.
        store._closed = True
        if store._compactor is not None:
            store._compactor.join()
        wal._abandon()
        if store._views is not None:
            store._views.unmap_all()
        raise
    return store
