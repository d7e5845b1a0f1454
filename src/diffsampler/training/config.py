"""The training config, assembled from its sections and the registered components' options.

Every key is a flat name (what `key=value` on the command line and every config.json use), defined
once, with its type, default, range and help: the generic keys by the section dataclasses of
`training/sections.py`, and the component options by the components themselves (a drift's in
nets/, an objective's in objectives/, a searcher's in search/: `components.option`). TrainConfig
is a dataclass of all of them, built at import from those definitions; `sections()` groups the
keys by section (the sectioned form config files may also use). Validation checks each key against
its own range, the component names against the registries, each component's options as a whole
(their own cross-field checks) and, here, only the rules that cross sections. Unknown keys and bad
values are errors that name the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, make_dataclass

from ..components import check_value, field_type, options_from
from ..errors import ConfigError
from ..nets import DRIFTS
from ..objectives import OBJECTIVES
from ..sde import GRID_KINDS
from ..search import SEARCHERS
from .config_files import parse_overrides, read_config_file
from .sections import SECTIONS

BEHAVIOURS = ("forward", "mixed", "backward")
COMPONENT_SECTIONS = {"network": DRIFTS, "objective": OBJECTIVES, "search": SEARCHERS}


@dataclass(frozen=True)
class KeySpec:
    """A flat config key: its section, the dataclass field that defines it (default, range, help),
    its type, and the components that own it (empty for a generic key)."""

    name: str
    section: str
    field: dataclasses.Field
    type: object
    components: tuple[str, ...] = ()


def _generic_keys() -> dict[str, KeySpec]:
    keys = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            keys[f.name] = KeySpec(f.name, section, f, field_type(cls, f))
    return keys


def _assemble() -> dict[str, KeySpec]:
    """Every key: the generic ones, then the registered components' options (a key that several
    components share, e.g. score_clip, must have one default and type)."""
    keys = _generic_keys()
    for section, registry in COMPONENT_SECTIONS.items():
        for alias, (f, cls, names) in registry.option_fields().items():
            typ = field_type(cls, f)
            if alias in keys:
                have = keys[alias]
                if have.field.default != f.default or have.type != typ or not have.components:
                    raise ValueError(f"config key {alias!r} is defined twice with different defaults or types")
                keys[alias] = dataclasses.replace(have, components=have.components + tuple(names))
            else:
                keys[alias] = KeySpec(alias, section, f, typ, tuple(names))
    return keys


KEYS: dict[str, KeySpec] = {"recipe": KeySpec("recipe", "recipe", dataclasses.field(default="custom"), str),
                            **_assemble()}


def _name_choices(cfg) -> dict[str, tuple]:
    return {"drift": tuple(DRIFTS), "objective": tuple(OBJECTIVES), "searcher": ("none", *SEARCHERS),
            "train_grid": GRID_KINDS, "eval_grid": GRID_KINDS}


class ConfigMethods:
    """Methods of TrainConfig (the dataclass of every key, assembled below)."""

    # -- validation --------------------------------------------------------------------------------
    def validate(self):
        for name, spec in KEYS.items():
            if name != "recipe":
                check_value(name, getattr(self, name), spec.field)
        for k, opts in _name_choices(self).items():
            if getattr(self, k) not in opts:
                raise ConfigError(f"config key {k!r} = {getattr(self, k)!r}: must be one of {list(opts)}")
        if self.objective_fwd is not None and self.objective_fwd not in OBJECTIVES:
            raise ConfigError(f"config key 'objective_fwd' = {self.objective_fwd!r}: must be None or one of "
                              f"{list(OBJECTIVES)}")
        self._validate_components()
        from ..streams import parse_logger_option
        parse_logger_option(self.logger)
        from .rules import check_cross_section_rules
        check_cross_section_rules(self)
        return self

    def _validate_components(self) -> None:
        """Every registered component's options as a whole (their own checks across their fields)."""
        flat = self.to_dict()
        for registry in COMPONENT_SECTIONS.values():
            for name in registry:
                try:
                    options_from(registry.options_class(name), flat)
                except (ValueError, TypeError) as e:
                    raise ConfigError(str(e)) from None

    def options(self, kind: str, name: str | None = None):
        """The options object of a component: kind 'network' (the drift), 'objective', 'objective_fwd'
        or 'search' (the searcher); `name` overrides the configured one."""
        registry = {"network": DRIFTS, "objective": OBJECTIVES, "objective_fwd": OBJECTIVES, "search": SEARCHERS}[kind]
        default = {"network": self.drift, "objective": self.objective, "search": self.searcher,
                   "objective_fwd": self.objective_fwd or self.objective}[kind]
        return options_from(registry.options_class(name or default), self.to_dict())

    # -- rounds ------------------------------------------------------------------------------------
    def round_lengths(self) -> list[int]:
        """Iterations of each round: round_iterations read as integers, else ceil(iterations / rounds)
        each (the last round then ends at `iterations`)."""
        if self.round_iterations is not None:
            return [int(v) for v in self.round_iterations.split(",")]
        return [max(1, -(-self.iterations // self.rounds))] * self.rounds

    def round_starts(self) -> list[int]:
        """The first iteration of each round (`rounds` increasing integers, the first 0)."""
        lengths = self.round_lengths()
        return [sum(lengths[:r]) for r in range(self.rounds)]

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict):
        """Build from keys (flat, or sectioned); a 'recipe' key applies its bundle first, then the
        other keys. iterations=None is sized to max_energy_calls (training/budget.py)."""
        d = flatten_sections(d)
        if d.get("recipe") not in (None, "custom"):
            from .recipes import recipe
            d = {**recipe(d["recipe"]), **d}
        cfg = cls()
        for k, v in coerce_keys(d).items():
            setattr(cfg, k, v)
        if cfg.recipe is None:
            cfg.recipe = "custom"
        if cfg.iterations is None:
            from .budget import size_iterations
            cfg.iterations = size_iterations(cfg, pilot=cfg.pilot == "on")
        return cfg.validate()

    def replace(self, **overrides):
        base = self.to_dict()
        if overrides.get("recipe") not in (None, "custom", base["recipe"]):
            from .recipes import recipe
            base = {**base, **recipe(overrides["recipe"])}
        return type(self).from_dict({**base, **overrides, "recipe": overrides.get("recipe", base["recipe"])})

    def to_dict(self) -> dict:
        """The flat keys (what config.json holds)."""
        return {k: getattr(self, k) for k in KEYS}

    def sections(self) -> dict:
        """The keys grouped by section: {"recipe": ..., "network": {...}, "objective": {...}, ...}."""
        out: dict = {"recipe": self.recipe}
        for name, spec in KEYS.items():
            if name != "recipe":
                out.setdefault(spec.section, {})[name] = getattr(self, name)
        return out


TrainConfig = make_dataclass(
    "TrainConfig", [(k, s.type, dataclasses.field(default=s.field.default)) for k, s in KEYS.items()],
    bases=(ConfigMethods,), namespace={"__doc__": "Everything that defines a training run, one attribute per flat "
                                                  "key (docs/CONFIG.md); `sections()` groups them.",
                                       "__module__": __name__})


def flatten_sections(d: dict) -> dict:
    """Sectioned keys ({"network": {"width": 64}, ...}) merged into flat ones; flat keys pass."""
    out = {}
    for k, v in d.items():
        if k in SECTIONS and isinstance(v, dict):
            out.update(v)
        else:
            out[k] = v
    return out


def coerce_keys(d: dict) -> dict:
    """Each key checked and typed on its own (no checks across keys, which need the full config):
    an unknown key fails naming close matches; a value that cannot be read as its key's type fails."""
    for k in d:
        if k not in KEYS:
            close = difflib.get_close_matches(k, sorted(KEYS), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {k!r}{hint}")
    return {k: _coerce(k, v, KEYS[k].type) for k, v in d.items()}


def _coerce(key: str, value, typ):
    """Convert a value (possibly a string from the command line) to the key's type."""
    args = typing.get_args(typ)
    optional = (typing.get_origin(typ) in (typing.Union, types.UnionType)) and type(None) in args
    base = next((a for a in args if a is not type(None)), typ) if optional else typ
    if key == "recipe" and value is None:
        return None
    if value is None and not optional:
        raise ConfigError(f"config key {key!r} may not be None")
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))):
        return None
    try:
        return _read_as(base, value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r}: cannot read {value!r} as {base.__name__}") from None


def _read_as(base: type, value):
    if base is bool:
        if isinstance(value, str):
            v = value.strip().lower()
            if v in ("1", "true", "yes", "on"):
                return True
            if v in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return bool(value)
    if isinstance(value, bool) and base in (int, float):
        raise ValueError
    if base is int:
        f = float(value)
        if not f.is_integer():
            raise ValueError
        return int(f)
    if base is float:
        return float(value)
    if base is str and not isinstance(value, str):
        raise ValueError
    return value


__all__ = ["TrainConfig", "KEYS", "KeySpec", "coerce_keys", "flatten_sections", "parse_overrides", "read_config_file",
           "BEHAVIOURS"]
