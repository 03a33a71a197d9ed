"""The comparison runner (norikv.bench) at a tiny size, so that it cannot rot.

No assertion here is about speed: only that the runner runs every requested
store (or skips it with a reason), writes a complete JSON file and a chart.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from norikv import bench

THROUGHPUT = ["put", "get", "get_missing", "delete", "batch_sync", "put_sync", "threads8_sync"]


def _run(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "norikv.bench",
        "--quick",
        "--n",
        "2000",
        "--sync-ops",
        "48",
        "--batches",
        "5",
        "--out",
        str(out),
        "--dir",
        str(tmp_path / "stores"),
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "results.json") as f:
        return proc, json.load(f)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    return tmp, *_run(tmp, "--value-size", "100")


def test_every_store_is_measured_or_skipped_with_a_reason(full_run):
    _tmp, _proc, data = full_run
    assert set(data["parameters"]["ops"]) == set(bench.OPS)
    keys = {(r["store"], r["value_size"]) for r in data["results"].values()}
    assert keys == {(s, 100) for s in bench.STORES}
    for key, r in data["results"].items():
        assert r["status"] in ("measured", "skipped"), (key, r)
        if r["status"] == "skipped":
            assert r["reason"] and "not installed" in r["reason"]
            # skipped only when the module really cannot be imported
            assert importlib.util.find_spec(bench.STORES[r["store"]].module) is None
            continue
        assert r["config"]["plain_ops"]
        for op in THROUGHPUT:
            f = r["ops"][op]
            if f["status"] == "ok":
                assert f["ops"] > 0 and f["seconds"] > 0 and f["ops_per_s"] > 0
            else:
                assert f["status"] == "n/a" and f["reason"]
        assert r["peak_rss"] > 0
        assert isinstance(r["memory_store_anon"], int)


def test_norikv_rows_and_levels(full_run):
    _tmp, _proc, data = full_run
    res = data["results"]
    for s in ("norikv-os", "norikv-batch", "norikv-always"):
        r = res[f"{s}/100"]
        assert r["status"] == "measured"
        assert all(r["ops"][op]["status"] == "ok" for op in THROUGHPUT + ["reopen"])
        assert r["disk_bytes"]["allocated"] > 0
        assert "fsync_policy=FsyncPolicy" in r["config"]["plain_ops"]
    assert res["norikv-always/100"]["level"] == "synced"
    assert res["norikv-always/100"]["ops"]["put"]["ops"] == 48  # bounded by --sync-ops
    assert res["norikv-os/100"]["ops"]["put"]["ops"] == 2000
    d = res["dict/100"]
    assert d["level"] == "none"
    for op in ("batch_sync", "put_sync", "threads8_sync", "reopen"):
        assert d["ops"][op]["status"] == "n/a"
    assert "disk_bytes" not in d
    assert res["sqlite3/100"]["status"] == "measured"  # stdlib: always present
    assert "synchronous=FULL" in res["sqlite3/100"]["config"]["durable_ops"]


def test_machine_description_and_versions(full_run):
    _tmp, _proc, data = full_run
    m = data["machine"]
    for field in ("cpu", "cores", "kernel", "python", "memory_bytes"):
        assert m[field], field
    assert m["python"] == sys.version.split()[0]
    for r in data["results"].values():
        if r["status"] == "measured":
            assert r["store"] in data["versions"]
    assert data["parameters"]["n"] == 2000
    assert data["parameters"]["value_sizes"] == [100]


def test_table_chart_and_quiet_stderr(full_run):
    tmp, proc, data = full_run
    out = proc.stdout
    assert "value size 100 B" in out
    for _s, r in data["results"].items():
        if r["status"] == "measured":
            assert r["store"] in out
    assert "synchronous=NORMAL" in out  # the configuration is printed with the numbers
    # stderr is not a TTY here: no progress bar
    assert "[#" not in proc.stderr and "\r" not in proc.stderr
    png = tmp / "out" / "chart.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert data["chart"] == "chart.png"
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    else:
        assert data["chart"] is None and "matplotlib" in data["chart_note"]
    # the per-store directories were removed
    assert os.listdir(tmp / "stores") == []


def test_subset_of_stores_ops_and_sizes(tmp_path):
    proc, data = _run(tmp_path, "--stores", "norikv-os,dict", "--ops", "put,get", "--value-size", "100,1k", "--quiet")
    assert proc.stdout == ""
    assert set(data["results"]) == {"norikv-os/100", "norikv-os/1024", "dict/100", "dict/1024"}
    for r in data["results"].values():
        assert r["status"] == "measured"
        assert set(r["ops"]) == {"put", "get"}


def test_unknown_store_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        bench.main(["--stores", "norikv-os,nosuchdb"])
    assert e.value.code == 2


def test_missing_peer_is_skipped_not_faked(tmp_path, monkeypatch):
    class Missing(bench.Adapter):
        name = "lmdb"
        module = "norikv_no_such_module_xyz"
        package = "lmdb"

    monkeypatch.setitem(bench.STORES, "lmdb", Missing)
    args = bench.build_parser().parse_args(["--stores", "lmdb", "--n", "100"])
    args.argv, args.sync_ops, args.batches = [], 8, 1
    data = bench.run(args)
    r = data["results"]["lmdb/100"]
    assert r["status"] == "skipped" and "not installed" in r["reason"]
    assert "ops" not in r
    assert "lmdb: skipped" in bench.format_table(data)
