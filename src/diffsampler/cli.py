"""Command line: targets, energy, train, eval, sample, report. Errors end with one message and exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _targets(args) -> int:
    from . import targets

    from .errors import MissingDependencyError

    rows = []
    for n in targets.names():
        try:
            rows.append(targets.get(n).info())
        except MissingDependencyError as e:   # e.g. peptides without the [peptides] extra
            rows.append({"name": n, "dim": None, "log_Z": None, "has_samples": False, "unavailable": str(e)})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'name':<14}{'dim':>5}  {'log_Z':>10}  samples")
        for r in rows:
            lz = "unknown" if r["log_Z"] is None else f"{r['log_Z']:.4f}"
            dim = "-" if r["dim"] is None else r["dim"]
            print(f"{r['name']:<14}{dim:>5}  {lz:>10}  {'yes' if r['has_samples'] else 'no'}"
                  + ("  (unavailable: missing dependency)" if "unavailable" in r else ""))
    return 0


def _load_array(path: str, dim: int) -> np.ndarray:
    from .errors import NonFiniteError, ShapeError

    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise ShapeError(f"cannot read {path} as a .npy array ({e})") from None
    if a.ndim != 2 or a.shape[1] != dim:
        raise ShapeError(f"{path}: expected an array of shape (B, {dim}), got {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ShapeError(f"{path}: expected a numeric array, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise NonFiniteError(f"{path}: contains NaN/inf (first at row {bad[0]}, column {bad[1]})")
    return a


def _energy(args) -> int:
    import torch

    from .targets.spec import resolve_target, split_target_options
    from .training import parse_overrides

    t = resolve_target(args.target, split_target_options(args.target, parse_overrides(args.overrides))[0])
    a = _load_array(args.input, t.dim)
    with torch.no_grad():
        e = t.energy(torch.as_tensor(a, dtype=torch.float64))
    np.save(args.output, e.numpy())
    return 0


def _train(args) -> int:
    from .distributed.context import env_world
    from .targets.spec import split_target_options, train_target
    from .training import parse_overrides, read_config_file, summary_table, train

    target_options, overrides = split_target_options(args.target, parse_overrides(args.overrides))
    target = train_target(args.target, target_options, args.out, args.resume, allow_changed=args.allow_changed_energy)
    file_keys = read_config_file(args.config, target.name) if args.config else {}
    stages = file_keys.pop("stages", None)
    if args.max_seconds is not None:     # the flag and a max_seconds=... override: the flag wins
        overrides["max_seconds"] = args.max_seconds
    if args.resume and not args.out:
        from .errors import ConfigError
        raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
    out = args.out or os.path.join("runs", f"{target.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if stages:                           # a preset in stages: each starts from the one before
        return _train_stages(target, stages, file_keys, overrides, out, args)
    run = train(target, out=out, resume=args.resume, progress=not args.quiet, **{**file_keys, **overrides})
    world, rank, _ = env_world()
    if rank:   # under torchrun rank 0 reports; the others say where they stopped
        print(f"diffsampler: rank {rank} of {world} stopped at iteration {run.report['iterations']} "
              f"({run.report['stop_reason']})", file=sys.stderr)
        return 0
    print(summary_table(run.report))
    print(f"run directory: {out}")
    return 0


def _train_stages(target, stages, file_keys: dict, overrides: dict, out: str, args) -> int:
    """`train --config FILE` where FILE has a `stages` list: the file's other keys are shared by the
    stages (below each stage's own), the command line's act on every stage (above them)."""
    from .distributed.context import env_world
    from .training import summary_table
    from .training.stages import stages_table, train_stages

    run = train_stages(target, stages, out=out, resume=args.resume, progress=not args.quiet, shared=file_keys,
                       **overrides)
    if env_world()[1]:
        return 0
    print(summary_table(run.report))
    print(stages_table(out))
    print(f"run directory: {out} (the last stage: {run.dir})")
    return 0


def _eval(args) -> int:
    from .targets.spec import run_target
    from .training import load_run, summary_table
    from .training.stages import last_stage

    args.run_dir = last_stage(args.run_dir)   # a run in stages: its last stage
    target = run_target(args.run_dir, allow_changed=args.allow_changed_energy, energy_file=args.energy_file)
    run = load_run(args.run_dir, target=target, device=args.device)
    rep = run.evaluate(steps=args.steps, grid=args.grid, n=args.n, integrator=args.integrator,
                       corrector_steps=args.corrector_steps, defensive=args.defensive)
    if args.json:
        print(json.dumps(rep))
    else:
        print(summary_table(rep))
        print(f"saved under {os.path.join(args.run_dir, 'eval')}")
    return 0


def _sample(args) -> int:
    import torch

    from .evaluation.evaluator import weight_metrics
    from .evaluation.resampling import importance_resample
    from .evaluation.trust import trust_warnings
    from .search.pilot import pilot_warning
    from .sde.integrators import make_integrator, nfe_for
    from .targets.spec import run_target
    from .training import load_run
    from .training.stages import last_stage

    args.run_dir = last_stage(args.run_dir)   # a run in stages: its last stage
    target = run_target(args.run_dir, allow_changed=args.allow_changed_energy, energy_file=args.energy_file)
    run = load_run(args.run_dir, target=target, device=args.device)
    if args.format != "npz" and getattr(run.sampler.target, "topology", None) is None:
        from .errors import ConfigError
        raise ConfigError(f"--format {args.format} needs a molecular target (one with a topology)")
    if args.defensive:
        x, log_w = _defensive_draws(run.sampler, args)
    else:
        x, log_w = run.sampler.sample(args.n, steps=args.steps, integrator=args.integrator,
                                      corrector_steps=args.corrector_steps)
    steps = args.steps or run.sampler.default_steps
    nfe = nfe_for(make_integrator(args.integrator), steps)
    diag = weight_metrics(log_w)
    extra = {}
    if args.resample:   # equally weighted draws: Pareto-smoothed weights, systematic resampling
        x = importance_resample(x, log_w)
        log_w = torch.zeros(x.shape[0], dtype=log_w.dtype)
        extra = {"resampled": np.array(True), "ess": np.array(diag["ess"]),
                 "psis_k": np.array(np.nan if diag["psis_k"] is None else diag["psis_k"])}
    np.savez(args.output, x=x.detach().cpu().numpy(), log_w=log_w.detach().cpu().numpy(),
             integrator=np.array(args.integrator), nfe=np.array(nfe), **extra)
    if args.format != "npz":             # molecular targets: also a trajectory file next to the .npz
        from .evaluation.peptides import write_trajectory
        print(f"wrote {write_trajectory(run.sampler.target, x, os.path.splitext(args.output)[0] + '.' + args.format)}")
    corr = f", then {args.corrector_steps} MALA corrector steps" if args.corrector_steps else ""
    how = ", importance-resampled (equal weights)" if args.resample else ""
    if args.defensive:
        how += f", {args.defensive:g} of them from the defensive Student-t (use the weights)"
    print(f"wrote {args.n} samples to {args.output} ({args.integrator}, {nfe} drift evaluations per sample{corr}{how})")
    for msg in [*trust_warnings(diag), pilot_warning(run.report.get("pilot"))]:
        if msg:
            print(f"WARNING: {msg}", file=sys.stderr)
    return 0


def _defensive_draws(sampler, args):
    """`sample --defensive EPS`: the defensive mixture's draws and weights (`evaluation.defensive`)."""
    from .errors import ConfigError
    from .evaluation.defensive import DefensiveMixture
    if args.integrator != "euler_maruyama" or args.corrector_steps:
        raise ConfigError("--defensive draws with Euler-Maruyama and no corrector steps (its backward "
                          "paths need the Euler-Maruyama kernels)")
    out = DefensiveMixture(fraction=args.defensive).sample(sampler, args.n, steps=args.steps)
    return out.x, out.log_w


def _report(args) -> int:
    from .reporting import write_html_report

    from .training.stages import staged_dirs

    dirs = [d for path in args.run_dirs for d in (staged_dirs(path) or [path])]   # a run in stages: each stage
    print(f"wrote {write_html_report(dirs, args.output)}")
    return 0


def _nonneg(v: str) -> int:
    n = int(v)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _fraction(v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {v!r}") from None
    if not 0.0 <= f < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {f}")
    return f


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _integrators() -> list[str]:
    from .sde.integrators import INTEGRATORS
    return list(INTEGRATORS)


TARGET_HELP = "a registry name (diffsampler targets), or a user energy: FILE.py:NAME or package.module:NAME"
CHANGED_HELP = ("use a run's user energy even if its file changed since training (default: refuse; "
                "RUN/target_spec.json holds the recorded SHA-256)")
DEVICE_HELP = "cpu | cuda | cuda:N (default: the run's own; a CUDA run loads on the CPU where no GPU is present)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffsampler", description="Train and evaluate diffusion samplers.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("targets", help="list targets")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_targets)
    s = sub.add_parser("energy", help="E(x) for each row of a (B, d) .npy array")
    s.add_argument("target", help=TARGET_HELP)
    s.add_argument("input")
    s.add_argument("overrides", nargs="*", help="target options of a user energy: dim=D ...")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(fn=_energy)
    s = sub.add_parser("train", help="train a sampler: diffsampler train TARGET [key=value ...]")
    s.add_argument("target", help=TARGET_HELP)
    s.add_argument("overrides", nargs="*", help="config overrides key=value (for a user energy, dim= log_Z= "
                                                 "reference= sigma= name= are its target options)")
    s.add_argument("--config", help="JSON (or YAML: .yaml/.yml) file of config keys (a preset, or a run's "
                                    "config.json); key=value overrides apply on top")
    s.add_argument("--out", help="run directory (default runs/TARGET-DATE-TIME)")
    s.add_argument("--max-seconds", type=float, default=None)
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    s.add_argument("--allow-changed-energy", action="store_true", help=CHANGED_HELP)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=_train)
    s = sub.add_parser("eval", help="recompute metrics of a run; saved under RUN_DIR/eval/")
    s.add_argument("run_dir")
    s.add_argument("--device", default=None, help=DEVICE_HELP)
    s.add_argument("--energy-file", default=None, help="the run's user energy file at a new place (same content)")
    s.add_argument("--allow-changed-energy", action="store_true", help=CHANGED_HELP)
    s.add_argument("--steps", type=_positive, default=None)
    s.add_argument("--grid", default=None, choices=["uniform", "random", "equidistant"])
    s.add_argument("-n", type=_positive, default=None, help="number of samples")
    s.add_argument("--integrator", default="euler_maruyama", choices=_integrators())
    s.add_argument("--corrector-steps", type=_nonneg, default=0,
                   help="MALA steps on the target after sampling (log-weights stay valid)")
    s.add_argument("--defensive", type=_fraction, default=0.0, metavar="EPS",
                   help="also draw a share EPS from a heavy-tailed Student-t and weight every draw by the mixture "
                        "(bounded weights; docs: weighted or raw samples)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_eval)
    s = sub.add_parser("sample", help="draw samples with log-weights to an .npz (x, log_w)")
    s.add_argument("run_dir")
    s.add_argument("--device", default=None, help=DEVICE_HELP)
    s.add_argument("--energy-file", default=None, help="the run's user energy file at a new place (same content)")
    s.add_argument("--allow-changed-energy", action="store_true", help=CHANGED_HELP)
    s.add_argument("-n", type=_positive, required=True)
    s.add_argument("--steps", type=_positive, default=None)
    s.add_argument("--integrator", default="euler_maruyama", choices=_integrators())
    s.add_argument("--corrector-steps", type=_nonneg, default=0,
                   help="MALA steps on the target after sampling (log-weights stay valid)")
    s.add_argument("--resample", action="store_true",
                   help="importance-resample to n equally weighted draws (Pareto-smoothed weights); log_w is then 0. "
                        "Use when the raw samples are biased but PSIS k-hat is low (docs: weighted or raw samples)")
    s.add_argument("--defensive", type=_fraction, default=0.0, metavar="EPS",
                   help="also draw a share EPS from a heavy-tailed Student-t and weight every draw by the mixture "
                        "(bounded weights; docs: weighted or raw samples)")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--format", default="npz", choices=["npz", "pdb", "dcd"],
                   help="pdb | dcd: also write the samples as a trajectory (molecular targets)")
    s.set_defaults(fn=_sample)
    s = sub.add_parser("report", help="one self-contained HTML file on runs (side by side for several)")
    s.add_argument("run_dirs", nargs="+", metavar="RUN")
    s.add_argument("-o", "--output", default="report.html", help="the HTML file (default report.html)")
    s.set_defaults(fn=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import DiffSamplerError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling `overrides` at the first option, so `train T --config F key=value` leaves
    # key=value over: take such leftovers as overrides; anything else is an unknown argument.
    if getattr(args, "fn", None) in (_train, _energy) and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .training.interrupts import Interrupted
    try:
        return args.fn(args)
    except Interrupted as e:      # SIGTERM / SIGINT during training: a checkpoint was written
        if os.environ.get("RANK", "0") in ("", "0"):   # under torchrun, rank 0 says it (and wrote it)
            print(f"diffsampler: {e}", file=sys.stderr)
        return e.exit_code
    except (DiffSamplerError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
            NotImplementedError) as e:
        print(f"diffsampler: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffsampler: interrupted (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
