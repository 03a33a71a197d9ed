"""norikv.codecs: str keys, JSON / pickle / msgpack / custom values over a
KvStore; what cannot be encoded is a TypeError before anything is written."""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import MutableMapping
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import norikv
from norikv import CodecStore, ConfigError, FsyncPolicy, KvStore
from storeutil import wal_records

try:
    import msgpack
except ImportError:  # optional
    msgpack = None

VALUE_CODECS = ["json", "pickle"] + (["msgpack"] if msgpack is not None else [])
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


def open_codec(path, **kw):
    kw.setdefault("fsync_policy", FsyncPolicy.OS)
    return CodecStore.open(path, **kw)


@pytest.mark.parametrize("vc", VALUE_CODECS)
def test_round_trip_across_reopen(tmp_path, vc):
    value = {"name": "Ada", "tags": ["x", "y"], "n": 3, "f": 1.5, "none": None}
    with open_codec(tmp_path, key_codec="str", value_codec=vc) as s:
        assert isinstance(s, MutableMapping)
        s["user:1"] = value
        s.put("user:2", [1, 2, 3], ttl=100)
        assert s["user:1"] == value
        assert s.get("absent") is None and s.get("absent", 7) == 7
        assert "user:1" in s and "nope" not in s
    with open_codec(tmp_path, key_codec="str", value_codec=vc) as s:
        assert s["user:1"] == value
        assert s.items() == [("user:1", value), ("user:2", [1, 2, 3])]
        assert 50 < s.ttl("user:2") <= 100
        assert s.ttl("user:1") is None
    # on disk: the encoded bytes, readable by anyone with the codec
    with KvStore.open(tmp_path) as raw:
        loads = {"json": json.loads, "pickle": pickle.loads, "msgpack": lambda b: msgpack.unpackb(b, raw=False)}[vc]
        assert loads(raw[b"user:1"]) == value


@given(st.dictionaries(st.text(), JSONISH, max_size=8))
def test_json_round_trip_property(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("p")
    with open_codec(d, key_codec="str", value_codec="json") as s:
        s.update(data)
        assert dict(s.items()) == data
    with open_codec(d, key_codec="str", value_codec="json") as s:
        assert dict(s.items()) == data


@given(st.lists(st.text(), unique=True, max_size=30))
def test_str_keys_range_in_code_point_order(tmp_path_factory, keys):
    d = tmp_path_factory.mktemp("r")
    with open_codec(d, key_codec="str") as s:
        for k in keys:
            s[k] = b"v"
        assert [k for k, _ in s.range()] == sorted(keys)
        assert [k for k, _ in s.range(reverse=True)] == sorted(keys, reverse=True)
        if keys:
            lo = min(keys)
            assert [k for k, _ in s.range(lo)] == sorted(keys)
            assert [k for k, _ in s.prefix(lo)] == sorted(k for k in keys if k.startswith(lo))


def test_unencodable_values_are_type_errors_and_write_nothing(tmp_path):
    circular: list[object] = []
    circular.append(circular)
    with open_codec(tmp_path, key_codec="str", value_codec="json") as s:
        s["ok"] = 1
        for bad in ({1, 2}, object(), Decimal("1.5"), circular, b"bytes"):
            with pytest.raises(TypeError):
                s["k"] = bad
            with pytest.raises(TypeError):
                s.update({"a": 1, "k": bad})  # atomic: "a" is not written either
            with pytest.raises(TypeError):
                with s.batch() as b:
                    b.put("b", 1)
                    b.put("k", bad)
        for bad_key in (b"bytes", 1, "\ud800"):
            with pytest.raises(TypeError):
                s[bad_key] = 1
        assert s.items() == [("ok", 1)]
    assert len(wal_records(str(tmp_path))) == 1
    with open_codec(tmp_path / "p", value_codec="pickle") as s:
        with pytest.raises(TypeError):
            s[b"k"] = lambda: None  # a lambda does not pickle
        with pytest.raises(TypeError):
            s[b"k"] = threading.Lock()
        assert len(s) == 0


def test_custom_pair_and_bad_dumps_result(tmp_path):
    codec = (lambda v: str(v).encode(), lambda b: int(b))
    with open_codec(tmp_path, value_codec=codec) as s:
        s[b"n"] = 42
        assert s[b"n"] == 42
    with open_codec(tmp_path / "b", value_codec=(lambda v: v, lambda b: b)) as s:
        with pytest.raises(TypeError, match="not bytes"):
            s[b"n"] = 42  # dumps returned an int


def test_mapping_methods(tmp_path):
    with open_codec(tmp_path, key_codec="str", value_codec="json") as s:
        s.update({"a": 1, "b": [2]}, c={"x": 3})
        assert s.pop("a") == 1
        assert s.pop("a", "d") == "d"
        with pytest.raises(KeyError):
            s.pop("a")
        assert s.setdefault("n", None) is None and "n" in s  # json stores null
        assert s.setdefault("b", 0) == [2]
        assert s.popitem() == ("n", None)
        assert s.delete("b") and not s.delete("b")
        del s["c"]
        with pytest.raises(KeyError):
            del s["c"]
        s["z"] = 0
        s.clear()
        assert len(s) == 0
        other = open_codec(tmp_path / "o", key_codec="str", value_codec="json")
        assert s == s and s != other and len({s, other}) == 2
        other.close()


def test_options_are_checked_before_the_store_is_opened(tmp_path):
    d = tmp_path / "never"
    with pytest.raises(ConfigError, match="value_codec"):
        CodecStore.open(d, value_codec="yaml")
    with pytest.raises(ConfigError, match="key_codec"):
        CodecStore.open(d, key_codec="json")
    with pytest.raises(TypeError, match="value_codec"):
        CodecStore.open(d, value_codec=(json.dumps,))
    with pytest.raises(TypeError, match="key_codec"):
        CodecStore.open(d, key_codec=42)
    assert not d.exists()


def test_bytes_path_is_the_store_itself(tmp_path):
    # no codec: KvStore.open is untouched and returns the engine's class
    with KvStore.open(tmp_path) as s:
        assert type(s) is norikv.KvStore
    with open_codec(tmp_path / "c") as c:  # no codec given: bytes pass through
        c[b"k"] = b"v"
        assert c.store[b"k"] == b"v"
