# KvStore.stats(): the figures for monitoring (each documented in the README).


cdef dict _stats(KvStore store):
    """KvStore.stats()."""
    store._check_open()
    store._purge_expired()
    sizes = store.wal._segment_sizes()
    wal_bytes = sum(sizes.values())
    written, synced, failed = store.wal._lock_state()
    n = store.wal.fsync_count
    shared = _shared_state(store.wal) or {}
    return {
        "keys": store._count(),
        "values": store.value_storage,
        "keydir_bytes": store._kd.nbytes() if store._disk else None,
        "value_reads": store._views.value_reads if store._disk else None,
        "hint_files_written": store._hints_written,
        "hint_error": repr(store._hint_error) if store._hint_error else None,
        "live_bytes": store.live_bytes,
        "wal_bytes": wal_bytes,
        "segments": len(sizes),
        "dead_ratio": dead_ratio(store.live_bytes, store._count(), wal_bytes),
        "recovery_seconds": store._recovery_seconds,
        "recovery_records": store._recovered_records,
        "recovery_hint_segments": store._hinted_segments,
        "recovery_corruption_detected": store.recovery_info.corruption_detected,
        "fsyncs": n,
        "fsync_seconds_total": store.wal.fsync_seconds,
        "fsync_seconds_avg": store.wal.fsync_seconds / n if n else 0.0,
        "fsync_seconds_max": store.wal.fsync_max,
        "fsync_gather_seconds_total": store.wal.gather_seconds,
        "unsynced_bytes": written - synced,
        "compactions": store._compactions,
        "last_compaction": store._last_compaction,
        "compaction_error": repr(store._compact_error) if store._compact_error else None,
        "ttl_keys": len(store._expiry),
        "relative_ttl_records": store._relative_ttl_records,
        "failed": repr(failed) if failed is not None else None,
        "readonly": store.wal.readonly,
        "following": bool(shared),
        "writer_deaths": shared.get("writer_deaths", 0),
        "reloads": store._reloads,
    }
