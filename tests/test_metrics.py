"""norikv.metrics.StoreCollector: stats() for Prometheus (skipped when
prometheus_client is not installed; the test extra installs it)."""

from __future__ import annotations

import pytest

from norikv import CodecStore, FsyncPolicy
from storeutil import open_store

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from norikv.metrics import METRICS, StoreCollector  # noqa: E402


def scrape(registry) -> dict[str, tuple[str, dict[str, str], float]]:
    text = generate_latest(registry).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = (fam.type, s.labels, s.value)
    return out


def test_every_stats_field_is_exported(tmp_path):
    with open_store(tmp_path, fsync_policy=FsyncPolicy.ALWAYS) as s:
        assert set(METRICS) | {"last_compaction"} == set(s.stats())


def test_scrape_reflects_the_store(tmp_path):
    reg = CollectorRegistry()
    with open_store(tmp_path, fsync_policy=FsyncPolicy.ALWAYS) as s:
        reg.register(StoreCollector(s))
        for i in range(10):
            s.put(b"k%d" % i, b"v" * 10)
        s.put(b"t", b"v", ttl=60)
        m = scrape(reg)
        labels = {"store": str(tmp_path)}
        assert m["norikv_up"] == ("gauge", labels, 1.0)
        assert m["norikv_keys"] == ("gauge", labels, 11.0)
        assert m["norikv_ttl_keys"][2] == 1.0
        assert m["norikv_fsyncs_total"][0] == "counter" and m["norikv_fsyncs_total"][2] >= 11
        assert m["norikv_failed"][2] == 0.0 and m["norikv_compaction_failed"][2] == 0.0
        assert "norikv_last_compaction_seconds" not in m
        s.compact()
        m = scrape(reg)
        assert m["norikv_compactions_total"][2] == 1.0
        assert m["norikv_last_compaction_segments_deleted"][2] >= 1
        assert m["norikv_live_bytes"][2] == s.stats()["live_bytes"]
    m = scrape(reg)
    assert m == {"norikv_up": ("gauge", {"store": str(tmp_path)}, 0.0)}


def test_labels_namespace_and_codec_store(tmp_path):
    reg = CollectorRegistry()
    with CodecStore.open(tmp_path, key_codec="str", value_codec="json") as s:
        reg.register(StoreCollector(s, labels={"db": "users"}, namespace="app_kv"))
        s["a"] = [1]
        m = scrape(reg)
        assert m["app_kv_keys"] == ("gauge", {"db": "users"}, 1.0)
