"""Keys and values that are not bytes: :class:`CodecStore`.

A :class:`~norikv.KvStore` stores bytes. ``CodecStore.open(path,
key_codec="str", value_codec="json", ...)`` opens one and wraps it in a thin
Python layer that encodes keys and values on the way in and decodes them on
the way out (sqlitedict's ``encode``/``decode``, RocksDict's
``dumps``/``loads``). The bytes path is not touched: a store opened with
``KvStore.open`` pays nothing for this module.

Key codecs: ``None``/``"bytes"`` (bytes-like keys as they are), ``"str"``
(UTF-8; byte order of the encoded keys is code point order, so ``range`` and
``prefix`` sort as ``sorted()`` sorts str), or a ``(dumps, loads)`` pair
(``range`` then follows the order of the encoded bytes).
Value codecs: ``None``/``"bytes"``, ``"json"``, ``"pickle"``, ``"msgpack"``
(needs the ``msgpack`` package), or a ``(dumps, loads)`` pair.

A key or value the codec cannot encode raises ``TypeError`` before anything
is written. A stored value the codec cannot decode (written through the
bytes API, or by another codec) raises the codec's own error when read.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import IO, Any

from norikv import _options
from norikv.store import KvStore, WriteBatch

__all__ = ["Codec", "CodecStore", "CodecWriteBatch", "parse_key_codec", "parse_value_codec"]

_MISSING: Any = object()


class Codec:
    """A named ``(dumps, loads)`` pair: ``dumps(obj) -> bytes``,
    ``loads(bytes) -> obj``."""

    __slots__ = ("dumps", "loads", "name")

    def __init__(self, name: str, dumps: Callable[[Any], Any], loads: Callable[[bytes], Any]) -> None:
        self.name, self.dumps, self.loads = name, dumps, loads

    def encode(self, obj: Any, what: str) -> bytes:
        """``dumps(obj)`` as bytes; TypeError when it cannot be encoded."""
        try:
            data = self.dumps(obj)
        except Exception as exc:  # json: ValueError (circular), pickle: PicklingError/AttributeError, ...
            raise TypeError(
                f"{what} of type {type(obj).__name__} cannot be encoded by the {self.name} codec: {exc}"
            ) from exc
        if isinstance(data, bytes):
            return data
        if isinstance(data, (bytearray, memoryview)):
            return bytes(data)
        raise TypeError(f"the {self.name} codec's dumps returned {type(data).__name__}, not bytes")

    def __repr__(self) -> str:
        return f"<norikv.codecs.Codec {self.name}>"


def _str_dumps(key: Any) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"must be str, not {type(key).__name__}")
    return key.encode("utf-8")  # strict: a lone surrogate is refused


def _json_dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _msgpack() -> Codec:
    try:
        import msgpack  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ImportError("the msgpack codec needs the msgpack package (pip install msgpack)") from None
    return Codec(
        "msgpack",
        lambda obj: msgpack.packb(obj, use_bin_type=True),
        lambda data: msgpack.unpackb(data, raw=False),
    )


def _pair(spec: Any, what: str) -> Codec:
    if isinstance(spec, Codec):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2 and callable(spec[0]) and callable(spec[1]):
        dumps, loads = spec
        return Codec(getattr(dumps, "__qualname__", "custom"), dumps, loads)
    raise TypeError(f"{what} must be None, a codec name or a (dumps, loads) pair of callables, not {spec!r}")


def parse_key_codec(spec: Any) -> Codec | None:
    """The key codec named by ``spec`` (None: bytes keys). ValueError for an
    unknown name, TypeError for anything else that is not a pair."""
    if spec is None or spec == "bytes":
        return None
    if isinstance(spec, str):
        if spec == "str":
            return Codec("str", _str_dumps, lambda data: data.decode("utf-8"))
        raise ValueError(f"unknown key codec {spec!r} (expected 'bytes', 'str' or a (dumps, loads) pair)")
    return _pair(spec, "key_codec")


def parse_value_codec(spec: Any) -> Codec | None:
    """The value codec named by ``spec`` (None: bytes values); as key_codec."""
    if spec is None or spec == "bytes":
        return None
    if isinstance(spec, str):
        if spec == "json":
            return Codec("json", _json_dumps, json.loads)
        if spec == "pickle":
            return Codec("pickle", _pickle_dumps, pickle.loads)
        if spec == "msgpack":
            return _msgpack()
        raise ValueError(
            f"unknown value codec {spec!r} (expected 'bytes', 'json', 'pickle', 'msgpack' or a (dumps, loads) pair)"
        )
    return _pair(spec, "value_codec")


# The options CodecStore.open adds to KvStore.open's, checked (norikv._options)
# before anything on disk is touched.
CODEC_OPTIONS: dict[str, _options.Spec] = {
    "key_codec": _options.Parsed(parse_key_codec),
    "value_codec": _options.Parsed(parse_value_codec),
}

_BYTES = Codec("bytes", lambda b: b, lambda b: b)


class CodecStore(MutableMapping[Any, Any]):
    """A :class:`~norikv.KvStore` seen through a key codec and a value codec.

    Every method of the store is here with the same guarantees, keys and
    values encoded on the way in and decoded on the way out; ``store`` is the
    KvStore underneath (bytes in, bytes out). Equality is identity, as for
    KvStore. Closing the CodecStore closes the store. A value codec that
    encodes None (json, pickle, msgpack) stores it: ``get()`` then returns
    None for it as for an absent key, like ``dict.get``."""

    def __init__(self, store: KvStore, *, key_codec: Any = None, value_codec: Any = None) -> None:
        if not isinstance(store, KvStore):
            raise TypeError(f"store must be a KvStore, not {type(store).__name__}")
        _options.check_options(CODEC_OPTIONS, {"key_codec": key_codec, "value_codec": value_codec})
        self.store = store
        self.key_codec = parse_key_codec(key_codec) or _BYTES
        self.value_codec = parse_value_codec(value_codec) or _BYTES

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, key_codec: Any = None, value_codec: Any = None, **options: Any
    ) -> CodecStore:
        """``KvStore.open(path, **options)`` wrapped with the codecs; the
        codecs are checked (TypeError/ConfigError naming the option) before
        the store is opened."""
        _options.check_options(CODEC_OPTIONS, {"key_codec": key_codec, "value_codec": value_codec})
        return cls(KvStore.open(path, **options), key_codec=key_codec, value_codec=value_codec)

    # ---------------------------------------------------------------- encoding

    def _k(self, key: Any) -> Any:
        kc = self.key_codec
        return key if kc is _BYTES else kc.encode(key, "key")

    def _v(self, value: Any) -> Any:
        vc = self.value_codec
        return value if vc is _BYTES else vc.encode(value, "value")

    def _dk(self, key: bytes) -> Any:
        return self.key_codec.loads(key)

    def _dv(self, value: bytes) -> Any:
        return self.value_codec.loads(value)

    # ---------------------------------------------------------------- reads

    def get(self, key: Any, default: Any = None) -> Any:
        v = self.store.get(self._k(key))
        return default if v is None else self._dv(v)

    def __getitem__(self, key: Any) -> Any:
        v = self.store.get(self._k(key))
        if v is None:
            raise KeyError(key)
        return self._dv(v)

    def __contains__(self, key: object) -> bool:
        return self._k(key) in self.store

    def __len__(self) -> int:
        return len(self.store)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def keys(self) -> list[Any]:  # type: ignore[override]
        """A snapshot list of the live keys, decoded."""
        return [self._dk(k) for k in self.store.keys()]

    def values(self) -> list[Any]:  # type: ignore[override]
        return [self._dv(v) for v in self.store.values()]

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        return [(self._dk(k), self._dv(v)) for k, v in self.store.items()]

    def range(self, start: Any = None, end: Any = None, *, reverse: bool = False) -> Iterator[tuple[Any, Any]]:
        """(key, value) with start <= key < end in the order of the encoded
        keys (for ``"str"`` keys: code point order)."""
        lo = None if start is None else self._k(start)
        hi = None if end is None else self._k(end)
        for k, v in self.store.range(lo, hi, reverse=reverse):
            yield self._dk(k), self._dv(v)

    def prefix(self, prefix: Any, *, reverse: bool = False) -> Iterator[tuple[Any, Any]]:
        for k, v in self.store.prefix(self._k(prefix), reverse=reverse):
            yield self._dk(k), self._dv(v)

    def ttl(self, key: Any) -> float | None:
        try:
            return self.store.ttl(self._k(key))
        except KeyError:
            raise KeyError(key) from None

    # ---------------------------------------------------------------- writes

    def put(self, key: Any, value: Any, *, ttl: float | None = None, compression: Any = None) -> None:
        """Both are encoded first: a TypeError leaves the store unchanged."""
        self.store.put(self._k(key), self._v(value), ttl=ttl, compression=compression)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def delete(self, key: Any) -> bool:
        return self.store.delete(self._k(key))

    def __delitem__(self, key: Any) -> None:
        if not self.store.delete(self._k(key)):
            raise KeyError(key)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        v = self.store.pop(self._k(key), None)
        if v is not None:
            return self._dv(v)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[Any, Any]:
        k, v = self.store.popitem()
        return self._dk(k), self._dv(v)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        k = self._k(key)
        v = self.store.get(k)
        if v is not None:
            return self._dv(v)
        self.store.put(k, self._v(default))
        return default

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """As KvStore.update: one atomic batch, every pair encoded first."""
        if isinstance(other, Mapping):
            pairs: Iterable[tuple[Any, Any]] = [(k, other[k]) for k in other]
        elif hasattr(other, "keys"):
            pairs = [(k, other[k]) for k in other.keys()]
        else:
            pairs = other
        encoded = [(self._k(k), self._v(v)) for k, v in pairs]
        encoded += [(self._k(k), self._v(v)) for k, v in kwargs.items()]
        self.store.update(encoded)

    def clear(self) -> None:
        self.store.clear()

    def batch(self) -> CodecWriteBatch:
        """A :class:`CodecWriteBatch`: a WriteBatch that encodes."""
        return CodecWriteBatch(self, self.store.batch())

    # ---------------------------------------------------------------- the rest

    def sync(self) -> None:
        self.store.sync()

    def compact(self) -> dict[str, float]:
        return self.store.compact()

    def stats(self) -> dict[str, object]:
        return self.store.stats()

    def backup(self, dest: str | os.PathLike[str] | IO[bytes], *, incremental: bool = True) -> dict[str, Any]:
        """KvStore.backup: the copy holds the encoded bytes, as the store does."""
        return self.store.backup(dest, incremental=incremental)

    @property
    def path(self) -> str:
        return self.store.path

    @property
    def closed(self) -> bool:
        return self.store.closed

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> CodecStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<norikv.CodecStore keys={self.key_codec.name} values={self.value_codec.name} {self.store!r}>"


class CodecWriteBatch:
    """A :class:`~norikv.WriteBatch` whose puts and deletes are encoded by
    the CodecStore's codecs (a TypeError at ``put`` adds nothing)."""

    def __init__(self, owner: CodecStore, batch: WriteBatch) -> None:
        self._owner, self._batch = owner, batch

    def put(
        self,
        key: Any,
        value: Any,
        *,
        ttl: float | None = None,
        compression: Any = None,
        expires_at_ms: int | None = None,
    ) -> None:
        o = self._owner
        self._batch.put(o._k(key), o._v(value), ttl=ttl, compression=compression, expires_at_ms=expires_at_ms)

    def delete(self, key: Any) -> None:
        self._batch.delete(self._owner._k(key))

    def clear(self) -> None:
        self._batch.clear()

    def __len__(self) -> int:
        return len(self._batch)

    def write(self) -> None:
        self._batch.write()

    def __enter__(self) -> CodecWriteBatch:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._batch.__exit__(exc_type, exc, tb)
