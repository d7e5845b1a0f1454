"""SGDS benchmark (issue: SGDS): recipes side by side at equal energy-call budgets.

Within a suite every recipe uses the same learner (batch 300, random 10-step training grid, 100-step
uniform evaluation), so that the recipes are one flag apart. Energy calls are counted strictly: every
evaluation of E or grad E, in search, training and evaluation. With the PIS MLP drift (GMM-40,
Manywell-32) an on-policy iteration costs B = 300 calls and an off-policy one none. With the
Langevin drift (Manywell-64/128: the MLP drift does not learn there within these budgets, see
docs/RESULTS.md) every state of a trajectory needs the score: B N + 1 calls on-policy, B (N - 1) + 1
off-policy (the stored terminal reward is reused).

    python benchmarks/sgds.py --suite gmm40       # 40GMM @ 12M: sgds, sgds_jeffreys, tb, tb_ls
    python benchmarks/sgds.py --suite mw32        # Manywell-32 @ 20M: sgds, sgds_jeffreys, tb, tb_ls
    python benchmarks/sgds.py --suite mw128       # Manywell-128 @ 10M: sgds, sgds_jeffreys, tb_ls, tb
    python benchmarks/sgds.py --suite ablation    # Manywell-128 @ 10M: sgds and its ablations
    python benchmarks/sgds.py --suite mw32 --only sgds_jeffreys --budget 7e6 --set rounds=1   # a smaller budget
Writes benchmarks/out/sgds_<suite>[_<budget>M]<overrides>.{json,md} and a gap-versus-energy-calls plot per
target.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import diffsampler as ds
from diffsampler.training.checkpoint import write_json
from diffsampler.training.recipes import RECIPES

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
LEARNER = dict(drift="mlp", train_grid="random", train_steps=10, batch_size=300, eval_steps=100,
               eval_samples=2000, iterations=1_000_000, checkpoint_every=1000, log_every=200, threads=1)
PER_TARGET = {
    # chains start at N(0, 20^2) (sigma = 10): wide enough to reach the corner modes at |x| ~ 50
    "gmm40": dict(width=64, searcher="mala", search_step_size=0.5, rnd_alpha=100.0, search_init_std=20.0),
    "manywell32": dict(width=64, searcher="ais", search_chains=3000, search_steps=100, search_inner=20),
    # 10M calls: AIS of 2000 chains x 100 levels x 10 MALA steps = 2M per round leaves 6M to the learner
    "manywell64": dict(drift="langevin", width=256, searcher="ais", search_chains=2000, search_steps=100,
                       search_inner=10),
    "manywell128": dict(drift="langevin", width=256, searcher="ais", search_chains=2000, search_steps=100,
                        search_inner=10),
}
SUITES = {
    "gmm40": [("gmm40", r, 12e6) for r in ("sgds", "sgds_jeffreys", "tb", "tb_ls")],
    "mw32": [("manywell32", r, 20e6) for r in ("sgds", "sgds_jeffreys", "tb", "tb_ls")],
    "mw128": [("manywell128", r, 10e6) for r in ("sgds", "sgds_jeffreys", "tb_ls", "tb")],
    "ablation": [("manywell128", r, 10e6) for r in ("sgds", "sgds_no_rnd", "sgds_finetune", "sgds_reset_log_Z",
                                                   "ais_ml")],
}
PAPER = {("gmm40", "sgds"): "−0.40 / 0.33 / 0.73 (12M)", ("manywell32", "sgds"): "162.63 / 166.48 / 3.85 (20M)",
         ("gmm40", "sgds_jeffreys"): "−0.40 / 0.33 / 0.73 (12M, SGDS with TB)",
         ("manywell32", "sgds_jeffreys"): "162.63 / 166.48 / 3.85 (20M, SGDS with TB)",
         # Manywell-128 at 20M calls, the paper's ablation (ELBO / EUBO, gap computed)
         ("manywell128", "sgds"): "614.41 / 684.76 / 70.35 (20M)",
         ("manywell128", "sgds_jeffreys"): "614.41 / 684.76 / 70.35 (20M, SGDS with TB)",
         ("manywell128", "sgds_no_rnd"): "608.01 / 686.63 / 78.62 (20M)",
         ("manywell128", "sgds_finetune"): "554.17 / 707.07 / 152.90 (20M)",
         ("manywell128", "sgds_reset_log_Z"): "583.65 / 691.37 / 107.72 (20M)",
         ("manywell128", "ais_ml"): "244.85 / 840.45 / 595.60 (20M)"}


def config_for(target: str, recipe: str, budget: float, overrides: dict | None = None) -> dict:
    cfg = {**LEARNER, **PER_TARGET[target], "recipe": recipe, "max_energy_calls": int(budget)}
    rec = RECIPES[recipe]
    searcher = rec.get("searcher", "none")
    if searcher == "none":  # baselines have no searcher: drop the search keys that would switch it on
        cfg.pop("searcher", None)
    elif recipe == "ais_ml":
        cfg["searcher"] = "ais"
    if target == "manywell128" and recipe.startswith("sgds") and recipe != "sgds_reset_log_Z":
        # the SGDS paper's log Z learning rate (1e-3) once AIS has initialised log Z: at 0.1 log Z
        # fell from the AIS estimate (654) to the learner's batch mean (~490) within 7,000 iterations
        cfg["lr_log_Z"] = 1e-3
    cfg.update(overrides or {})
    # rounds split the learner's iterations: size them from the budget left after searching
    search_calls = search_calls_per_round(cfg, rec, searcher)
    rounds = cfg.get("rounds", rec.get("rounds", 1))
    learner_calls = budget - rounds * search_calls
    if learner_calls < 100 * calls_per_iteration(cfg, rec):
        raise ValueError(f"budget {budget:,.0f}: {rounds} search round(s) of {search_calls:,} calls leave "
                         f"{learner_calls:,.0f} calls, under 100 learner iterations; lower 'rounds' or "
                         f"'search_chains', or raise the budget")
    cfg["iterations"] = int(learner_calls / calls_per_iteration(cfg, rec))
    cfg["eval_every"] = max(500, cfg["iterations"] // 8)
    return cfg


def search_calls_per_round(cfg: dict, rec: dict, searcher: str) -> int:
    """Energy calls of one search phase: AIS chains x levels x inner steps; parallel tempering
    M temperatures x chains x (burn-in + steps + 1 initial); MALA chains x (burn-in + steps)."""
    chains, steps = cfg.get("search_chains", 3000), cfg.get("search_steps", 100)
    burnin = cfg.get("search_burnin", rec.get("search_burnin", 0))
    kind = cfg.get("searcher", searcher)
    if kind == "ais":
        return chains * steps * cfg.get("search_inner", 20)
    if kind == "pt":
        return cfg.get("search_temperatures", 4) * chains * (burnin + steps + 1)
    return chains * (steps + burnin)


def calls_per_iteration(cfg: dict, rec: dict) -> float:
    """Energy calls of one learner iteration (strict count; see the module docstring), averaged
    over the behaviour policy's on-policy and buffer iterations."""
    B, N = cfg["batch_size"], cfg["train_steps"]
    behaviour = cfg.get("behaviour", rec.get("behaviour", "forward"))
    if cfg.get("drift", "mlp") == "mlp":
        forward, backward = B, 0
    else:
        forward, backward = B * N + 1, B * (N - 1) + 1
    k = cfg.get("offpolicy_every", 2)   # mixed: one buffer batch in every k
    fresh = {"forward": forward, "backward": backward, "mixed": ((k - 1) * forward + backward) / k}[behaviour]
    # trajectory_reuse R: R of every R + 1 iterations replay stored trajectories at no call
    return fresh / (1 + cfg.get("trajectory_reuse", 0)) or 1


def suffix(overrides: dict) -> str:
    """File-name tag of the overrides; long ones are cut and end in a hash, so every name fits the OS limit
    (the full overrides are in each report's config)."""
    tag = "".join(f"_{k}{v}" for k, v in sorted(overrides.items()))
    if len(tag) <= 120:
        return tag
    return tag[:100] + "_" + hashlib.sha1(tag.encode()).hexdigest()[:10]


def run_case(target: str, recipe: str, budget: float, overrides: dict | None = None) -> dict:
    overrides = overrides or {}
    name = f"{target}_{recipe}_{budget / 1e6:g}M{suffix(overrides)}"
    out = os.path.join(OUT, "runs", name)
    resume = os.path.exists(os.path.join(out, "checkpoint.pt"))
    if os.path.exists(os.path.join(out, "report.json")):
        return {**json.load(open(os.path.join(out, "report.json"))), "case": name, "recipe": recipe,
                "budget": budget, "curve": curve(out)}
    if os.path.isdir(out) and not resume:
        os.rmdir(out)
    t0 = time.perf_counter()
    run = ds.train(target, out=out, resume=resume, **config_for(target, recipe, budget, overrides))
    rep = dict(run.report)
    rep.update(case=name, recipe=recipe, budget=budget, wall_seconds=round(time.perf_counter() - t0, 1),
               curve=curve(out))
    return rep


def curve(run_dir: str) -> list[dict]:
    """(energy calls, ELBO, EUBO) at each in-run evaluation."""
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")) if line.strip()]
    return [{"calls": r["energy_calls"]["search"] + r["energy_calls"]["train"], "elbo": r["elbo"], "eubo": r["eubo"]}
            for r in rows if r.get("elbo") is not None]


def markdown(results: list[dict]) -> str:
    lines = ["| target | recipe | budget | energy calls (search / train) | ELBO | EUBO | EUBO−ELBO | coverage | "
             "train s | paper SGDS (ELBO / EUBO / gap) |", "|" + " --- |" * 10]
    for r in results:
        ec = r["energy_calls"]

        def f(k):
            return "n/a" if r.get(k) is None else f"{r[k]:.2f}"
        # a --set recipe=... override shows as itself; a label given by gap_vs_calls.py wins
        recipe = r.get("label") or r.get("config", {}).get("recipe", r["recipe"])
        gap = f("eubo_minus_elbo")
        if r.get("raw_weights") and r["raw_weights"].get("eubo_minus_elbo") is not None:   # ema_decay > 0
            gap += f" (last iterate {r['raw_weights']['eubo_minus_elbo']:.2f})"
        lines.append(f"| {r['target']} | {recipe} | {r['budget'] / 1e6:g}M | {ec['search']:,} / {ec['train']:,} | "
                     f"{f('elbo')} | {f('eubo')} | {gap} | {f('mode_coverage')} | "
                     f"{r.get('train_seconds') or 0:.0f} | {PAPER.get((r['target'], recipe), '')} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    targets = sorted({r["target"] for r in results})
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.8), squeeze=False)
    colours = {}   # one colour per recipe, so several seeds of a recipe read as one family of curves
    for ax, t in zip(axes[0], targets):
        for r in results:
            if r["target"] != t or not r["curve"]:
                continue
            c = [p for p in r["curve"] if p["eubo"] is not None]
            recipe = r.get("label") or r["recipe"]
            first = recipe not in colours
            colours.setdefault(recipe, f"C{len(colours) % 10}")
            ax.plot([p["calls"] for p in c], [p["eubo"] - p["elbo"] for p in c], "o-", ms=3, color=colours[recipe],
                    label=recipe if first else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("energy calls (search + train)")
        ax.set_ylabel("EUBO − ELBO")
        ax.set_title(t)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="gmm40")
    p.add_argument("--only", nargs="*", help="restrict to these recipes")
    p.add_argument("--budget", type=float, help="energy calls per case, in place of the suite's (e.g. 7e6)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every case (the run names and output files get a suffix)")
    a = p.parse_args(argv)
    from diffsampler.training.config import TrainConfig, coerce_keys, parse_overrides
    # each key alone: unknown keys and unreadable values fail here, naming the key
    overrides = coerce_keys(parse_overrides(a.set))
    known = [r for _, r, _ in SUITES[a.suite]]
    unknown = sorted(set(a.only or []) - set(known))
    if unknown:
        p.error(f"--only {' '.join(unknown)}: not in suite {a.suite!r}, whose recipes are {known}")
    if a.budget is not None and not a.budget >= 1e5:
        p.error(f"--budget {a.budget}: expected at least 1e5 energy calls")
    cases = [(t, r, a.budget or b) for t, r, b in SUITES[a.suite] if not a.only or r in a.only]
    for target, recipe, budget in cases:   # combinations of keys are checked against each case's full config
        try:
            TrainConfig.from_dict(config_for(target, recipe, budget, overrides))
        except ValueError as err:
            p.error(f"{target} / {recipe}: {err}")
    tag = (f"_{a.budget / 1e6:g}M" if a.budget else "") + suffix(overrides)
    os.makedirs(os.path.join(OUT, "runs"), exist_ok=True)
    base = os.path.join(OUT, f"sgds_{a.suite}{tag}")
    # rows of earlier `--only` runs with the same overrides stay in the table: one file per suite and tag
    rows = {(r["target"], r["recipe"]): r for r in (json.load(open(base + ".json")) if os.path.exists(base + ".json")
                                                   else [])}
    order = [(t, r) for t, r, _ in SUITES[a.suite]]
    results = []
    for target, recipe, budget in cases:
        rows[(target, recipe)] = run_case(target, recipe, budget, overrides)
        results = [rows[k] for k in order if k in rows]
        write_json(base + ".json", results)
        open(base + ".md", "w").write(markdown(results))
        plot(results, base + ".png")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
