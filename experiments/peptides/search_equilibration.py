"""How well a search phase equilibrates alanine dipeptide's basins, at the default's search budget.

    python experiments/peptides/search_equilibration.py                  # three searchers x two seeds
    python experiments/peptides/search_equilibration.py --only pt --seeds 0 1 2

The default's learner imitates its search (maximum likelihood on the buffer), so the buffer's basin
populations set the sampler's: a search whose chains have not relaxed from their start (the
minimised C7eq structure) leaves alpha_R short. Each case runs only the search phase, in the
default's whitened internal coordinates, with the library's own searcher code (`run_search`), at
the default's ~353K energy calls:
- `mala`: the default (64 chains x (500 + 5,000) steps, every 20th kept);
- `mala_long`: 16 chains x (2,000 + 20,000) steps, every 20th kept (as many calls, longer chains);
- `pt`: parallel tempering, 16 chains x 4 temperatures (1 to 3, geometric) x (500 + 5,000) steps,
  every 5th T = 1 state kept.
Reported per case and seed: the searched samples' basin populations and torsion KLs against the
target's reference ensemble, alpha_R in each quarter of the chains' recorded time (a drift means
they had not relaxed), and energy calls. Writes experiments/out/peptides/search_equilibration.{json,md}.
"""
from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from experiments import harness

SEARCH = dict(search_step_size=0.1, search_init_std=0.5, search_checkpoint_calls=0)
CASES = {
    "mala": dict(searcher="mala", search_chains=64, search_burnin=500, search_steps=5000, search_thin=20),
    "mala_long": dict(searcher="mala", search_chains=16, search_burnin=2000, search_steps=20000, search_thin=20),
    "pt": dict(searcher="pt", search_chains=16, search_temperatures=4, search_t_max=3.0, search_burnin=500,
               search_steps=5000, search_thin=5),
}


def searched(view, keys: dict, seed: int):
    """(samples in the user's coordinates (T * B, 3n) time-major, chains B, energy calls, seconds)."""
    import torch

    from diffsampler.training import TrainConfig
    from diffsampler.training.search_phase import run_search
    cfg = TrainConfig.from_dict({"coordinates": "internal", **SEARCH, **keys, "seed": seed})
    torch.manual_seed(seed)
    before, t0 = view.counter.counts["search"], time.perf_counter()
    res = run_search(cfg, view, dtype=torch.float64)
    return view.to_user(res.x.double()), keys["search_chains"], view.counter.counts["search"] - before, \
        time.perf_counter() - t0


def measure(target, x, chains: int, ref_stats) -> dict:
    """Basin populations, torsion KLs and alpha_R per quarter of the recorded time."""
    from diffsampler.evaluation import peptides as P
    tors = P.torsions_of(target, x)
    m = P.compare_stats(P.torsion_stats(tors, None), ref_stats)
    basin = P.basin_index(tors["phi1"], tors["psi1"]).reshape(-1, chains)
    alpha = (basin == P.BASINS.index("alphaR")).double()
    q = alpha.shape[0] // 4
    m["alphaR_by_quarter"] = [round(float(alpha[i * q:(i + 1) * q].mean()), 3) for i in range(4)]
    m["chains_never_in_alphaR"] = int((alpha.sum(0) == 0).sum())
    return m


def markdown(rows: list[dict], ref: dict) -> str:
    header = ["case", "seed", "calls", "samples", "C7eq", "C5", "alpha_R", "KL phi", "KL psi", "KL joint",
              "alpha_R by quarter", "chains never in alpha_R", "s"]
    body = [[r["case"], r["seed"], f"{r['calls']:,}", f"{r['samples']:,}", *(f"{r[f'pop1_{b}']:.3f}" for b in
             ("C7eq", "C5", "alphaR")), *(f"{r[k]:.3f}" for k in ("kl_phi1", "kl_psi1", "kl_phipsi1")),
             " / ".join(f"{a:.2f}" for a in r["alphaR_by_quarter"]), r["chains_never_in_alphaR"], f"{r['seconds']:.0f}"]
            for r in rows]
    body.append(["reference", "", "", "", *(f"{ref[f'pop1_{b}']:.3f}" for b in ("C7eq", "C5", "alphaR")),
                 "", "", "", "", "", ""])
    return harness.md_table(header, body)


def main(argv=None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    harness.add_only(p, list(CASES))
    harness.add_threads(p)
    a = p.parse_args(argv)
    cases = harness.check_only(p, a.only, list(CASES))
    harness.set_threads(a.threads)
    import diffsampler as ds
    from diffsampler.evaluation import peptides as P
    from diffsampler.targets.internal_coordinates import InternalCoordinateTarget
    target = ds.targets.get("aldp")
    view = InternalCoordinateTarget.build(target)
    x_ref = target.sample(20000).double()
    ref_stats = P.torsion_stats(P.torsions_of(target, x_ref), None)
    ref = {f"pop1_{b}": float(ref_stats["basins1"][i]) for i, b in enumerate(P.BASINS)}
    base = os.path.join(harness.out_dir("peptides"), "search_equilibration")
    done = {(r["case"], r["seed"]): r for r in harness.read_json(base + ".json", {"rows": []})["rows"]}
    for case in cases:
        for seed in a.seeds:
            if (case, seed) in done:
                continue
            x, chains, calls, seconds = searched(view, CASES[case], seed)
            row = {"case": case, "seed": seed, "calls": calls, "samples": int(x.shape[0]), "seconds": seconds,
                   "keys": CASES[case], **measure(target, x, chains, ref_stats)}
            done[(case, seed)] = row
            rows = sorted(done.values(), key=lambda r: (list(CASES).index(r["case"]), r["seed"]))
            harness.write_results(base, {"command": harness.command(), "machine": harness.machine(), "rows": rows,
                                         "reference": ref}, markdown(rows, ref))
    return 0


if __name__ == "__main__":
    sys.exit(main())
