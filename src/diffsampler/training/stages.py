"""A run in stages: one command trains a sequence of runs, each started from the one before.

A preset whose result came from a chain of fine-tunes (a long first training, then shorter ones with
other objectives or grids) is written as a config file with a `stages` list:

    {"drift": "egnn_langevin", ...,                       <- keys every stage shares
     "stages": [{"name": "jeffreys", "recipe": "sgds_jeffreys", "max_seconds": 5000},
                {"name": "kl20", "recipe": "pis", "train_steps": 20, "iterations": 1500}, ...]}

`diffsampler train dw4 --config FILE --out DIR` then trains stage k in DIR/kk-NAME with
`init_from` = the stage before it (a stage may name its own `init_from`, e.g. to branch; one on the
command line is the first stage's, to continue another run), so each
stage's report carries the cumulative energy calls and training seconds of the whole chain
(`lineage`, see `finetune`). Keys apply in the order: the target's defaults, the shared keys, the
stage's keys, the command line's `key=value` (on every stage; `--max-seconds` is per stage). `--resume` skips the stages that
have a report and resumes the one that was interrupted. DIR/stages.json lists each stage's own and
cumulative figures.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..distributed.context import env_world
from ..errors import ConfigError
from ..targets import Target, get
from .checkpoint import CHECKPOINT, write_json
from .run import load_run, train
from .run_dir import prepare_run_dir

STAGES_FILE = "stages.json"
ROW_KEYS = ("eubo_minus_elbo", "elbo", "eubo", "ess", "w2", "iterations", "train_seconds", "stop_reason")


@dataclass(frozen=True)
class Stage:
    """One run of the chain: its name (the directory's suffix) and its config keys."""

    name: str
    keys: dict


def read_stages(entries, source: str) -> list[Stage]:
    """`stages` of a config file (a list of objects of config keys, each with an optional `name`)
    -> [Stage]; every key is checked like any config key (an unknown key fails naming the stage)."""
    from .config import coerce_keys, flatten_sections

    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: 'stages' must be a non-empty list of objects of config keys")
    out, names = [], set()
    for i, e in enumerate(entries, 1):
        if not isinstance(e, dict):
            raise ConfigError(f"{source}: stage {i} must be an object of config keys, got {type(e).__name__}")
        keys = flatten_sections(dict(e))
        name = str(keys.pop("name", f"stage{i}"))
        if not name or any(c in name for c in "/\\") or name in names:
            raise ConfigError(f"{source}: stage {i} has the name {name!r}: names must be unique, without slashes")
        names.add(name)
        try:
            coerce_keys(keys)
        except ConfigError as err:
            raise ConfigError(f"{source}: stage {i} ({name}): {err}") from None
        out.append(Stage(name, keys))
    return out


def stage_dirs(out: str, stages: list[Stage]) -> list[str]:
    return [os.path.join(out, f"{i:02d}-{s.name}") for i, s in enumerate(stages, 1)]


def _open_out(out: str, resume: bool) -> None:
    """The chain's directory: an existing one to resume, else a new or empty one (`prepare_run_dir`)."""
    if not resume:
        prepare_run_dir(out, resume=False)
    elif not os.path.isdir(out):
        raise ConfigError(f"cannot resume: the staged run's directory {out} does not exist")


def train_stages(target: str | Target, stages: list[Stage], *, out: str, resume: bool = False,
                 progress: bool = True, shared: dict | None = None, **overrides):
    """Train `stages` one after another in out/kk-NAME (see module); returns the last stage's `Run`.

    shared: keys of every stage (below the stage's own); overrides: keys above them (command line),
    except `init_from`, which the first stage alone takes (the chain continues another run)."""
    target = get(target)
    main = env_world()[1] == 0   # under torchrun, rank 0 alone checks and writes the directory
    if main:
        _open_out(out, resume)
    first_from = overrides.pop("init_from", None)   # the chain itself may start from another run
    dirs, prev, run, rows = stage_dirs(out, stages), first_from, None, []
    for stage, d in zip(stages, dirs):
        keys = {**(shared or {}), **stage.keys, **overrides}
        if prev is not None:
            keys.setdefault("init_from", prev)
        if os.path.exists(os.path.join(d, "report.json")):       # finished before an interruption
            run, report = None, json.load(open(os.path.join(d, "report.json")))
        else:
            again = resume and os.path.exists(os.path.join(d, CHECKPOINT))
            run = train(target, out=d, resume=again, progress=progress, **keys)
            report = run.report
        rows.append(stage_row(stage.name, d, report))
        if main:
            write_json(os.path.join(out, STAGES_FILE), {"target": target.name, "stages": rows})
        prev = d
    return run or load_run(prev, target=target)


def staged_dirs(path: str) -> list[str] | None:
    """The stage directories of a staged run's directory (one with stages.json and no config.json of its
    own), in order; None for any other path."""
    index = os.path.join(path, STAGES_FILE)
    if os.path.exists(os.path.join(path, "config.json")) or not os.path.exists(index):
        return None
    return [r["dir"] if os.path.isabs(r["dir"]) else os.path.join(path, os.path.basename(r["dir"]))
            for r in json.load(open(index))["stages"]]


def last_stage(path: str) -> str:
    """`path` itself, or for a staged run's directory its last finished stage (what eval and sample use)."""
    dirs = staged_dirs(path)
    return dirs[-1] if dirs else path


def stage_row(name: str, d: str, rep: dict) -> dict:
    """One line of stages.json: the stage's own calls and figures, and the chain's totals so far."""
    calls = rep.get("energy_calls") or {}
    own = int(calls.get("search", 0)) + int(calls.get("train", 0))
    lineage = rep.get("lineage") or {}
    return {"stage": name, "dir": d, "energy_calls": own,
            "energy_calls_total": lineage.get("energy_calls_total", own),
            "train_seconds_total": lineage.get("train_seconds_total", rep.get("train_seconds")),
            **{k: rep.get(k) for k in ROW_KEYS}}


def stages_table(out: str) -> str:
    """stages.json as a plain-text table: per stage, its calls, the chain's calls, time and gap."""
    rows = json.load(open(os.path.join(out, STAGES_FILE)))["stages"]
    head = f"{'stage':<16} {'iterations':>10} {'calls':>12} {'calls (chain)':>14} {'s (chain)':>10} {'EUBO-ELBO':>10}"

    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['stage']:<16} {fmt(r['iterations'], '>10')} {r['energy_calls']:>12,} "
                     f"{r['energy_calls_total']:>14,} {fmt(r['train_seconds_total'], '>10.0f')} "
                     f"{fmt(r['eubo_minus_elbo'], '>10.3f')}")
    return "\n".join(lines)


__all__ = ["Stage", "read_stages", "train_stages", "stage_dirs", "staged_dirs", "last_stage", "stages_table",
           "STAGES_FILE"]
