"""Alanine dipeptide (or another peptide target): the default against the paper's method and two
baselines at one energy budget.

    python experiments/peptides/compare.py                       # aldp, 1M calls, all four
    python experiments/peptides/compare.py --budget 2e5 --only default ml

Cases, each at the same budget:
- `default`: what `diffsampler train TARGET` runs (the target's default recipe and settings: Jeffreys
  objective, MLP drift, one MALA search, in whitened internal coordinates);
- `ml`: maximum likelihood on the searcher's samples alone, in the default's coordinates, network
  and grid: the whole budget goes to one MALA search (64 chains, 500 burn-in steps, as long as 90%
  of the budget allows; backward trajectories from its samples, no on-policy term), and the learner
  runs as many iterations as `default` (they cost no energy call);
- `tb_ls`: TB with exploration and local search on its own replay buffer (Sendera et al. 2024), in
  the default's coordinates, network and grid: no searcher; every 100 iterations 100 MALA steps (the
  default searcher's step size) move 64 buffer samples;
- `sgds`: SGDS as the paper ran it on peptides (`PeptideTarget.recommended["sgds"]`: all-atom
  Cartesian, MD searcher 600 K then 300 K, RND bonus, backward ML warm-up, then mixed on/off-policy
  TB; Kim et al. 2025).
`ml` and `tb_ls` change only what makes the method differ, so the rows read as the paper's Table 3
trend (searcher + learner against either alone). Metrics (each run's report): validity, KL of the
phi/psi/joint torsion histograms to the target's reference ensemble, basin populations against the
reference's, energy W1, ELBO / EUBO; energy calls counted strictly (search, train, eval). Writes
experiments/out/peptides/compare_<target>_<budget>M.{json,md} and each run under
experiments/out/peptides/runs/ (resumed when interrupted).
"""
from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from experiments import harness

CASES = ("default", "ml", "tb_ls", "sgds")
LS_EVERY, LS_STEPS, LS_BATCH = 100, 100, 64
ML_CHAINS, ML_BURNIN = 64, 500      # the ML case's one long MALA search: chains and burn-in steps
SEARCH_KEYS = ("searcher", "search_chains", "search_burnin", "search_steps", "search_thin", "search_friction",
               "rnd_alpha", "rnd_width", "ml_warmup", "log_Z_warm_start")


def learner_iterations(keys: dict) -> int:
    """Iterations a run of `keys` sizes within its budget (training/budget.py)."""
    from diffsampler.training import TrainConfig
    from diffsampler.training.budget import size_iterations
    return size_iterations(TrainConfig.from_dict(keys))


def case_keys(target, case: str, budget: float) -> dict:
    """Config keys of one case (module docstring), all at `budget` energy calls."""
    if case == "sgds":
        return {"recipe": "sgds", **target.recommended["sgds"], "max_energy_calls": int(budget), "iterations": None}
    base = {"recipe": target.default_recipe, **target.recommended[target.default_recipe],
            "max_energy_calls": int(budget), "iterations": None}
    if case == "default":
        return base
    if case == "ml":
        chains, burnin = ML_CHAINS, ML_BURNIN
        steps = int(0.9 * budget) // chains - burnin - 1      # 10% left for the set-up and the evaluation
        return {**base, "objective": "ml", "behaviour": "backward", "rounds": 1, "search_chains": chains,
                "search_burnin": burnin, "search_steps": steps, "ml_warmup": 0,
                "iterations": learner_iterations(base)}
    keys = {k: v for k, v in base.items() if k not in SEARCH_KEYS}
    per_iteration = keys["batch_size"] + LS_BATCH * LS_STEPS / LS_EVERY
    return {**keys, "recipe": "tb_ls", "objective": "tb", "behaviour": "mixed", "offpolicy_data": "replay",
            "rounds": 1, "exploration": 0.1, "exploration_until": 0.25, "local_search_every": LS_EVERY,
            "local_search_steps": LS_STEPS, "local_search_batch": LS_BATCH,
            "iterations": int(0.9 * budget / per_iteration)}


# the report's keys (evaluation/peptides.py): residue 1's torsions and basins, the dipeptide's only ones
METRICS = [("valid", "frac_valid", "{:.3f}"), ("bonds", "frac_bonds", "{:.3f}"), ("KL phi", "kl_phi1", "{:.3f}"),
           ("KL psi", "kl_psi1", "{:.3f}"), ("KL joint", "kl_phipsi1", "{:.3f}"), ("C7eq", "pop1_C7eq", "{:.3f}"),
           ("C5", "pop1_C5", "{:.3f}"), ("alpha_R", "pop1_alphaR", "{:.3f}"), ("alpha_L", "pop1_alphaL", "{:.3f}"),
           ("C7ax", "pop1_C7ax", "{:.3f}"), ("energy W1 (kT)", "energy_w1", "{:.1f}"),
           ("KL phi / psi, weighted", "is_kl", "{}"), ("ELBO", "elbo", "{:.4g}"), ("EUBO - ELBO", "eubo_minus_elbo", "{:.2f}"),
           ("k-hat", "psis_k", "{:.2f}")]


def evaluated(report: dict, n: int) -> dict:
    """The run's metrics from a fresh evaluation on n samples (RUN/eval/report.json, reused when it
    holds n samples), so that every row's histograms rest on as many draws."""
    import diffsampler as ds
    run_dir = report["run_dir"]
    saved = harness.read_json(os.path.join(run_dir, "eval", "report.json"))
    if saved is None or saved.get("n_eval_samples") != n:
        saved = ds.load_run(run_dir).evaluate(n=n, steps=report.get("eval_steps", 100))
    return {**report, **saved, "run_dir": run_dir, "wall_seconds": report.get("wall_seconds")}


def row(case: str, report: dict) -> dict:
    calls = report["energy_calls"]
    r = {"case": case, "energy_calls": calls["search"] + calls["train"], "wall_seconds": report.get("wall_seconds"),
         "train_seconds": report.get("train_seconds"), "run_dir": report["run_dir"]}
    r.update({key: report.get(key) for _, key, _ in METRICS})
    kl = [report.get(f"is_kl_{t}1") for t in ("phi", "psi")]
    r["is_kl"] = None if None in kl else f"{kl[0]:.3f} / {kl[1]:.3f}"
    r["n_eval_samples"] = report.get("n_eval_samples")
    return r


def saved_reference(rows: list[dict]) -> dict:
    """The reference's basin populations from the first saved row whose evaluation carries them (a
    case with no valid sample carries none)."""
    for r in rows:
        rep = harness.read_json(os.path.join(r.get("run_dir") or "", "eval", "report.json")) or {}
        ref = {k[:-4]: v for k, v in rep.items() if k.startswith("pop") and k.endswith("_ref")}
        if ref:
            return ref
    return {}


def markdown(rows: list[dict], ref: dict) -> str:
    header = ["case", "calls (search + train)"] + [h for h, _, _ in METRICS] + ["train s"]
    body = [[r["case"], f"{r['energy_calls']:,}"] + [harness.fmt(r.get(k), s) for _, k, s in METRICS]
            + [harness.fmt(r.get("train_seconds"), "{:.0f}")] for r in rows]
    body.append(["reference", ""] + [harness.fmt(ref.get(k), s) if k.startswith("pop") else "" for _, k, s in METRICS]
                + [""])
    return harness.md_table(header, body)


def main(argv=None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--target", default="aldp")
    p.add_argument("--budget", type=float, default=1e6, help="energy calls per case (default 1e6)")
    p.add_argument("--eval-samples", type=int, default=10000,
                   help="draws of the final evaluation each row reports (default 10,000; 0: the run's own)")
    harness.add_only(p, CASES)
    harness.add_threads(p)
    a = p.parse_args(argv)
    cases = harness.check_only(p, a.only, CASES)
    harness.set_threads(a.threads)
    import diffsampler as ds
    target = ds.targets.get(a.target)
    out = harness.out_dir("peptides")
    base = os.path.join(out, f"compare_{a.target}_{a.budget / 1e6:g}M")
    saved = harness.read_json(base + ".json", {"rows": []})
    rows = {r["case"]: r for r in saved["rows"]}
    ref: dict = saved.get("reference") or saved_reference(saved["rows"])
    for case in cases:
        keys = case_keys(target, case, a.budget)
        report = harness.run_case(target, keys, os.path.join(out, "runs", f"{a.target}_{case}_{a.budget / 1e6:g}M"),
                                  progress=True)
        if a.eval_samples:
            report = evaluated(report, a.eval_samples)
        new = row(case, report)
        if new["wall_seconds"] is None and case in rows:   # a finished run reused: keep its measured wall time
            new["wall_seconds"] = rows[case].get("wall_seconds")
        rows[case] = new
        ref = {k[:-4]: v for k, v in report.items() if k.startswith("pop") and k.endswith("_ref")} or ref
        ordered = [rows[c] for c in CASES if c in rows]
        harness.write_json(base + ".json", {"command": harness.command(), "machine": harness.machine(),
                                            "rows": ordered, "reference": ref})
        harness.write_text(base + ".md", markdown(ordered, ref))
    print(markdown([rows[c] for c in CASES if c in rows], ref))
    return 0


if __name__ == "__main__":
    sys.exit(main())
