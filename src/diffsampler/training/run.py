"""`train()` (the Python entry point), the `Run` it returns, and loading a run directory."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import torch

from ..distributed import launch
from ..errors import ConfigError
from ..evaluation import evaluate
from ..faults import fault_point
from ..evaluation.plots import plot_marginals, plot_samples, plot_training_curves
from ..objectives import make_objective
from ..reporting import write_html_report
from ..search.pilot import pilot_warning
from ..targets import Target, get
from ..targets.spec import record_spec, run_target
from .build import build_sampler, cpu_compiler
from .checkpoint import CHECKPOINT, load_checkpoint, write_json
from .config import TrainConfig, coerce_keys
from .defaults import default_keys
from .ema import ParameterEMA
from .finetune import cumulative
from .interrupts import Interrupted, stop_on_signals
from .pilot_phase import grid_choice, refine_grid, standardization, training_target, wants_pilot
from .run_dir import cleanup_failed_run, prepare_run_dir
from .trainer import Trainer

REPORT_KEYS = ("target", "dim", "log_Z_true", "elbo", "eubo", "log_Z_is", "delta_log_Z_is", "delta_elbo",
               "ess", "w2", "mode_coverage", "energy_calls", "train_seconds", "iterations", "train_steps",
               "eval_steps", "nfe", "config")


@dataclass
class Run:
    """A trained sampler with its target, config, report and run directory (None if not saved)."""

    target: Target
    config: TrainConfig
    sampler: object
    report: dict = field(default_factory=dict)
    dir: str | None = None

    def evaluate(self, steps: int | None = None, grid: str | None = None, n: int | None = None,
                 save: bool = True, integrator: str = "euler_maruyama", corrector_steps: int = 0,
                 defensive: float = 0.0) -> dict:
        """Recompute the metrics (and plots under RUN_DIR/eval/ when saved); defensive > 0 adds the
        defensive-mixture estimates (`evaluation.defensive`) with that share of Student-t draws."""
        rep = make_report(self, steps or self.config.eval_steps, grid or self.config.eval_grid,
                          n or self.config.eval_samples, subdir="eval" if save else None, integrator=integrator,
                          corrector_steps=corrector_steps, defensive=defensive)
        return rep


def fits_log_Z(cfg: TrainConfig) -> bool:
    """Whether the run's objectives train sampler.log_Z (TB, VarGrad, DB, SubTB do; the KL and
    maximum-likelihood divergences do not, so after them the parameter is only its initial value
    and the report gives None for it rather than a number that looks learned)."""
    names = {cfg.objective, cfg.objective_fwd or cfg.objective}
    return any(make_objective(n).fits_log_Z for n in names)


def _coarsened(grid: dict | None) -> str:
    """', grid N of the M steps asked (K iterations affordable)' where the budget coarsened the grid."""
    if not grid or grid["steps"] == grid["asked"]:
        return ""
    return (f"; grid {grid['steps']} of the {grid['asked']} steps its stiffness asks "
            f"(~{grid['afforded_iterations']:,.0f} iterations affordable)")


def make_report(run: Run, steps: int, grid: str, n: int, subdir: str | None,
                integrator: str = "euler_maruyama", corrector_steps: int = 0, defensive: float = 0.0) -> dict:
    """Evaluate and assemble the report dict (keys REPORT_KEYS plus extras). Unknown -> None."""
    ev = evaluate(run.sampler, n=n, steps=steps, grid=grid, integrator=integrator, corrector_steps=corrector_steps,
                  defensive=defensive)
    m = ev.metrics
    prev = run.report or {}
    rep = {
        "target": run.target.name, "dim": run.target.dim, "log_Z_true": run.target.log_Z,
        "elbo": m["elbo"], "eubo": m["eubo"], "eubo_minus_elbo": m["eubo_minus_elbo"],
        "log_Z_is": m["log_Z_is"], "delta_log_Z_is": m["delta_log_Z_is"], "delta_elbo": m["delta_elbo"],
        "log_Z_learned": run.sampler.log_Z.item() if fits_log_Z(run.config) else None,
        "ess": m["ess"], "w2": m["w2"], "mmd": m["mmd"],
        "mode_coverage": m["mode_coverage"],
        "energy_calls": run.target.counter.as_dict(), "nonfinite_energy": dict(run.target.counter.nonfinite),
        "skipped_steps": prev.get("skipped_steps", 0),
        "train_seconds": prev.get("train_seconds"), "iterations": prev.get("iterations"),
        "stop_reason": prev.get("stop_reason"), "pilot": prev.get("pilot"), "lineage": prev.get("lineage"),
        "train_steps": run.config.train_steps, "train_grid": run.config.train_grid,
        "eval_steps": steps, "eval_grid": grid, "time_warp": run.sampler.time_warp, "corrector_steps": corrector_steps,
        "integrator": m["integrator"], "nfe": m["nfe"], "n_eval_samples": n, "config": run.config.to_dict(),
    }
    standard = {"elbo", "eubo", "eubo_minus_elbo", "log_Z_is", "delta_log_Z_is", "delta_elbo", "ess", "w2", "mmd",
                "mode_coverage", "nfe", "log_Z_true", "n_eval_samples", "eval_steps", "eval_grid", "integrator"}
    rep.update({k: v for k, v in m.items() if k not in standard})  # e.g. modes_covered, distance_w2
    unsettled = pilot_warning(rep["pilot"])
    if unsettled:
        rep["warnings"] = [*(rep.get("warnings") or []), unsettled]
    if run.dir and subdir is not None:
        d = os.path.join(run.dir, subdir) if subdir else run.dir
        os.makedirs(d, exist_ok=True)
        write_json(os.path.join(d, "report.json"), rep)
        x = ev.x.detach().cpu().numpy()
        xt = None if ev.x_true is None else ev.x_true.detach().cpu().numpy()
        title = f"{run.target.name}: ELBO {rep['elbo']:.2f}" + (
            f", EUBO {rep['eubo']:.2f}" if rep["eubo"] is not None else "")
        plot_samples(x, xt, run.target.plot_dims, os.path.join(d, "samples.png"), title)
        plot_marginals(x, xt, os.path.join(d, "marginals.png"))
        run.target.extra_plots(ev.x.detach().cpu(), None if ev.x_true is None else ev.x_true.detach().cpu(), d, title)
    return rep


def summary_table(rep: dict) -> str:
    """The report as a plain-text table (ELBO, EUBO, log Z, ESS, k-hat, calls, ...), warnings below it."""
    def f(v, fmt="{:.3f}"):
        return "n/a" if v is None else (fmt.format(v) if isinstance(v, float) else str(v))
    ec = rep["energy_calls"]
    rows = [("target", rep["target"]), ("log Z (true)", f(rep["log_Z_true"])), ("ELBO", f(rep["elbo"])),
            ("EUBO", f(rep["eubo"])), ("EUBO - ELBO", f(rep.get("eubo_minus_elbo"))),
            ("log Z (IS)", f(rep["log_Z_is"])), ("|Δ log Z| (IS)", f(rep["delta_log_Z_is"])),
            ("ESS", f(rep["ess"], "{:.4f}")), ("PSIS k-hat", f(rep.get("psis_k"), "{:.2f}")),
            *([("defensive (share {:g}): log Z / ESS / k-hat".format(rep["defensive_fraction"]),
                f"{f(rep.get('defensive_log_Z_is'))} / {f(rep.get('defensive_ess'), '{:.4f}')} / "
                f"{f(rep.get('defensive_psis_k'), '{:.2f}')}")] if rep.get("defensive_fraction") else []),
            ("W2", f(rep["w2"])), ("mode coverage", f(rep["mode_coverage"])),
            ("energy calls (search/train/eval)", f"{ec['search']:,} / {ec['train']:,} / {ec['eval']:,}"),
            ("iterations", f(rep["iterations"])), ("train seconds", f(rep["train_seconds"], "{:.1f}")),
            ("grids", f"train {rep['train_grid']} x{rep['train_steps']}, eval {rep['eval_grid']} x{rep['eval_steps']}"
                   + (f", time warp {rep['time_warp']:g}" if rep.get("time_warp", 1.0) != 1.0 else ""))]
    raw = rep.get("raw_weights")
    if raw:   # ema_decay > 0: the rows above are the averaged weights'
        rows.insert(5, ("EUBO - ELBO (last iterate)", f(raw.get("eubo_minus_elbo"))))
    lineage = rep.get("lineage")
    if lineage:   # started from another run (init_from, or a stage): the whole chain's cost
        rows.append(("with its ancestors (calls, train s)", f"{lineage['energy_calls_total']:,}, "
                     f"{lineage['train_seconds_total']:.0f} ({len(lineage['runs'])} earlier runs)"))
    pilot = rep.get("pilot")
    if pilot:
        rows.append(("pilot (standardised coordinates)",
                     f"scales {pilot['scale_min']:.3g}..{pilot['scale_max']:.3g}, |location| {pilot['loc_norm']:.3g}, "
                     + (f"stiffness {pilot['curvature']:.3g}, " if pilot.get("curvature") is not None else "")
                     + f"{pilot['energy_calls']:,} calls" + _coarsened(pilot.get("grid"))))
    w = max(len(k) for k, _ in rows)
    line = "-" * (w + 24)
    warnings = [f"WARNING: {msg}" for msg in rep.get("warnings") or []]
    return "\n".join([line] + [f"{k:<{w}}  {v}" for k, v in rows] + [line] + warnings)


def train(target: str | Target, config: TrainConfig | dict | None = None, *, max_seconds: float | None = None,
          out: str | None = None, resume: bool = False, progress: bool = True, callbacks=None,
          **overrides) -> Run:
    """Train a diffusion sampler on `target` and return the `Run` (sampler, config, report, directory).

    Args:
        target: a registry name ("manywell32", "gmm40", "dw4", ...; `diffsampler.targets.names()`) or a
            Target (e.g. `targets.from_energy(fn, dim=d)` for a user's energy E: (B, d) -> (B,)).
        config: a TrainConfig, a dict of config keys (flat or sectioned), or None for the target's own
            measured settings, else its kind's (`training.defaults.default_keys`). docs/CONFIG.md
            lists every key.
        max_seconds: wall-time budget of training (the pilot and searches included, evaluation not), in seconds.
        out: run directory (config.json, metrics.jsonl, checkpoint.pt, report.json, report.html,
            plots); None keeps everything in memory.
        resume: continue the run in `out` from its checkpoint (bit for bit, as if never stopped).
        progress: progress bars on stderr.
        callbacks: functions f(trainer, iteration) called after each iteration.
        **overrides: config keys on top of `config` (e.g. recipe="sgds_jeffreys", iterations=5000).

    Returns:
        Run: `.sampler` (a DiffusionSampler: `sample(n, steps)` -> x (n, d), log_w (n,)), `.report`
        (the keys of report.json: ELBO, EUBO, log Z (IS), ESS, PSIS k-hat, W2, energy calls, ...),
        `.config`, `.dir`. SIGTERM/SIGINT stop after a checkpoint (`training.interrupts.Interrupted`).
    """
    target = get(target)
    cfg = _config(target, config, max_seconds, overrides)
    with launch(cfg.device) as ctx:   # torchrun: join the run's processes (docs/distributed.md)
        return _train(ctx, target, cfg, out, resume, progress, callbacks, overrides)


def _config(target: Target, config, max_seconds: float | None, overrides: dict) -> TrainConfig:
    """The run's config: `config` (or the target's own settings), the overrides on top."""
    if max_seconds is not None:
        overrides["max_seconds"] = max_seconds
    if config is None:       # the target's own settings (or its kind's) for the budget, the overrides on top
        budget = coerce_keys({"max_energy_calls": overrides["max_energy_calls"]})["max_energy_calls"] \
            if "max_energy_calls" in overrides else None
        keys = default_keys(target, overrides.pop("recipe", None), budget)
        if "max_energy_calls" in overrides and "iterations" not in overrides and keys.get("max_energy_calls") != budget:
            keys["iterations"] = None   # a call budget alone sizes the iterations (and so places the rounds) to it
        return TrainConfig.from_dict({**keys, **overrides})
    base = TrainConfig.from_dict(config) if isinstance(config, dict) else config
    return base.replace(**overrides) if overrides else base.validate()


def _open(target: Target, cfg: TrainConfig, out: str | None, resume: bool, overrides: dict) -> dict:
    """Rank 0's look at the run directory: the config (a resumed run's saved one, the overrides on
    top), whether there is a checkpoint to resume and its state, whether this call created the
    directory, and the standardised coordinates the run continues or starts from."""
    if resume and out:
        saved = os.path.join(out, "config.json")
        if os.path.exists(saved):
            saved_cfg = json.load(open(saved))
            saved_cfg.pop("target", None)
            cfg = TrainConfig.from_dict({**saved_cfg, **overrides})
    created = prepare_run_dir(out, resume) if out else False
    if resume and out and not os.path.exists(os.path.join(out, CHECKPOINT)):
        resume = False   # killed before its first checkpoint: the run starts again in its own directory
    try:
        state = load_checkpoint(os.path.join(out, CHECKPOINT), target_name=target.name,
                                dim=target.dim) if resume else None
        saved = state.get("standardization") if state is not None else _saved_standardization(target, cfg)
    except BaseException:
        cleanup_failed_run(out, created, None)
        raise
    return {"config": cfg, "resume": resume, "state": state, "created": created, "standardization": saved}


def _train(ctx, target: Target, cfg: TrainConfig, out: str | None, resume: bool, progress: bool, callbacks,
           overrides: dict) -> Run:
    """train() on this process: rank 0 reads and writes the run directory, every process trains."""
    opened = ctx.from_main(lambda: _open(target, cfg, out, resume, overrides))
    cfg, resume, created = opened["config"], opened["resume"], ctx.is_main and opened["created"]
    trainer = None
    try:
        cfg = _resolve_shards(cfg, ctx)
        if not resume:   # a new run counts its own calls, whatever the target object was used for before
            target.counter.load({})
        train_target, pilot = _training_target(ctx, target, cfg, opened["standardization"])
        if pilot is not None:
            pilot["grid"] = grid_choice(cfg, pilot)
        cfg = refine_grid(cfg, pilot)
        trainer = Trainer(train_target, cfg, out, callbacks=callbacks, progress=progress, init_weights=not resume,
                          ctx=ctx)
        trainer.pilot = pilot
        if pilot is not None:   # the pilot is the run's first search: its seconds count against max_seconds
            trainer.train_seconds += float(pilot.get("seconds", 0.0))
        if out and ctx.is_main:
            write_json(os.path.join(out, "config.json"), {**cfg.to_dict(), "target": target.name})
            record_spec(out, target)   # target_spec.json, for a user energy (FILE.py:NAME, module:NAME)
        if resume:
            trainer.resume(opened["state"])
        trainer.fit()
    except BaseException:
        cleanup_failed_run(out, created, trainer)
        raise
    world = _world_keys(ctx, cfg, trainer)
    ctx.leave()           # the last collective: rank 0 evaluates alone, the others are done
    if not ctx.is_main:   # rank 0 alone evaluates and writes the report
        return Run(target, cfg, trainer.sampler, report={"iterations": trainer.iteration,
                                                         "stop_reason": trainer.stop_reason, **world}, dir=out)
    with stop_on_signals(raise_now=Interrupted("SIGTERM", trainer.iteration, out)):   # training is saved: a
        return _finish(trainer, target, cfg, out, world)                              # signal stops at once


def _resolve_shards(cfg: TrainConfig, ctx) -> TrainConfig:
    """shards=None: one per process; the processes must divide the shards (each owns S / W of them)."""
    if cfg.shards is None:
        cfg = dataclasses.replace(cfg, shards=ctx.world).validate()
    if cfg.shards % ctx.world:
        raise ConfigError(f"config key 'shards' = {cfg.shards}: {ctx.world} processes must divide it (each process "
                          "takes the same number of shards); set shards to a multiple of the processes")
    return cfg


def _training_target(ctx, target: Target, cfg: TrainConfig, saved: dict | None) -> tuple[Target, dict | None]:
    """`training_target` on rank 0 (a pilot runs there alone); the others rebuild its coordinates."""
    keep: dict = {}

    def resolve():
        keep["target"], pilot = training_target(target, cfg, saved)
        return standardization(keep["target"]), pilot
    shared, pilot = ctx.from_main(resolve)
    return keep.get("target") or training_target(target, cfg, shared)[0], pilot


def _world_keys(ctx, cfg: TrainConfig, trainer: Trainer) -> dict:
    """report.json's world_size, shards and per-rank devices, for a sharded or multi-process run."""
    devices = ctx.all_gather_objects(str(trainer.sampler.log_Z.device))
    if ctx.world == 1 and cfg.shards == 1:
        return {}
    return {"world_size": ctx.world, "shards": cfg.shards, "devices": devices}


RAW_EVAL_SAMPLES = 2000   # the last iterate's figures (beside the averaged weights'): at most this many samples


def _finish(trainer: Trainer, target: Target, cfg: TrainConfig, out: str | None, world: dict | None = None) -> Run:
    """After training: the report (the averaged weights', and the raw ones'), plots, HTML, streams."""
    run = Run(target, cfg, trainer.sampler, dir=out)
    run.report = {"train_seconds": round(trainer.train_seconds, 2), "iterations": trainer.iteration,
                  "stop_reason": trainer.stop_reason, "skipped_steps": trainer.learner.skipped_steps,
                  "pilot": trainer.pilot,
                  "lineage": cumulative(trainer.lineage, target.counter.counts, trainer.train_seconds)}
    fault_point("evaluation")
    raw = None
    if trainer.learner.ema is not None:
        # the run reports (and eval/sample use) the averaged weights; the raw ones are measured too
        m = evaluate(trainer.sampler, n=min(cfg.eval_samples, RAW_EVAL_SAMPLES), steps=cfg.eval_steps,
                     grid=cfg.eval_grid).metrics
        raw = {k: m[k] for k in ("elbo", "eubo", "eubo_minus_elbo", "log_Z_is", "ess", "mode_coverage")}
        trainer.learner.ema.copy_to(trainer.sampler)
    run.report = make_report(run, cfg.eval_steps, cfg.eval_grid, cfg.eval_samples, subdir="" if out else None)
    if raw is not None:
        run.report["raw_weights"] = raw
    run.report.update(world or {})
    if out and (raw is not None or world):
        write_json(os.path.join(out, "report.json"), run.report)
    if out:
        plot_training_curves(os.path.join(out, "metrics.jsonl"), os.path.join(out, "training_curves.png"),
                             target.log_Z)
        write_html_report([out], os.path.join(out, "report.html"))   # self-contained: plots embedded
        trainer.stream.finish(out)    # the run's PNGs to the metric streams, then close them
    return run


def _saved_standardization(target: Target, cfg: TrainConfig) -> dict | None:
    """The standardised coordinates of the checkpoint this run starts from (init_from), if it had any."""
    source = cfg.init_from
    if source is None:
        return None
    path = os.path.join(source, CHECKPOINT) if os.path.isdir(source) else source
    if not os.path.exists(path):
        return None     # the trainer reports the missing checkpoint
    return load_checkpoint(path, target_name=target.name, dim=target.dim).get("standardization")


def load_run(run_dir: str, target: Target | None = None, device: str | None = None) -> Run:
    """Load a run directory (its final checkpoint). A user energy named by a spec (FILE.py:NAME) is
    rebuilt from the run's target_spec.json; one built in Python must be passed again.

    device: where to put the sampler ("cpu", "cuda", "cuda:N"); None keeps the run's own device,
    except that a run trained on CUDA loads on the CPU (with a warning) where no GPU is present."""
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(cfg_path):
        from ..errors import CheckpointError
        raise CheckpointError(f"{run_dir} is not a run directory (no config.json)")
    raw = json.load(open(cfg_path))
    name = raw.pop("target")
    target = target or run_target(run_dir, name)   # a user energy: rebuilt from target_spec.json, checked
    if device is None and str(raw.get("device", "cpu")).startswith("cuda") and not torch.cuda.is_available():
        import warnings
        warnings.warn(f"{run_dir} was trained on {raw['device']}; no GPU here, so it is loaded on the CPU")
        device = "cpu"
    if device is not None:
        raw["device"] = device
    if raw.get("compile", "none") != "none" and cpu_compiler() is None and (
            not str(raw.get("device", "cpu")).startswith("cuda")):
        import warnings
        warnings.warn(f"{run_dir} compiled its drift; no C++ compiler here, so it runs uncompiled (same numbers)")
        raw["compile"] = "none"
    cfg = TrainConfig.from_dict(raw)
    state = load_checkpoint(os.path.join(run_dir, CHECKPOINT), target_name=target.name, dim=target.dim)
    torch.manual_seed(cfg.seed)
    train_target, _ = training_target(target, cfg, state.get("standardization"))
    if train_target is target and wants_pilot(target, cfg):
        from ..errors import CheckpointError
        raise CheckpointError(f"checkpoint in {run_dir} has no standardization, but its config runs a pilot")
    sampler = build_sampler(train_target, cfg)
    try:
        sampler.load_state_dict(state["sampler"])
        if state.get("ema") is not None:   # ema_decay > 0: the run's reported weights are the average
            ema = ParameterEMA(sampler, state["ema"]["decay"])
            ema.load_state_dict(state["ema"])
            ema.copy_to(sampler)
    except (RuntimeError, KeyError) as e:
        from ..errors import CheckpointError
        raise CheckpointError(f"checkpoint in {run_dir} does not match its config: {e}") from None
    target.counter.load(state.get("energy_calls", {}), state.get("nonfinite_calls"))
    target.nonfinite = cfg.nonfinite_energy
    rep_path = os.path.join(run_dir, "report.json")
    report = json.load(open(rep_path)) if os.path.exists(rep_path) else {
        "train_seconds": state.get("train_seconds"), "iterations": state["iteration"], "pilot": state.get("pilot")}
    return Run(target, cfg, sampler, report=report, dir=run_dir)
