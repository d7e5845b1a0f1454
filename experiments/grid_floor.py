"""Discretisation floor of time grids: EUBO − ELBO of the exact optimal (Föllmer) drift simulated by
Euler-Maruyama, per target, grid kind, time warp and number of steps.

No learning is involved: `drift=optimal` is the target's own continuous-time optimum
(`Target.optimal_drift`), so EUBO − ELBO on a grid is what that grid costs a perfect learner of the
continuous-time drift. It shows how many steps a target needs, and what the time warp
t = 1 - (1 - u)^rho buys (small steps where the drift is stiff, near the target end).

    python experiments/grid_floor.py                    # gmm40, manywell32, manywell128 (~20 min, one thread)
    python experiments/grid_floor.py --targets gmm40 --samples 2000
Writes experiments/out/grid_floor/grid_floor.{json,md}.
"""
from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):   # run as a file: python experiments/grid_floor.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

NAME = "grid_floor"


def floor(target: str, kind: str, steps: int, warp: float, n: int) -> dict:
    import diffsampler as ds
    from diffsampler.evaluation import evaluate
    tg = ds.targets.get(target)
    s = ds.DiffusionSampler(tg, drift="optimal", time_warp=warp).double()
    t0 = time.perf_counter()
    m = evaluate(s, n=n, steps=steps, grid=kind, n_distance=min(n, 2000)).metrics
    return {"target": target, "grid": kind, "steps": steps, "time_warp": warp, "n": n,
            "elbo": m["elbo"], "eubo": m["eubo"], "gap": m["eubo_minus_elbo"], "log_Z_true": m["log_Z_true"],
            "delta_elbo": m["delta_elbo"], "log_Z_is": m["log_Z_is"], "ess": m["ess"],
            "seconds": time.perf_counter() - t0}


def markdown(rows: list[dict]) -> str:
    return harness.md_table(
        ["target", "grid", "time warp", "steps", "ELBO", "EUBO", "EUBO − ELBO", "log Z − ELBO", "log Z (IS)"],
        [[r["target"], r["grid"], f"{r['time_warp']:g}", r["steps"], f"{r['elbo']:.3f}", f"{r['eubo']:.3f}",
          f"{r['gap']:.3f}", f"{r['delta_elbo']:.3f}", f"{r['log_Z_is']:.3f}"] for r in rows])


def main(argv=None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--targets", nargs="*", default=["gmm40", "manywell32", "manywell128"])
    p.add_argument("--grids", nargs="*", default=["uniform", "random"])
    p.add_argument("--warps", nargs="*", type=float, default=[1.0, 2.0, 3.0])
    p.add_argument("--steps", nargs="*", type=int, default=[10, 20, 50, 100, 200])
    p.add_argument("--samples", type=int, default=4000)
    harness.add_threads(p)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    import torch
    harness.set_threads(a.threads)
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
    out = harness.out_dir(NAME)
    meta = {"command": harness.command(), "machine": harness.machine(), "threads": a.threads, "samples": a.samples}
    harness.write_json(os.path.join(out, "grid_floor.json"), {"meta": meta, "rows": rows})
    harness.write_text(os.path.join(out, "grid_floor.md"),
                       f"Exact optimal drift, Euler-Maruyama, {a.samples} samples per cell (`{meta['command']}`).\n\n"
                       + markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
