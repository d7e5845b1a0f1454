"""The held-out suite, one command:

    POSTERIORDB=/path/to/posteriordb python -m experiments.heldout.run_suite [--seconds 300]
    POSTERIORDB=/path/to/posteriordb python -m experiments.heldout.run_suite --targets confirmation

For each target: model checks (first, for all targets), the diffusion sampler trained with the
library's DEFAULT settings for a fixed wall time, 20,000 draws with their log-weights, NUTS
(numpyro defaults) on the same log density, a row in experiments/out/heldout/suite.json, a table
suite.md and a marginals PNG per target. Resumable: a target whose row exists is skipped unless
--force. Run from the repository root.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from .. import harness
from ..harness import write_json, write_text

OUT = Path(harness.OUT_ROOT) / "heldout"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from .models import SUITES, TARGET_NAMES
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", choices=list(SUITES), default="heldout",
                   help="which set runs without --only: heldout (the twelve) or confirmation (six posteriors "
                        "added after the defaults were chosen; experiments/heldout/confirmation.py)")
    p.add_argument("--only", nargs="+", choices=TARGET_NAMES, metavar="NAME", help=", ".join(TARGET_NAMES))
    p.add_argument("--seconds", type=float, default=300.0, help="training wall time per target (default 300)")
    p.add_argument("--posteriordb", default=None, help="posteriordb clone (default: $POSTERIORDB)")
    p.add_argument("--skip-nuts", action="store_true")
    p.add_argument("--force", action="store_true", help="redo targets that already have a row")
    p.add_argument("--ignore-checks", action="store_true", help="run targets whose model check failed")
    p.add_argument("--draws", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="run the suite once per seed into OUT/seed<S>/ and write OUT/seeds.md, each target's "
                        "median and range over the seeds (with --table-only: only rewrite seeds.md)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch and XLA (default 1)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table-only", action="store_true", help="only rewrite suite.md from suite.json")
    p.add_argument("--defensive", type=float, default=0.0, metavar="EPS",
                   help="also weight 20,000 draws by the defensive mixture with a share EPS of Student-t draws "
                        "(with --rescore: from each saved run, no training)")
    p.add_argument("--rescore", action="store_true",
                   help="recompute k-hat of every row from its saved draws (samples/NAME.npz) and the exact-draw "
                        "floor of its errors, then rewrite the table")
    p.add_argument("--draw-sets", type=int, default=0, metavar="K",
                   help="with --rescore: also score K fresh sets of --draws draws of each saved run (torch seeds "
                        "100 .. 100+K-1): how much of a row is its one draw set's")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides on top of the defaults (to compare recipes; the suite's own rows use none)")
    args = p.parse_args(argv)
    if args.draw_sets < 0 or (args.draw_sets and not args.rescore):
        p.error(f"--draw-sets {args.draw_sets}: give a number of draw sets >= 1, together with --rescore "
                "(they are drawn from each saved run)")
    return args


def set_threads(n: int) -> None:
    """One thread each for torch and XLA by default, so that both samplers get the same CPU."""
    import torch
    torch.set_num_threads(n)
    if n == 1:
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


DRAW_SET_SEED = 100   # --draw-sets: set j is drawn after torch.manual_seed(DRAW_SET_SEED + j)


def train_and_draw(target, seconds: float, run_dir: Path, n: int, steps: int,
                   seed: int, overrides: dict | None = None,
                   defensive: float = 0.0) -> tuple[dict, np.ndarray, np.ndarray]:
    """Train with the library defaults for `seconds`, then n draws (x (n, d), log_w (n,));
    defensive > 0: also n defensive-mixture draws (`defensive_figures`)."""
    import torch

    import diffsampler as ds

    torch.manual_seed(seed)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    tgt = ds.targets.from_energy(target.energy, dim=target.dim, log_Z=target.log_Z,
                                 samples=target.reference, name=target.name)
    t0 = time.perf_counter()
    # the run's own seed (its pilot, search and learner re-seed from it); a --set seed= still wins
    run = ds.train(tgt, max_seconds=seconds, out=str(run_dir), progress=False, **{"seed": seed, **(overrides or {})})
    wall_train = time.perf_counter() - t0
    before = tgt.counter.as_dict()["eval"]
    t0 = time.perf_counter()
    with torch.no_grad():
        x, log_w = run.sampler.sample(n, steps=steps)
    cost = {"train_wall_seconds": wall_train, "sample_seconds": time.perf_counter() - t0, "n_draws": n,
            "sample_energy_calls": tgt.counter.as_dict()["eval"] - before}
    x, log_w = x.double().cpu().numpy(), log_w.double().cpu().numpy()
    row = {**sampler_figures(target, run.report, x, log_w), **cost}
    if defensive:
        row["defensive"] = defensive_figures(target, run, n, steps, defensive)
    return row, x, log_w


def sampler_figures(target, rep: dict, x: np.ndarray, log_w: np.ndarray) -> dict:
    """The sampler's row from its report and its draws: errors raw and weighted, ESS, k-hat, log Z."""
    from .metrics import ess_fraction, log_Z_is, moment_errors, psis_khat

    calls = rep["energy_calls"]
    # k-hat of all the draws: the report's (its eval_samples draws) can miss a heavy tail that
    # 20,000 draws show (funnel10 at 300 s: 0.61 in the report, 0.81 on the draws)
    khat = psis_khat(log_w)
    khat_source = "diffsampler.evaluation.psis on the draws"
    log_z, log_z_se = log_Z_is(log_w)
    keep = ("train_seconds", "iterations", "stop_reason", "elbo", "eubo", "eubo_minus_elbo", "config")
    return {"status": "ok", **{k: rep.get(k) for k in keep},
            "energy_calls": calls, "train_energy_calls": calls["search"] + calls["train"],
            "errors_raw": moment_errors(x, target.moments()),
            "errors_weighted": moment_errors(x, target.moments(), log_w),
            "ess_fraction": ess_fraction(log_w), "psis_k": khat, "psis_k_source": khat_source,
            "psis_k_report": rep.get("psis_k"), "warnings_report": rep.get("warnings"),
            "log_Z_is": log_z, "log_Z_se": log_z_se, "log_Z_is_report": rep.get("log_Z_is"),
            "n_nonfinite": int((~np.isfinite(x).all(1)).sum() + (~np.isfinite(log_w)).sum())}


def mode_fractions(target, x: np.ndarray, log_w: np.ndarray | None) -> list[float] | None:
    """Mass per mode (nearest centre) of the draws, plain or importance-weighted."""
    from .metrics import normalised_weights
    labels = target.mode_labels(x)
    if labels is None:
        return None
    w = normalised_weights(log_w, len(labels))
    return np.bincount(labels, weights=w, minlength=len(target.modes)).tolist()


def run_target(target, check: dict, args: argparse.Namespace) -> dict:
    """One row: target info, its check, the sampler's figures and NUTS's (failures are recorded)."""
    from .nuts import nuts_summary, run_nuts
    from .report import plot_marginals

    from .metrics import exact_draw_floor
    row = {**target.info(), "log_Z_true": target.log_Z, "check": check,
           "floor": exact_draw_floor(target, args.draws)}
    if "weights" in target.extra:
        row["mode_weights_true"] = np.asarray(target.extra["weights"]).tolist()
    x = log_w = nuts_draws = None
    try:
        from diffsampler.training import parse_overrides
        row["sampler"], x, log_w = train_and_draw(target, args.seconds, args.out / "runs" / target.name,
                                                  args.draws, args.steps, args.seed, parse_overrides(args.set),
                                                  args.defensive)
        row["sampler"]["mode_fractions_raw"] = mode_fractions(target, x, None)
        row["sampler"]["mode_fractions_weighted"] = mode_fractions(target, x, log_w)
    except Exception as e:  # noqa: BLE001  (a failed run is a result: record it and go on)
        row["sampler"] = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                          "traceback": traceback.format_exc(limit=4)}
    if not args.skip_nuts:
        try:
            res = run_nuts(target, seed=args.seed)
            nuts_draws = res["draws"].reshape(-1, target.dim)
            row["nuts"] = {"status": "ok", **nuts_summary(target, res)}
        except Exception as e:  # noqa: BLE001
            row["nuts"] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    (args.out / "samples").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "samples" / f"{target.name}.npz",
                        **{k: v for k, v in (("x", x), ("log_w", log_w), ("nuts", nuts_draws)) if v is not None})
    plot_marginals(target, x, log_w, nuts_draws, args.out / f"{target.name}.png")
    return row


def defensive_figures(target, run, n: int, steps: int, fraction: float) -> dict:
    """Weighted errors, ESS, k-hat and log Z of n draws of the defensive mixture
    (`diffsampler.evaluation.DefensiveMixture`) around a trained sampler."""
    from diffsampler.evaluation import DefensiveMixture

    from .metrics import log_Z_is
    t0 = time.perf_counter()
    out = DefensiveMixture(fraction=fraction).sample(run.sampler, n, steps=steps)
    x, log_w = out.x.double().cpu().numpy(), out.log_w.double().cpu().numpy()
    log_z, log_z_se = log_Z_is(log_w)
    return {"fraction": fraction, **weighted_figures(target, x, log_w), "log_Z_is": log_z,
            "log_Z_se": log_z_se, "seconds": time.perf_counter() - t0}


def weighted_figures(target, x: np.ndarray, log_w: np.ndarray) -> dict:
    """The weighted errors, ESS and k-hat of draws x (n, d) with log-weights log_w (n,)."""
    from .metrics import ess_fraction, moment_errors, psis_khat
    return {"errors_weighted": moment_errors(x, target.moments(), log_w), "ess_fraction": ess_fraction(log_w),
            "psis_k": psis_khat(log_w)}


def draw_set_figures(target, run, k: int, n: int, steps: int) -> list[dict]:
    """Weighted errors, k-hat, ESS and goal met of k fresh sets of n draws of a trained sampler
    (set j drawn after torch.manual_seed(DRAW_SET_SEED + j))."""
    import torch

    from .report import goal_met
    sets = []
    for j in range(k):
        torch.manual_seed(DRAW_SET_SEED + j)
        with torch.no_grad():
            x, log_w = run.sampler.sample(n, steps=steps)
        x, log_w = x.double().cpu().numpy(), log_w.double().cpu().numpy()
        fig = {"status": "ok", **weighted_figures(target, x, log_w)}
        sets.append({**fig, "goal_met": goal_met(fig)})
    return sets


def load_trained(target, run_dir: Path):
    """The suite's trained run of `target` (its user energy passed again)."""
    import diffsampler as ds
    tgt = ds.targets.from_energy(target.energy, dim=target.dim, log_Z=target.log_Z,
                                 samples=target.reference, name=target.name)
    return ds.load_run(str(run_dir), target=tgt)


def rescore(suite: dict, out: Path, defensive: float = 0.0, posteriordb: str | None = None,
            n: int = 20_000, steps: int = 100, draw_sets: int = 0, only: list[str] | None = None) -> None:
    """k-hat of each row's saved log-weights by the current `psis_khat`, in place (rows whose draws
    were not saved are left as they are); defensive > 0: also the defensive figures of each saved run;
    draw_sets > 0: also `draw_set_figures` of each saved run. only: these rows (default all)."""
    from .metrics import exact_draw_floor, psis_khat
    from .models import DATABASE, load_target, posteriordb_root
    have_db = posteriordb_root(posteriordb) is not None
    for name, row in suite["rows"].items():
        if only and name not in only:
            continue
        saved = (draw_sets or defensive) and (out / "runs" / name).exists() and \
            row.get("sampler", {}).get("status") == "ok"
        target = load_target(name, posteriordb) if saved or have_db or name not in DATABASE else None
        run = load_trained(target, out / "runs" / name) if saved else None
        if saved and draw_sets:
            rescore_draw_sets(row, name, target, run, draw_sets, n, steps)
        if have_db or name not in DATABASE:     # the floor needs the target (posteriordb's: a clone)
            row["floor"] = exact_draw_floor(target, n)
        if saved and defensive:
            row["sampler"]["defensive"] = d = defensive_figures(target, run, n, steps, defensive)
            print(f"{name:27s} defensive {defensive:g}: weighted errors {d['errors_weighted']['mean_err_max']:.2f} / "
                  f"{d['errors_weighted']['sd_err_max']:.2f}, k-hat {d['psis_k']:.2f}, ESS {d['ess_fraction']:.3f}")
        path = out / "samples" / f"{name}.npz"
        s = row.get("sampler", {})
        if s.get("status") != "ok" or not path.exists():
            continue
        with np.load(path) as f:
            if "log_w" not in f:
                continue
            s["psis_k"] = psis_khat(f["log_w"])
        s["psis_k_source"] = "diffsampler.evaluation.psis on the draws"
        print(f"{name:27s} k-hat {s['psis_k']:.2f}")


def rescore_draw_sets(row: dict, name: str, target, run, k: int, n: int, steps: int) -> None:
    """row['sampler']['draw_sets'] from `run`, the saved run of `name`, printed."""
    row["sampler"]["draw_sets"] = sets = draw_set_figures(target, run, k, n, steps)
    for j, d in enumerate(sets):
        e = d["errors_weighted"]
        print(f"{name:27s} draw set {j}: weighted errors {e['mean_err_max']:.2f} / {e['sd_err_max']:.2f}, "
              f"k-hat {d['psis_k']:.2f}, ESS {d['ess_fraction']:.3f}, goal met {d['goal_met']}", flush=True)


def run_checks(targets) -> dict[str, dict]:
    """The model checks of every target, printed, before any training."""
    from .models import check_target
    checks = {}
    for t in targets:
        c = check_target(t)
        b = c["backend"] or {}
        print(f"check {t.name:27s} max|z| score {c['score_z_max']:5.2f}  torch/jax rel "
              f"{b.get('jax_rel_err', float('nan')):.1e} (grad {b.get('jax_grad_rel_err', float('nan')):.1e})  "
              f"{'ok' if c['ok'] else 'FAILED'}", flush=True)
        checks[t.name] = {k: c[k] for k in ("score_z", "score_z_max", "backend", "ok")}
    return checks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    if args.seeds:
        return run_seeds(args)
    return run_suite(args)


def run_seeds(args: argparse.Namespace) -> int:
    """The suite once per seed of --seeds, each in OUT/seed<S>/, then OUT/seeds.md and seeds.json."""
    from .seeds import aggregate, load_seed_suites, seed_dir, seeds_table
    out = args.out
    for s in args.seeds:
        if not args.table_only:
            print(f"==== seed {s}", flush=True)
            run_suite(argparse.Namespace(**{**vars(args), "seed": s, "out": seed_dir(out, s)}))
    agg = aggregate(load_seed_suites(out, args.seeds))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "seeds.json", {"seeds": args.seeds, "targets": agg})
    write_text(out / "seeds.md", seeds_table(agg))
    print(f"wrote {out / 'seeds.md'}")
    return 0


def run_suite(args: argparse.Namespace) -> int:
    """One seed's suite (args.seed) into args.out."""
    from .models import load_targets
    from .report import markdown_table

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "suite.json"
    suite = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    if args.rescore:
        rescore(suite, args.out, args.defensive, args.posteriordb, args.draws, args.steps, args.draw_sets, args.only)
        write_json(path, suite)
    if args.table_only or args.rescore:
        write_text(args.out / "suite.md", markdown_table(suite["rows"], suite.get("meta", {}).get("seconds")))
        return 0
    targets, skipped = load_targets(args.only, args.posteriordb, args.targets)
    if skipped:
        print(f"no posteriordb clone (--posteriordb or POSTERIORDB): skipping {', '.join(skipped)}")
    todo = [t for t in targets if args.force or t.name not in suite["rows"]]
    checks = run_checks(todo)
    for t in todo:
        if not (checks[t.name]["ok"] or args.ignore_checks):
            print(f"{t.name}: model check failed, skipped (--ignore-checks to run it)")
            continue
        print(f"== {t.name} (d={t.dim}): training {args.seconds:g} s", flush=True)
        suite["rows"][t.name] = run_target(t, checks[t.name], args)
        suite["meta"] = {"seconds": args.seconds, "seed": args.seed, "draws": args.draws, "steps": args.steps,
                         "threads": args.threads, "overrides": args.set}
        write_json(path, suite)
        write_text(args.out / "suite.md", markdown_table(suite["rows"], args.seconds))
        s = suite["rows"][t.name]["sampler"]
        print(f"   sampler {s['status']}" + (f": {s['error']}" if s["status"] != "ok" else ""), flush=True)
    write_text(args.out / "suite.md", markdown_table(suite["rows"], suite.get("meta", {}).get("seconds")))
    print(f"wrote {path} and {args.out / 'suite.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
