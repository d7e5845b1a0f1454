"""Registries of components (objectives, searchers, drifts, integrators) and the options they own.

A component is registered under a name together with its options: a dataclass whose fields carry
their default, type, range and help (`option(...)`), and the flat config key each one answers to
on the command line (its alias, e.g. `adjoint_times` for adjoint matching's `times`). The training
config is assembled from these registries (`training/config.py`), the config documentation is
generated from them (`docs/gen_config_doc.py`), and a new component is one module that registers
itself, with nothing else to edit:

    @dataclass
    class MyOptions:
        times: int = option(4, "bridge times per sample", alias="my_times", low=1)

    @OBJECTIVES.register("mine", MyOptions)
    class Mine(Objective): ...

`options_from(cls, flat)` builds an options object from flat config values (aliases), checking
each value's range with a message that names the flat key.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import pkgutil
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields

from .errors import ConfigError


@dataclass
class NoOptions:
    """The options of a component that has none."""


def option(default, help: str, *, alias: str | None = None, low: float | None = None,
           high: float | None = None, low_open: bool = False, high_open: bool = False, choices: tuple | None = None):
    """A dataclass field with the metadata of a config option: its help, the flat config key it
    answers to (`alias`, default: the field name), its range [low, high] (`low_open` / `high_open`:
    that end excluded) or its choices."""
    meta = {"help": help, "alias": alias, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


def alias_of(f: dataclasses.Field) -> str:
    """The flat config key a field answers to: its alias, else its name."""
    return f.metadata.get("alias") or f.name


def check_value(key: str, value, f: dataclasses.Field) -> None:
    """Raise ConfigError naming `key` when `value` is outside field f's range or choices."""
    meta = f.metadata
    if value is None:
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ConfigError(f"config key {key!r} = {value!r}: must be one of {list(meta['choices'])}")
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value) and (low is not None or high is not None):
            raise ConfigError(f"config key {key!r} = {value!r}: must be a finite number")
        if low is not None and (value < low or (meta.get("low_open") and value == low)):
            raise ConfigError(f"config key {key!r} = {value!r}: must be {'>' if meta.get('low_open') else '>='} {low}")
        if high is not None and (value > high or (meta.get("high_open") and value == high)):
            raise ConfigError(f"config key {key!r} = {value!r}: must be {'<' if meta.get('high_open') else '<='} {high}")


def options_from(cls: type, flat: dict):
    """An options object of dataclass `cls` from flat config values (by alias; missing keys take
    their defaults), every value checked against its field's range."""
    kwargs = {}
    for f in fields(cls):
        key = alias_of(f)
        if key in flat:
            check_value(key, flat[key], f)
            kwargs[f.name] = flat[key]
    return cls(**kwargs)


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The dataclass fields of an options class, in order."""
    return list(fields(cls))


def field_type(cls: type, f: dataclasses.Field):
    """The evaluated type annotation of field `f` of dataclass `cls`."""
    return typing.get_type_hints(cls)[f.name]


@dataclass
class Entry:
    """A registered component: its name, factory (a class or function taking the options object),
    options dataclass, and traits (what it declares about itself without being built, e.g. a
    drift's needs_score)."""

    name: str
    factory: Callable
    options: type
    traits: dict = dataclasses.field(default_factory=dict)


class Registry:
    """Components of one kind by name (see module)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, options: type = NoOptions, **traits) -> Callable:
        """Decorator: register the decorated class or function under `name` with `options` (and
        traits, declarations readable without building it)."""
        def deco(factory):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, options, dict(traits))
            return factory
        return deco

    def add(self, name: str, factory: Callable, options: type = NoOptions, **traits) -> None:
        """Register `factory` under `name` (the function form of `register`)."""
        self.register(name, options, **traits)(factory)

    def trait(self, name: str, key: str, default=None):
        """A declared trait of component `name`."""
        return self.entry(name).traits.get(key, default)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self.names(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})")
        return self._entries[name]

    def options_class(self, name: str) -> type:
        return self.entry(name).options

    def build(self, name: str, flat: dict | None = None, **fixed):
        """The component `name`, with its options read from flat config values (`options_from`)
        and any further fixed constructor arguments."""
        e = self.entry(name)
        opts = options_from(e.options, flat or {})
        return e.factory(opts, **fixed) if e.options is not NoOptions else e.factory(**fixed)

    def option_fields(self) -> dict[str, tuple[dataclasses.Field, type, list[str]]]:
        """Every flat key the registered components answer to: {alias: (field, options class,
        [component names])}; components that share an alias must agree on its default and type."""
        out: dict[str, tuple[dataclasses.Field, type, list[str]]] = {}
        for e in self._entries.values():
            for f in fields(e.options):
                key = alias_of(f)
                if key in out:
                    g, cls, names = out[key]
                    if g.default != f.default or field_type(cls, g) != field_type(e.options, f):
                        raise ValueError(f"{self.kind} option {key!r}: {e.name!r} and {names} disagree on its "
                                         "default or type")
                    names.append(e.name)
                else:
                    out[key] = (f, e.options, [e.name])
        return out


def discover(package: str, path) -> None:
    """Import every module of a package (its __name__ and __path__), so that each component module
    registers itself: adding a component is adding its file."""
    for info in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{info.name}")


__all__ = ["discover", "Registry", "Entry", "NoOptions", "option", "options_from", "option_fields", "alias_of", "check_value",
           "field_type"]
