"""Discretisation floor of time grids: the exact optimal (Föllmer) drift, simulated by Euler-Maruyama.

No learning is involved: `drift=optimal` is the target's own continuous-time optimum
(`Target.optimal_drift`), so EUBO - ELBO on a grid is what that grid costs a perfect learner of the
continuous-time drift. It shows how many steps a target needs, and what the time warp
t = 1 - (1 - u)^rho buys (small steps where the drift is stiff, near the target end).

    python benchmarks/grid_floor.py                    # gmm40, manywell32, manywell128
    python benchmarks/grid_floor.py --targets gmm40 --samples 2000
Writes benchmarks/out/grid_floor.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

import diffsampler as ds
from diffsampler.evaluation import evaluate
from diffsampler.training.checkpoint import write_json

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def floor(target: str, kind: str, steps: int, warp: float, n: int) -> dict:
    tg = ds.targets.get(target)
    s = ds.DiffusionSampler(tg, drift="optimal", time_warp=warp).double()
    t0 = time.perf_counter()
    m = evaluate(s, n=n, steps=steps, grid=kind, n_distance=min(n, 2000)).metrics
    return {"target": target, "grid": kind, "steps": steps, "time_warp": warp, "n": n,
            "elbo": m["elbo"], "eubo": m["eubo"], "gap": m["eubo_minus_elbo"], "log_Z_true": m["log_Z_true"],
            "delta_elbo": m["delta_elbo"], "log_Z_is": m["log_Z_is"], "ess": m["ess"],
            "seconds": time.perf_counter() - t0}


def markdown(rows: list[dict]) -> str:
    out = ["| target | grid | time warp | steps | ELBO | EUBO | EUBO − ELBO | log Z − ELBO | log Z (IS) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['target']} | {r['grid']} | {r['time_warp']:g} | {r['steps']} | {r['elbo']:.3f} | "
                   f"{r['eubo']:.3f} | {r['gap']:.3f} | {r['delta_elbo']:.3f} | {r['log_Z_is']:.3f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="*", default=["gmm40", "manywell32", "manywell128"])
    p.add_argument("--grids", nargs="*", default=["uniform", "random"])
    p.add_argument("--warps", nargs="*", type=float, default=[1.0, 2.0, 3.0])
    p.add_argument("--steps", nargs="*", type=int, default=[10, 20, 50, 100, 200])
    p.add_argument("--samples", type=int, default=4000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rows = []
    for target in a.targets:
        for kind in a.grids:
            for warp in a.warps:
                for steps in a.steps:
                    r = floor(target, kind, steps, warp, a.samples)
                    rows.append(r)
                    print(f"{target:12s} {kind:8s} warp {warp:g} N={steps:4d}: ELBO {r['elbo']:.3f} "
                          f"EUBO {r['eubo']:.3f} gap {r['gap']:.3f} ({r['seconds']:.1f} s)", flush=True)
    os.makedirs(OUT, exist_ok=True)
    meta = {"command": " ".join(["python", "benchmarks/grid_floor.py"] + sys.argv[1:]), "machine": platform.processor()
            or platform.machine(), "torch": torch.__version__, "threads": a.threads, "samples": a.samples}
    write_json(os.path.join(OUT, "grid_floor.json"), {"meta": meta, "rows": rows})
    with open(os.path.join(OUT, "grid_floor.md"), "w") as f:
        f.write(f"Exact optimal drift, Euler-Maruyama, {a.samples} samples per cell "
                f"(`{meta['command']}`).\n\n" + markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
