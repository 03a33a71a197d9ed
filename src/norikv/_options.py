"""Validation of configuration options: the one place that checks them.

Each entry point (``WalConfig``, ``KvStore.open``) declares its options in a
table ``{name: spec}`` and calls :func:`check_options` before anything on
disk is touched. A wrong type raises ``TypeError``, a wrong value
:class:`~norikv.errors.ConfigError` (a ``ValueError``); both name the option.
Integer bounds are those of the C fields the values end up in, so no option
can fail later with an ``OverflowError``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from norikv.errors import ConfigError

INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1
UINT32_MAX = (1 << 32) - 1


def _type_name(value: object) -> str:
    return type(value).__name__


class Spec:
    """One option's rule. ``optional``: None is accepted (meaning "default")."""

    optional = False

    def check(self, name: str, value: object) -> None:
        if value is None and self.optional:
            return
        self._check(name, value)

    def _check(self, name: str, value: object) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class Int(Spec):
    """An int (not a bool) in [lo, hi]."""

    def __init__(self, lo: int, hi: int, *, optional: bool = False, unit: str = "") -> None:
        self.lo, self.hi, self.optional, self.unit = lo, hi, optional, unit

    def _check(self, name: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            none = " or None" if self.optional else ""
            raise TypeError(f"{name} must be an int{none}, not {_type_name(value)}")
        if not self.lo <= value <= self.hi:
            raise ConfigError(f"{name} must be in {self.lo}..{self.hi}{self.unit}, got {value!r}")


class Real(Spec):
    """An int or float (not a bool, not NaN) between lo and hi; ``open_lo`` /
    ``open_hi`` exclude the bound itself."""

    def __init__(
        self,
        lo: float,
        hi: float,
        *,
        open_lo: bool = False,
        open_hi: bool = False,
        optional: bool = False,
        unit: str = "",
    ) -> None:
        self.lo, self.hi, self.open_lo, self.open_hi, self.unit = lo, hi, open_lo, open_hi, unit
        self.optional = optional

    def _check(self, name: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, not {_type_name(value)}")
        v = float(value)
        ok = (
            not math.isnan(v)
            and (v > self.lo if self.open_lo else v >= self.lo)
            and (v < self.hi if self.open_hi else v <= self.hi)
        )
        if not ok:
            lo = ">" if self.open_lo else ">="
            hi = "<" if self.open_hi else "<="
            raise ConfigError(f"{name} must be {lo} {self.lo} and {hi} {self.hi}{self.unit}, got {value!r}")


class Bool(Spec):
    """True or False (not 0/1 or other truthy values)."""

    def _check(self, name: str, value: object) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {_type_name(value)}")


class Choice(Spec):
    """One of a few strings."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def _check(self, name: str, value: object) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {_type_name(value)}")
        if value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")


class Instance(Spec):
    """An instance of ``cls`` (then ``cls.validate()`` if it has one)."""

    def __init__(self, cls: type, *, optional: bool = False) -> None:
        self.cls, self.optional = cls, optional

    def _check(self, name: str, value: object) -> None:
        if not isinstance(value, self.cls):
            none = " or None" if self.optional else ""
            raise TypeError(f"{name} must be a {self.cls.__name__}{none}, not {_type_name(value)}")
        validate = getattr(value, "validate", None)
        if validate is not None:
            try:
                validate()
            except TypeError as exc:
                raise TypeError(_naming(name, exc)) from None
            except ValueError as exc:
                raise ConfigError(_naming(name, exc)) from None


class Path(Spec):
    """A non-empty str, bytes or os.PathLike without NUL bytes."""

    def _check(self, name: str, value: object) -> None:
        if not isinstance(value, (str, bytes, os.PathLike)):
            raise TypeError(f"{name} must be a path (str, bytes or os.PathLike), not {_type_name(value)}")
        try:
            p = os.fspath(value)
        except TypeError as exc:  # __fspath__ returned something else
            raise TypeError(_naming(name, exc)) from None
        if not p:
            raise ConfigError(f"{name} must not be empty")
        if ("\0" if isinstance(p, str) else b"\0") in p:  # type: ignore[operator]
            raise ConfigError(f"{name} must not contain NUL bytes")


class Parsed(Spec):
    """Whatever ``parse`` accepts; its ValueError becomes a ConfigError, its
    TypeError a TypeError, each naming the option."""

    def __init__(self, parse: Callable[[Any], object]) -> None:
        self.parse = parse

    def check(self, name: str, value: object) -> None:
        try:
            self.parse(value)
        except TypeError as exc:
            raise TypeError(_naming(name, exc)) from None
        except ValueError as exc:
            raise ConfigError(_naming(name, exc)) from None


def _naming(name: str, exc: Exception) -> str:
    msg = str(exc)
    return msg if msg.startswith(name + " ") else f"{name}: {msg}"


def check_options(table: Mapping[str, Spec], values: Mapping[str, object]) -> None:
    """Checks ``values[name]`` against each ``table`` entry, in table order."""
    for name, spec in table.items():
        spec.check(name, values[name])
