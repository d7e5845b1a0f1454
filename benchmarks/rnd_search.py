"""Does SGDS's round-2 search stay on the target with RND novelty? A particle target (LJ-13 by
default, or DW-4), both novelty networks side by side in one script.

SGDS searches on the auxiliary energy E(x) - alpha novelty(x) after round 1 (Kim et al., 2025;
alpha = 10 for LJ-13). Two novelty networks, everything else equal:
  * `mlp`: an MLP on x / sigma (this package's networks for every target before session 29);
  * `egnn`: `search.make_rnd`'s networks for particle systems, tanh of invariant EGNN features.
A short SGDS run each (EGNN drift 16 x 2, 10 random steps, 200 + 200 iterations, MALA 16 chains x
(500 burn-in + 1,500) steps per round); reported: each round's MALA acceptance and the median and
maximum TRUE energy of the samples it stores in the buffer, and the final report.

    python benchmarks/rnd_search.py --out benchmarks/out/rnd_search_lj13
    python benchmarks/rnd_search.py --target dw4 --out benchmarks/out/rnd_search_dw4
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import diffsampler as ds
import diffsampler.training.trainer as trainer_module
from diffsampler.search import RND, make_rnd


def mlp_rnd(target, width, lr, input_scale):
    """The networks before session 29: an MLP on x / input_scale for every target."""
    return RND(target.dim, hidden=width, lr=lr, input_scale=input_scale)


def run(kind: str, args) -> dict:
    trainer_module.make_rnd = make_rnd if kind == "egnn" else mlp_rnd
    keys = dict(recipe="sgds", drift="egnn", width=16, depth=2, time_features=16, train_steps=10, batch_size=16,
                searcher="mala", search_chains=16, search_burnin=500, search_steps=1500, search_thin=10,
                search_step_size=0.01, rounds=2, iterations=400, round_iterations="200,200", rnd_alpha=args.alpha,
                rnd_width=64, log_Z_warm_start="buffer", threads=1, eval_steps=50, eval_samples=500, seed=args.seed)
    out = tempfile.mkdtemp()
    try:
        r = ds.train(args.target, out=out, progress=False, **keys)
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rounds = [{k: row["search"][k] for k in ("round", "acceptance", "energy_median", "energy_max", "stored")}
              for row in rows if "search" in row]
    rep = {k: r.report.get(k) for k in ("elbo", "eubo", "eubo_minus_elbo", "equivariant_w2", "energy_w1", "energy_w2")}
    return {"rnd": kind, "rounds": rounds, "report": rep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="lj13", choices=["lj13", "dw4", "lj55"])
    ap.add_argument("--alpha", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/out/rnd_search_lj13")
    args = ap.parse_args()
    results = [run(kind, args) for kind in ("mlp", "egnn")]
    json.dump({"args": vars(args), "results": results}, open(args.out + ".json", "w"), indent=1)
    lines = [f"{args.target}, SGDS with RND novelty (alpha {args.alpha}), seed {args.seed}: the MALA search of each round "
             "(true energies of the stored samples) and the final report.", "",
             "| novelty networks | round | acceptance | energy median | energy max | final EUBO - ELBO | equivariant W2 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for res in results:
        for rd in res["rounds"]:
            lines.append(f"| {res['rnd']} | {rd['round']} | {rd['acceptance']:.3f} | {rd['energy_median']:.1f} | "
                         f"{rd['energy_max']:.1f} | {res['report']['eubo_minus_elbo']:.1f} | "
                         f"{res['report']['equivariant_w2']:.2f} |")
    open(args.out + ".md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
