"""``stats()`` for Prometheus: :class:`StoreCollector`, a ``prometheus_client``
collector (``pip install "norikv[prometheus]"``).

::

    from prometheus_client import REGISTRY, start_http_server
    from norikv.metrics import StoreCollector

    REGISTRY.register(StoreCollector(store))          # labels: store=<path>
    start_http_server(9100)

Each scrape calls ``store.stats()`` once (no background thread, nothing
cached). Every field of ``stats()`` is exported (the README's table says what
each means) under ``norikv_`` with a unit suffix: counters end in ``_total``;
``dead_ratio`` is ``norikv_dead_ratio``; ``compaction_error`` and ``failed``
become 0/1 gauges (``norikv_compaction_failed``, ``norikv_failed``); the last
compaction's figures are ``norikv_last_compaction_*``. ``norikv_up`` is 1
while the store is open; a closed store exports only ``norikv_up 0``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["StoreCollector", "METRICS"]

# stats() field -> (metric name without the namespace, type, help)
METRICS: dict[str, tuple[str, str, str]] = {
    "keys": ("keys", "gauge", "Live keys (expired ones excluded)."),
    "live_bytes": ("live_bytes", "gauge", "Bytes of live keys and values (uncompressed)."),
    "wal_bytes": ("wal_bytes", "gauge", "Logical bytes of all log segments."),
    "segments": ("segments", "gauge", "Log segment files."),
    "dead_ratio": ("dead_ratio", "gauge", "Share of wal_bytes not needed for live data."),
    "recovery_seconds": ("recovery_seconds", "gauge", "Duration of the last open's recovery."),
    "recovery_records": ("recovery_records", "gauge", "Records replayed by the last open."),
    "recovery_corruption_detected": (
        "recovery_corruption_detected",
        "gauge",
        "1 when the last open cut or skipped damaged bytes.",
    ),
    "relative_ttl_records": ("relative_ttl_records", "gauge", "Foreign relative-TTL records seen at open."),
    "fsyncs": ("fsyncs_total", "counter", "Data syncs of the log since open."),
    "fsync_seconds_total": ("fsync_seconds_total", "counter", "Time spent in data syncs since open."),
    "fsync_seconds_avg": ("fsync_seconds_avg", "gauge", "Mean duration of a data sync since open."),
    "fsync_seconds_max": ("fsync_seconds_max", "gauge", "Longest data sync since open."),
    "fsync_gather_seconds_total": (
        "fsync_gather_seconds_total",
        "counter",
        "Time this process's fsync leaders waited for other sync() calls to join (group commit).",
    ),
    "unsynced_bytes": ("unsynced_bytes", "gauge", "Bytes appended but not yet covered by an fsync."),
    "compactions": ("compactions_total", "counter", "Compactions since open."),
    "compaction_error": ("compaction_failed", "gauge", "1 when the last background compaction failed."),
    "ttl_keys": ("ttl_keys", "gauge", "Live keys that carry a TTL."),
    "failed": ("failed", "gauge", "1 when an I/O error poisoned the log (writes refused until reopen)."),
    "values": ("values_on_disk", "gauge", "1 for a values='disk' store, 0 for values='memory'."),
    "keydir_bytes": ("keydir_bytes", "gauge", "Bytes the key directory holds (values='disk' only)."),
    "value_reads": ("value_reads_total", "counter", "Values read from the log since open (values='disk' only)."),
    "hint_files_written": ("hint_files_written_total", "counter", "Hint files written since open."),
    "hint_error": ("hint_failed", "gauge", "1 when writing the last hint file failed."),
    "recovery_hint_segments": ("recovery_hint_segments", "gauge", "Segments the last open loaded from hint files."),
    "readonly": ("readonly", "gauge", "1 for a store opened with readonly=True."),
    "following": ("following", "gauge", "1 while the store follows the writes of other processes."),
    "writer_deaths": (
        "writer_deaths_total",
        "counter",
        "Writers of any process found dead holding the writers' mutex (since the store's session began).",
    ),
    "reloads": ("reloads_total", "counter", "Maps reloaded since open after another process's compaction."),
}
_LAST_COMPACTION = ("seconds", "bytes_before", "bytes_after", "segments_written", "segments_deleted")


class StoreCollector:
    """Collects ``stats()`` of ``store`` (a KvStore, CodecStore or
    AsyncKvStore) at each scrape. ``labels``: the labels of every sample
    (default ``{"store": store.path}``); ``namespace``: the metric prefix."""

    def __init__(self, store: Any, *, labels: Mapping[str, str] | None = None, namespace: str = "norikv") -> None:
        # Imported here so that norikv does not need prometheus_client.
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self._gauge, self._counter = GaugeMetricFamily, CounterMetricFamily
        self.store = store
        self.labels = dict(labels) if labels is not None else {"store": str(store.path)}
        self.namespace = namespace

    def _family(self, name: str, kind: str, doc: str, value: float) -> Any:
        full = f"{self.namespace}_{name}"
        fam: Any
        if kind == "counter":
            # prometheus_client adds the _total suffix of a counter itself
            fam = self._counter(full.removesuffix("_total"), doc, labels=list(self.labels))
        else:
            fam = self._gauge(full, doc, labels=list(self.labels))
        fam.add_metric(list(self.labels.values()), float(value))
        return fam

    def collect(self) -> Iterator[Any]:
        up = not self.store.closed
        if up:
            try:
                stats = self.store.stats()
            except ValueError:  # ClosedError: closed between the two calls
                up = False
        yield self._family("up", "gauge", "1 while the store is open.", 1 if up else 0)
        if not up:
            return
        for field, (name, kind, doc) in METRICS.items():
            value = stats[field]
            if field in ("compaction_error", "failed", "hint_error"):
                value = value is not None
            elif field == "values":
                value = value == "disk"
            elif value is None:  # a values="disk" figure of a memory store
                continue
            yield self._family(name, kind, doc, value)
        last = stats["last_compaction"]
        if last is not None:
            for f in _LAST_COMPACTION:
                yield self._family(f"last_compaction_{f}", "gauge", f"The last compaction's {f}.", last[f])
