"""SGDS and its baselines side by side at an equal energy-call budget: EUBO − ELBO (and mode
coverage) against energy calls, one suite per target.

A case is the target's own settings for the recipe (`default_keys(target, recipe)`: what the
library runs for `diffsampler train TARGET recipe=R`), then the suite's budget with the learner
sized to it (`max_energy_calls=B iterations=None`: the library's training/budget.py), then the
--set overrides, and unless set, eight in-run evaluations for the gap-versus-calls curve. A
recipe without measured settings of its own for the target (the baselines, the ablations) gets the
learner of the target's default recipe (network, grids, batch, time warp, weight average), and its
searcher settings too where the recipe searches (a searcher, or TB+LS's local search), so that the
recipes in a suite are one flag apart. Energy
calls are counted strictly: every evaluation of E or grad E, in search, training and evaluation.

    python experiments/sgds.py --suite gmm40       # GMM-40 @ 12M: sgds, sgds_jeffreys, tb, tb_ls
    python experiments/sgds.py --suite mw32        # Manywell-32 @ 20M: sgds, sgds_jeffreys, tb, tb_ls
    python experiments/sgds.py --suite mw128       # Manywell-128 @ 10M: sgds, sgds_jeffreys, tb_ls, tb
    python experiments/sgds.py --suite ablation    # Manywell-128 @ 10M: sgds and its ablations
    python experiments/sgds.py --suite mw32 --only sgds_jeffreys --budget 4e6 --set seed=1

Writes experiments/out/sgds/sgds_<suite>[_<budget>M]<overrides>.{json,md,png} (one table per suite
and override set: rows of earlier --only runs stay in it) and each case's run directory under
experiments/out/sgds/runs/ (resumed when interrupted, reused when finished).
"""
from __future__ import annotations

import os
import sys

if __package__ in (None, ""):   # run as a file: python experiments/sgds.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

NAME = "sgds"
SUITES = {
    "gmm40": [("gmm40", r, 12e6) for r in ("sgds", "sgds_jeffreys", "tb", "tb_ls")],
    "mw32": [("manywell32", r, 20e6) for r in ("sgds", "sgds_jeffreys", "tb", "tb_ls")],
    "mw128": [("manywell128", r, 10e6) for r in ("sgds", "sgds_jeffreys", "tb_ls", "tb")],
    "ablation": [("manywell128", r, 10e6) for r in ("sgds", "sgds_no_rnd", "sgds_finetune", "sgds_reset_log_Z",
                                                   "ais_ml")],
}
# keys that make up the learner, shared by the recipes of a suite that have no settings of their own
LEARNER_KEYS = ("drift", "width", "depth", "time_features", "sigma", "train_grid", "train_steps", "batch_size",
                "time_warp", "ema_decay", "checkpoint_every", "log_every")
# the SGDS paper's figures (Kim et al., 2025), for reference in the table
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


def case_keys(target: str, recipe: str, budget: float, overrides: dict | None = None) -> dict:
    """The config keys of one case (see the module docstring)."""
    import diffsampler as ds
    from diffsampler.training.defaults import default_keys
    from diffsampler.training.recipes import recipe as recipe_keys
    t = ds.targets.get(target)
    keys = default_keys(t, recipe, budget)             # the settings measured nearest below the budget
    own_default = getattr(t, "default_recipe", None)
    if not t.settings(recipe) and own_default:          # no settings of its own: the default recipe's learner
        shared = t.settings(own_default, budget)
        bundle = recipe_keys(recipe)   # a searcher, or local search (MALA at search_step_size)
        runs_search = bundle.get("searcher", "none") != "none" or bundle.get("local_search_every", 0) > 0
        keys.update({k: v for k, v in shared.items()
                     if k in LEARNER_KEYS or (runs_search and k.startswith("search") and k != "searcher")})
        if bundle.get("searcher") == recipe_keys("sgds")["searcher"] and "searcher" in shared:
            keys["searcher"] = shared["searcher"]      # the SGDS family's searcher is the target's
    keys.update(max_energy_calls=int(budget), iterations=None)
    keys.update(overrides or {})                       # --set iterations=N pins what the budget would size
    if "eval_every" not in keys:   # eight in-run evaluations (at least 500 iterations apart) for the curve
        from diffsampler.training import TrainConfig
        keys["eval_every"] = max(500, TrainConfig.from_dict(keys).iterations // 8)
    return keys


def curve(run_dir: str) -> list[dict]:
    """(energy calls, ELBO, EUBO) at each in-run evaluation."""
    return [{"calls": r["energy_calls"]["search"] + r["energy_calls"]["train"], "elbo": r["elbo"], "eubo": r["eubo"]}
            for r in harness.read_metrics(run_dir) if r.get("elbo") is not None]


def run(target: str, recipe: str, budget: float, overrides: dict, threads: int) -> dict:
    name = f"{target}_{recipe}_{budget / 1e6:g}M{harness.tag(overrides)}"
    out = os.path.join(harness.out_dir(NAME, "runs"), name)
    rep = harness.run_case(target, {**case_keys(target, recipe, budget, overrides), "threads": threads}, out)
    return {**rep, "case": name, "recipe": recipe, "budget": budget, "curve": curve(out)}


def markdown(results: list[dict]) -> str:
    f = harness.fmt
    rows = []
    for r in results:
        ec = r["energy_calls"]
        # a --set recipe=... override shows as itself; a label given by gap_vs_calls.py wins
        recipe = r.get("label") or r.get("config", {}).get("recipe", r["recipe"])
        gap = f(r.get("eubo_minus_elbo"))
        if r.get("raw_weights") and r["raw_weights"].get("eubo_minus_elbo") is not None:   # ema_decay > 0
            gap += f" (last iterate {r['raw_weights']['eubo_minus_elbo']:.2f})"
        rows.append([r["target"], recipe, f"{r['budget'] / 1e6:g}M", f"{ec['search']:,} / {ec['train']:,}",
                     f(r.get("elbo")), f(r.get("eubo")), gap, f(r.get("mode_coverage")),
                     f"{r.get('train_seconds') or 0:.0f}", PAPER.get((r["target"], recipe), "")])
    return harness.md_table(["target", "recipe", "budget", "energy calls (search / train)", "ELBO", "EUBO",
                             "EUBO−ELBO", "coverage", "train s", "paper SGDS (ELBO / EUBO / gap)"], rows)


def plot(results: list[dict], path: str) -> None:
    """EUBO − ELBO against energy calls, one panel per target, one colour per recipe (seeds alike)."""
    targets = sorted({r["target"] for r in results})
    with harness.figure(path, 1, len(targets), squeeze=False) as (fig, axes):
        colours = {}
        for ax, t in zip(axes[0], targets):
            for r in results:
                if r["target"] != t or not r["curve"]:
                    continue
                c = [p for p in r["curve"] if p["eubo"] is not None]
                recipe = r.get("label") or r["recipe"]
                first = recipe not in colours
                colours.setdefault(recipe, f"C{len(colours) % 10}")
                ax.plot([p["calls"] for p in c], [p["eubo"] - p["elbo"] for p in c], "o-", ms=3,
                        color=colours[recipe], label=recipe if first else None)
            ax.set(xscale="log", yscale="log", xlabel="energy calls (search + train)", ylabel="EUBO − ELBO", title=t)
            ax.legend()


def main(argv=None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--suite", choices=sorted(SUITES), default="gmm40")
    p.add_argument("--only", nargs="*", help="restrict to these recipes of the suite")
    p.add_argument("--budget", type=float, help="energy calls per case, in place of the suite's (e.g. 4e6)")
    harness.add_set(p, "config overrides for every case (the run names and output files get a suffix)")
    harness.add_threads(p)
    a = p.parse_args(argv)
    from diffsampler.training import TrainConfig
    overrides = harness.parse_set(p, a.set)
    recipes = harness.check_only(p, a.only, [r for _, r, _ in SUITES[a.suite]])
    if a.budget is not None and not a.budget >= 1e5:
        p.error(f"--budget {a.budget}: expected at least 1e5 energy calls")
    cases = [(t, r, a.budget or b) for t, r, b in SUITES[a.suite] if r in recipes]
    for target, recipe, budget in cases:   # combinations of keys are checked against each case's full config
        try:
            TrainConfig.from_dict(case_keys(target, recipe, budget, overrides))
        except ValueError as err:          # ConfigError: names the key, and for a budget the numbers
            p.error(f"{target} / {recipe}: {err}")
    base = os.path.join(harness.out_dir(NAME),
                        f"sgds_{a.suite}" + (f"_{a.budget / 1e6:g}M" if a.budget else "") + harness.tag(overrides))
    rows = {(r["target"], r["recipe"]): r for r in harness.read_json(base + ".json", [])}
    order = [(t, r) for t, r, _ in SUITES[a.suite]]
    results = []
    for target, recipe, budget in cases:
        rows[(target, recipe)] = run(target, recipe, budget, overrides, a.threads)
        results = [rows[k] for k in order if k in rows]
        harness.write_json(base + ".json", results)
        harness.write_text(base + ".md", markdown(results))
        plot(results, base + ".png")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
