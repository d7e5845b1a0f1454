"""Config keys from the command line (`key=value`) and from files (JSON or YAML; a preset or a run's
own config.json), flat or sectioned."""
from __future__ import annotations

import json

from ..errors import ConfigError


def parse_overrides(items: list[str]) -> dict:
    """['key=value', ...] -> {key: value-string}; the types are applied by `from_dict`."""
    out = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"expected key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def read_config_file(path: str, target_name: str) -> dict:
    """Config keys from a JSON object (or a YAML mapping, for a path ending in .yaml/.yml; needs
    PyYAML), flat or sectioned ({"network": {"width": 256}, ...}): a preset
    (experiments/configs/*.json) or a run's own config.json, so that a run can
    be repeated (on another device: add device=cuda). The keys act as overrides of the target's
    default config, and command-line overrides act on top of them. A 'target' key (run directories
    write one) must name `target_name`: a config tuned for one target is not silently reused on another.
    A `stages` list (a run in stages, `training.stages`) comes back as d["stages"]: [Stage]."""
    from .config import coerce_keys, flatten_sections

    is_yaml = path.lower().endswith((".yaml", ".yml"))
    kind = "YAML" if is_yaml else "JSON"
    try:
        with open(path) as fh:
            if is_yaml:
                try:
                    import yaml
                except ImportError:
                    raise ConfigError(f"config file {path!r} is YAML, which needs PyYAML (pip install pyyaml); "
                                      "or write it as JSON") from None
                try:
                    d = yaml.safe_load(fh)
                except yaml.YAMLError as e:
                    raise ConfigError(f"config file {path!r} is not valid YAML ({e})") from None
            else:
                d = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path!r} is not valid {kind} ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path!r} must hold a {kind} {'mapping' if is_yaml else 'object'} of "
                          f"config keys, got {type(d).__name__}")
    stages = d.pop("stages", None)
    d = flatten_sections(d)
    written_for = d.pop("target", None)
    if written_for is not None and written_for != target_name:
        raise ConfigError(f"config file {path!r} was written for target {written_for!r}, not {target_name!r}; "
                          "remove its 'target' key to use it anyway")
    coerce_keys(d)   # unknown keys and unreadable values fail here, naming the file's key
    if stages is not None:   # a run in stages (training.stages): each stage's keys checked alike
        from .stages import read_stages
        d["stages"] = read_stages(stages, f"config file {path!r}")
    return d


__all__ = ["parse_overrides", "read_config_file"]
