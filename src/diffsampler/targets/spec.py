"""Targets named by a spec string: a registry name, a user energy in a Python file
(``FILE.py:NAME``) or in an importable module (``package.module:NAME``), plus target options.

    diffsampler train path/to/file.py:energy_fn dim=2 [log_Z=...] [reference=samples.npy] [sigma=...] [name=...]
    diffsampler train mypkg.energies:banana dim=2

Target options (`TARGET_OPTIONS`): `dim` (required for a user energy), `log_Z` (exact log normaliser,
if known), `reference` (an (N, dim) `.npy` array of exact or reference samples, or an `.npz` with an
array `x` as `diffsampler sample` writes; used for EUBO, W2 and MMD, never for training), `sigma` (the
target's own reference-process scale: the pinned Brownian motion ends at N(0, sigma^2 I); the
config's `sigma` key, None by default, defers to it) and `name` (the run's target name; default the
function's name). On the command line they are told apart from config overrides by their key: when
the spec is a user energy, `dim`, `log_Z`, `reference`, `sigma` and `name` belong to the target;
every other key=value is a config key. A registry target refuses them (it carries its own), except
`sigma`, which stays the config's reference scale (the same meaning).

At load the energy is called once on a (3, dim) batch drawn from N(0, sigma^2 I) with its own RNG
(the global seed is untouched), directly and not through the target's counted path, so these 3
calls appear in no energy-call count: a check that it returns one differentiable torch value per row.

A run trained on a user energy records it in `RUN/target_spec.json` (`record_spec`): the spec as
typed, the resolved absolute path (or module name and its source file), the function name, the
complete target options and the SHA-256 of the file's content (of the reference file too). `load_run`,
`diffsampler eval|sample RUN` and `train --resume` rebuild the target from it (`run_target`,
`train_target`) and refuse, naming the path and what changed, a file that moved or whose content
changed; `allow_changed=True` (`--allow-changed-energy`) uses the changed file anyway, with a warning,
and `train --resume` then records the change under `history`. Only the named file is fingerprinted,
not what it imports.

Extension point: `register_loader(suffix, loader)` makes ``FILE<suffix>[:NAME]`` build a target with
`loader(path, name, options) -> Target`; `.py` is the Python loader, `.pdb` a molecule under amber14
(`targets/molecule_file.py`: ``FILE.pdb[:obc2|vacuum]``), and `.xml` (a serialised OpenMM System, which
has no topology) is refused with the way to give it instead.
"""
from __future__ import annotations

import copy
import datetime
import difflib
import hashlib
import importlib
import importlib.util
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..errors import EnergyChangedError, NonFiniteError, ShapeError, TargetSpecError
from .base import Target
from .custom import EnergyFunctionTarget

SPEC_FILE = "target_spec.json"
SPEC_FORMAT = 1
TARGET_OPTIONS = ("dim", "log_Z", "reference", "sigma", "name")
TEST_BATCH = 3
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_NAME = re.compile(r"[\w.+-]+")

FileLoader = Callable[[Path, "str | None", dict], Target]


# -- parsing -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParsedSpec:
    """A spec string taken apart: kind 'registry' | 'file' | 'module', where, and the function."""

    kind: str
    location: str
    function: str | None = None


def parse_spec(text: str) -> ParsedSpec:
    """Tell a registry name, ``FILE[:NAME]`` (a suffix with a loader, or a path with a slash) and
    ``package.module:NAME`` apart. Does not touch the file system."""
    t = str(text).strip()
    head, sep, tail = t.rpartition(":")
    if not sep:
        if Path(t).suffix.lower() in LOADERS or "/" in t or os.sep in t:
            return ParsedSpec("file", t)
        return ParsedSpec("registry", t)
    if not tail or not _DOTTED.fullmatch(tail):
        raise TargetSpecError(f"target spec {t!r}: {tail!r} is not a function name (expected FILE.py:NAME or "
                              "package.module:NAME)")
    if Path(head).suffix.lower() in LOADERS or "/" in head or os.sep in head:
        return ParsedSpec("file", head, tail)
    if _DOTTED.fullmatch(head):
        return ParsedSpec("module", head, tail)
    raise TargetSpecError(f"cannot read target spec {t!r}: expected a registry name, FILE.py:NAME or "
                          "package.module:NAME")


def is_user_spec(text: str) -> bool:
    """Whether `text` names a user energy (a file or a module) rather than a registry target."""
    return parse_spec(text).kind != "registry"


def split_target_options(text: str, overrides: dict) -> tuple[dict, dict]:
    """Split command-line key=value pairs into (target options, config overrides). For a user energy
    the keys in TARGET_OPTIONS go to the target; a registry target refuses them, except `sigma`,
    which is then the config's reference scale."""
    user = is_user_spec(text)
    mine = {k: v for k, v in overrides.items() if k in TARGET_OPTIONS and (user or k != "sigma")}
    if mine and not user:
        raise TargetSpecError(f"{', '.join(f'{k}=' for k in mine)}: target options are for user energies "
                              f"(FILE.py:NAME or package.module:NAME); {text!r} is a registry target, which has "
                              "its own dimension, log Z and reference samples")
    return mine, {k: v for k, v in overrides.items() if k not in mine}


# -- options -----------------------------------------------------------------------------------------
def _positive_int(key: str, v) -> int:
    try:
        f = float(v)
        if isinstance(v, bool) or not f.is_integer() or f < 1:
            raise ValueError
        return int(f)
    except (TypeError, ValueError):
        raise TargetSpecError(f"target option {key}={v!r}: expected a positive integer") from None


def _finite_float(key: str, v, positive: bool = False) -> float:
    try:
        f = float(v)
        if isinstance(v, bool) or not math.isfinite(f) or (positive and f <= 0):
            raise ValueError
        return f
    except (TypeError, ValueError):
        kind = "a finite number > 0" if positive else "a finite number"
        raise TargetSpecError(f"target option {key}={v!r}: expected {kind}") from None


def coerce_options(options: dict | None) -> dict:
    """The given target options with their types (strings from the command line are read); the
    reference path made absolute. Unknown keys are refused. Keys not given stay absent."""
    out = {}
    for k, v in (options or {}).items():
        if k not in TARGET_OPTIONS:
            close = difflib.get_close_matches(k, TARGET_OPTIONS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise TargetSpecError(f"unknown target option {k!r}{hint}; target options: {', '.join(TARGET_OPTIONS)}")
        none = v is None or (isinstance(v, str) and v.strip().lower() in ("none", "null", ""))
        if k == "dim":
            out[k] = None if none else _positive_int(k, v)
        elif k in ("log_Z", "sigma"):
            out[k] = None if none else _finite_float(k, v, positive=(k == "sigma"))
        elif k == "reference":
            out[k] = None if none else str(Path(str(v)).expanduser().resolve())
        else:
            if none or not _NAME.fullmatch(str(v)):
                raise TargetSpecError(f"target option name={v!r}: use letters, digits and . _ + - only")
            out[k] = str(v)
    return out


def complete_options(options: dict | None, function: str | None) -> dict:
    """Every target option, with defaults: sigma 1, name = the function's name."""
    o = coerce_options(options)
    default_name = (function or "custom").split(".")[-1]
    return {"dim": o.get("dim"), "log_Z": o.get("log_Z"), "reference": o.get("reference"),
            "sigma": 1.0 if o.get("sigma") is None else o["sigma"], "name": o.get("name") or default_name}


# -- loading a user energy ---------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's content (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _exec_python_file(path: Path):
    """Import a Python file as a module named after its content's hash (so a changed file is a new
    module); its directory goes on sys.path first, as when Python runs a script there."""
    name = f"diffsampler_user_{file_sha256(path)[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise TargetSpecError(f"{path}: syntax error at line {e.lineno}: {e.msg}") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code may raise anything
        del sys.modules[name]
        raise TargetSpecError(f"importing {path} raised {type(e).__name__}: {e}") from None
    return module


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise TargetSpecError(f"cannot import module {name!r} ({e}); make it importable (install it, or add its "
                              "folder to PYTHONPATH), or name a file: path/to/file.py:NAME") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise TargetSpecError(f"importing module {name!r} raised {type(e).__name__}: {e}") from None


def _attribute(module, dotted: str, where: str):
    """module.a.b for dotted = 'a.b', as a callable; errors name what exists."""
    obj = module
    for part in dotted.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
            close = difflib.get_close_matches(dotted, names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else (
                f" Callables there: {', '.join(sorted(names)[:12])}" if names else "")
            raise TargetSpecError(f"no function {dotted!r} in {where}.{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetSpecError(f"{where}:{dotted} is not callable (its type is {type(obj).__name__}); name a function "
                              "E(x) taking a (B, dim) tensor and returning (B,) energies")
    return obj


def check_energy(fn: Callable, dim: int, sigma: float, label: str) -> None:
    """Call fn once on a (3, dim) batch from N(0, sigma^2 I) (own generator, uncounted) and check
    that it returns a floating (3,) torch tensor that depends differentiably on x."""
    gen = torch.Generator().manual_seed(0)
    x = (sigma * torch.randn(TEST_BATCH, dim, generator=gen)).to(torch.get_default_dtype()).requires_grad_(True)
    shape = f"({TEST_BATCH}, {dim})"
    try:
        e = fn(x)
    except Exception as err:  # noqa: BLE001
        raise TargetSpecError(f"{label}: calling it on a test batch of shape {shape} raised {type(err).__name__}: "
                              f"{err} (is dim={dim} right?)") from None
    if not isinstance(e, torch.Tensor):
        hint = " (compute it with torch operations, not numpy, so its gradient can be taken)" if isinstance(
            e, np.ndarray) else ""
        raise TargetSpecError(f"{label} must return a torch.Tensor of shape ({TEST_BATCH},) for x of shape {shape}, "
                              f"got {type(e).__name__}{hint}")
    if tuple(e.shape) != (TEST_BATCH,):
        hint = " (end it with .sum(-1) or .squeeze(-1)?)" if e.dim() == 2 and e.shape[0] == TEST_BATCH else ""
        raise ShapeError(f"{label} must return one energy per row: shape ({TEST_BATCH},) for x of shape {shape}, "
                         f"got {tuple(e.shape)}{hint}")
    if not e.dtype.is_floating_point:
        raise TargetSpecError(f"{label} must return floating-point energies, got dtype {e.dtype}")
    if not e.requires_grad:
        raise TargetSpecError(f"{label}: the energy does not depend differentiably on x (the sampler needs its "
                              "gradient by autograd: use torch operations, no numpy, .item() or .detach())")


def read_reference(path: str, dim: int) -> np.ndarray:
    """Reference samples: an (N, dim) .npy array, or an .npz holding one as 'x'."""
    expect = f"a .npy array of shape (N, {dim}) or an .npz with an array 'x' (what `diffsampler sample` writes)"
    if not os.path.isfile(path):
        raise TargetSpecError(f"reference samples file {path} not found (expected {expect})")
    try:
        a = np.load(path, allow_pickle=False)
        if isinstance(a, np.lib.npyio.NpzFile):
            with a:
                if "x" not in a.files:
                    raise ValueError(f"no array 'x' in it (arrays: {', '.join(a.files)})")
                a = a["x"]
    except Exception as e:  # noqa: BLE001
        raise TargetSpecError(f"cannot read reference samples {path} ({e}); expected {expect}") from None
    if a.ndim != 2 or a.shape[1] != dim or a.shape[0] < 1:
        raise ShapeError(f"reference samples {path}: expected shape (N, {dim}), got {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ShapeError(f"reference samples {path}: expected numbers, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise NonFiniteError(f"reference samples {path} contain NaN or inf")
    return a


def function_target(fn: Callable, label: str, options: dict) -> EnergyFunctionTarget:
    """An EnergyFunctionTarget from a callable and complete options, checked on a test batch."""
    dim = options.get("dim")
    if dim is None:
        raise TargetSpecError(f"{label}: a user energy needs its dimension: add dim=D "
                              f"(e.g. diffsampler train {label} dim=2)")
    check_energy(fn, dim, options["sigma"], label)
    samples = read_reference(options["reference"], dim) if options.get("reference") else None
    return EnergyFunctionTarget(fn, dim, log_Z=options.get("log_Z"), samples=samples, name=options["name"],
                                sigma=options["sigma"])


def _python_file_target(path: Path, function: str | None, options: dict) -> Target:
    if not function:
        raise TargetSpecError(f"{path}: name the energy function in it: {path}:NAME")
    fn = _attribute(_exec_python_file(path), function, str(path))
    return function_target(fn, f"{path}:{function}", options)


def _openmm_system(path: Path, function: str | None, options: dict) -> Target:
    raise TargetSpecError(f"{path}: serialised OpenMM System files are not read (they carry no topology); give "
                          "the molecule as a PDB file (FILE.pdb[:obc2|vacuum], amber14), or build an OpenMMTarget "
                          "in Python and name it as pkg.module:NAME")


def _pdb_molecule(path: Path, function: str | None, options: dict) -> Target:
    from .molecule_file import pdb_molecule_target   # OpenMM is optional: imported on use
    return pdb_molecule_target(path, function, options)


LOADERS: dict[str, FileLoader] = {".py": _python_file_target, ".xml": _openmm_system, ".pdb": _pdb_molecule}


def register_loader(suffix: str, loader: FileLoader) -> None:
    """Make ``FILE<suffix>[:NAME]`` specs build targets with `loader(path, name, options) -> Target`
    (options: the complete target options; the loader may ignore `dim` when the file defines it).
    The file's SHA-256 is recorded and checked as for Python files."""
    LOADERS[suffix.lower() if suffix.startswith(".") else f".{suffix.lower()}"] = loader


# -- building and recording --------------------------------------------------------------------------
@dataclass
class TargetSpec:
    """What `target_spec.json` holds: enough to rebuild a user energy and to notice that it changed."""

    text: str                      # the spec as given, e.g. "energies/banana.py:energy"
    kind: str                      # "file" | "module"
    location: str                  # absolute file path, or the module's name
    function: str | None           # the callable's (dotted) name in it
    source: str                    # absolute path of the file whose content is fingerprinted
    sha256: str                    # SHA-256 of that file's content
    options: dict                  # complete target options (dim, log_Z, reference, sigma, name)
    reference_sha256: str | None = None
    history: list[dict] = field(default_factory=list)   # accepted moves and changes, oldest first
    format: int = SPEC_FORMAT

    @classmethod
    def from_dict(cls, d: dict) -> TargetSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _module_source(name: str) -> Path:
    """The source file of an importable module, found without running it where possible."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError) as e:
        found, err = None, e
    else:
        err = None
    if found is None:
        reason = f" ({err})" if err else ""
        raise TargetSpecError(f"cannot import module {name!r}{reason}; make it importable (install it, or add its "
                              "folder to PYTHONPATH), or name a file: path/to/file.py:NAME")
    if not found.origin or not found.origin.endswith(".py") or not os.path.isfile(found.origin):
        raise TargetSpecError(f"module {name!r} has no Python source file to fingerprint ({found.origin})")
    return Path(found.origin).resolve()


def _build(kind: str, location: str, function: str | None, options: dict) -> tuple[Target, Path]:
    """(target, the fingerprinted source file) for a file or module spec and complete options."""
    if kind == "module":
        source = _module_source(location)
        fn = _attribute(_import_module(location), function, f"module {location}")
        return function_target(fn, f"{location}:{function}", options), source
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        shown = location if str(path) == location else f"{location} (= {path})"
        raise TargetSpecError(f"energy file {shown} not found")
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise TargetSpecError(f"{path}: no loader for files ending in {path.suffix!r} (known: {', '.join(LOADERS)})")
    return loader(path, function, options), path


def resolve_target(spec: str | Target, options: dict | None = None) -> Target:
    """A target from a spec: a registry name (`targets.get`), ``FILE.py:NAME`` or ``package.module:NAME``
    with target options (see the module docstring). A user energy's target carries its `TargetSpec`
    as `target.spec_record`, which `record_spec` writes into a run directory."""
    from . import get

    if isinstance(spec, Target):
        return spec
    parsed = parse_spec(spec)
    if parsed.kind == "registry":
        if options:
            split_target_options(spec, dict(options))   # raises, naming the options
        return get(spec)
    opts = complete_options(options, parsed.function)
    target, source = _build(parsed.kind, parsed.location, parsed.function, opts)
    location = str(Path(parsed.location).expanduser().resolve()) if parsed.kind == "file" else parsed.location
    target.spec_record = TargetSpec(
        text=str(spec).strip(), kind=parsed.kind, location=location, function=parsed.function, source=str(source),
        sha256=file_sha256(source), options=opts,
        reference_sha256=file_sha256(opts["reference"]) if opts.get("reference") else None)
    return target


def record_spec(run_dir: str, target: Target) -> str | None:
    """Write RUN/target_spec.json for a target built from a user-energy spec (atomically); nothing
    for other targets. Returns the path written, or None."""
    rec = getattr(target, "spec_record", None)
    if rec is None or not run_dir:
        return None
    path = os.path.join(run_dir, SPEC_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(asdict(rec), f, indent=1)
    os.replace(tmp, path)
    return path


def load_spec(run_dir: str) -> TargetSpec | None:
    """The run's recorded user-energy spec, or None when the run's target is a registry target."""
    path = os.path.join(run_dir, SPEC_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return TargetSpec.from_dict(json.load(f))
    except (OSError, ValueError, TypeError) as e:
        raise TargetSpecError(f"{path} is not a readable target spec record ({e})") from None


# -- rebuilding a run's target -----------------------------------------------------------------------
MOVED_HINT = ("put it back at that path, or name its new place: `diffsampler eval|sample {run} --energy-file NEW.py` "
              "or `diffsampler train NEW.py:{fn} --out {run} --resume`")


def _accept_change(rec: TargetSpec, event: dict, message: str, allow_changed: bool) -> None:
    """Refuse a change (EnergyChangedError) unless allowed; an allowed one is warned about and
    entered in the record's history."""
    if not allow_changed:
        raise EnergyChangedError(f"{message}; restore the original, train a new run, or pass --allow-changed-energy "
                                 "(in Python: run_target(RUN, allow_changed=True)) to use it with this run anyway")
    warnings.warn(f"{message}; using it anyway (--allow-changed-energy)", stacklevel=3)
    rec.history.append({**event, "accepted": datetime.datetime.now().isoformat(timespec="seconds")})


def _check_source(rec: TargetSpec, energy_file: str | None, where: str, allow_changed: bool) -> None:
    """Find the recorded energy (or its new place) and compare its content with the record."""
    if rec.kind == "module":
        source = str(_module_source(rec.location))
    else:
        source = str(Path(energy_file).expanduser().resolve()) if energy_file else rec.location
        if not os.path.isfile(source):
            what = f"the energy file {source} (--energy-file)" if energy_file else (
                f"the energy file {rec.location} (recorded in {where})")
            raise EnergyChangedError(f"{what} is not there: it was moved or deleted; "
                                     + MOVED_HINT.format(fn=rec.function, run=os.path.dirname(where) or "RUN"))
    sha = file_sha256(source)
    if sha != rec.sha256:
        msg = (f"the energy file {source} has changed since this run was trained (SHA-256 {rec.sha256[:12]}... "
               f"recorded in {where}, now {sha[:12]}...): the run's weights, metrics and call counts belong to the "
               "old energy")
        _accept_change(rec, {"event": "changed", "source": source, "sha256_before": rec.sha256, "sha256": sha},
                       msg, allow_changed)
    if source != rec.source:   # moved (same content) or a module now found elsewhere
        rec.history.append({"event": "moved", "from": rec.source, "to": source,
                            "accepted": datetime.datetime.now().isoformat(timespec="seconds")})
        if rec.kind == "file":
            rec.location = source
    rec.source, rec.sha256 = source, sha


def _check_reference(rec: TargetSpec, where: str, allow_changed: bool) -> None:
    ref = rec.options.get("reference")
    if not ref:
        return
    if not os.path.isfile(ref):
        _accept_change(rec, {"event": "reference_missing", "reference": ref},
                       f"the reference samples {ref} (recorded in {where}) are not there", allow_changed)
        rec.options, rec.reference_sha256 = {**rec.options, "reference": None}, None
        return
    sha = file_sha256(ref)
    if sha != rec.reference_sha256:
        _accept_change(rec, {"event": "reference_changed", "reference": ref, "sha256_before": rec.reference_sha256,
                             "sha256": sha},
                       f"the reference samples {ref} have changed since this run was trained (SHA-256 "
                       f"{str(rec.reference_sha256)[:12]}... recorded in {where}, now {sha[:12]}...)", allow_changed)
        rec.reference_sha256 = sha


def rebuild_target(record: TargetSpec, *, allow_changed: bool = False, energy_file: str | None = None,
                   where: str = SPEC_FILE) -> Target:
    """The target a record describes, after checking that its file (at its recorded place, or at
    `energy_file`) and reference samples still have the recorded content. The file is not run
    before its content is checked. The returned target carries the (possibly updated) record."""
    rec = copy.deepcopy(record)
    if energy_file and rec.kind != "file":
        raise TargetSpecError(f"--energy-file: the run's energy is the module {rec.location!r}, not a file; make "
                              "that module importable instead")
    _check_source(rec, energy_file, where, allow_changed)
    _check_reference(rec, where, allow_changed)
    target, _ = _build(rec.kind, rec.location, rec.function, complete_options(rec.options, rec.function))
    target.spec_record = rec
    return target


def run_target(run_dir: str, name: str | None = None, *, allow_changed: bool = False,
               energy_file: str | None = None) -> Target | None:
    """The target of a run directory: rebuilt from its target_spec.json when it has one (checked:
    see `rebuild_target`), else the registry target `name` (None when no name is given)."""
    from . import get

    rec = load_spec(run_dir)
    if rec is None:
        if energy_file:
            raise TargetSpecError(f"--energy-file: {run_dir} has no {SPEC_FILE}; its target is not a user energy")
        return get(name) if name is not None else None
    return rebuild_target(rec, allow_changed=allow_changed, energy_file=energy_file,
                          where=os.path.join(run_dir, SPEC_FILE))


def train_target(spec: str, options: dict | None, run_dir: str | None, resume: bool = False, *,
                 allow_changed: bool = False) -> Target:
    """The target for `diffsampler train SPEC ... [--resume]`. A new run resolves the spec; a resumed
    run with a target_spec.json is rebuilt from its record: the command line's spec must name the
    same function (at the recorded place, or at a new one with the recorded content: a moved file),
    and target options given again must equal the recorded ones (the others are taken from it)."""
    rec = load_spec(run_dir) if (resume and run_dir) else None
    if rec is None:
        return resolve_target(spec, options)
    where = os.path.join(run_dir, SPEC_FILE)
    parsed = parse_spec(spec)
    if parsed.kind != rec.kind or parsed.function != rec.function:
        raise TargetSpecError(f"{run_dir} was trained on the user energy {rec.text} ({where}), not {spec}; resume "
                              f"it with: diffsampler train {rec.text} --out {run_dir} --resume")
    for k, v in coerce_options(options).items():
        if v != rec.options.get(k):
            raise TargetSpecError(f"cannot resume {run_dir} with {k}={v}: it was trained with {k}="
                                  f"{rec.options.get(k)} ({where}); a run keeps its target options (start a new run "
                                  "to change them)")
    if parsed.kind == "module":
        if parsed.location != rec.location:
            raise TargetSpecError(f"{run_dir} was trained on module {rec.location!r}, not {parsed.location!r}")
        return rebuild_target(rec, allow_changed=allow_changed, where=where)
    path = str(Path(parsed.location).expanduser().resolve())
    return rebuild_target(rec, allow_changed=allow_changed, energy_file=None if path == rec.location else path,
                          where=where)
