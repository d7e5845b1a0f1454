"""Seconds to evaluate a trained sampler on a uniform grid, with the drift's time context encoded once
per time (the library's path, `sde.trajectories.call_drift`) against once per row (the computation
before it), side by side in one process, alternating, same seeds.

On a grid whose rows all hold the same times (evaluation, `sample`, the EUBO's backward
trajectories), the x-independent time encoder of the MLP and Langevin drifts gives the same output
for every row; encoding it once per time and broadcasting it leaves the values equal to rounding
(tests/test_integrators.py) and removes the encoder's share of the drift's work.

    python experiments/eval_speed.py --targets manywell32 manywell64 --n 4000 --steps 100 --repeats 3

Each target gets a fresh sampler of its default learner (the weights do not change the cost).
Writes experiments/out/eval_speed/eval_speed.{json,md}.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

if __package__ in (None, ""):   # run as a file: python experiments/eval_speed.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

NAME = "eval_speed"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(target_name: str, args) -> dict:
    """Median seconds of sampling (ELBO side) and of the backward log-weights (EUBO side), with the
    time context shared and per row, alternating."""
    import torch

    import diffsampler as ds
    from diffsampler.sde import trajectories
    from diffsampler.sde.integrators import base as integrator_base
    from diffsampler.training.build import build_sampler
    from diffsampler.training.defaults import default_config
    target = ds.targets.get(target_name)
    cfg = default_config(target)
    sampler = build_sampler(target, cfg)
    x_ref = target.sample(args.n)
    shared = trajectories.shared_grid
    times: dict[str, dict[str, list[float]]] = {"shared": {"sample": [], "eubo": []},
                                                "per_row": {"sample": [], "eubo": []}}
    for _ in range(args.repeats):
        for mode in ("per_row", "shared"):
            rule = shared if mode == "shared" else (lambda g: False)
            trajectories.shared_grid = integrator_base.shared_grid = rule
            try:
                torch.manual_seed(0)
                times[mode]["sample"].append(timed(lambda: sampler.sample(args.n, steps=args.steps)))
                torch.manual_seed(1)
                times[mode]["eubo"].append(timed(lambda: sampler.log_w_backward(x_ref, steps=args.steps)))
            finally:
                trajectories.shared_grid = integrator_base.shared_grid = shared
    row = {"target": target_name, "drift": cfg.drift, "width": cfg.width, "depth": cfg.depth,
           "time_features": cfg.time_features, "n": args.n, "steps": args.steps}
    for mode, parts in times.items():
        for part, values in parts.items():
            row[f"{part}_seconds_{mode}"] = statistics.median(values)
    for part in ("sample", "eubo"):
        row[f"{part}_speedup"] = row[f"{part}_seconds_per_row"] / row[f"{part}_seconds_shared"]
    return row


def markdown(out: dict) -> str:
    rows = [[r["target"], f"{r['drift']} {r['width']} x {r['depth']}",
             f"{r['sample_seconds_per_row']:.2f} / {r['sample_seconds_shared']:.2f}", f"{r['sample_speedup']:.2f}x",
             f"{r['eubo_seconds_per_row']:.2f} / {r['eubo_seconds_shared']:.2f}", f"{r['eubo_speedup']:.2f}x"]
            for r in out["rows"]]
    a = out["args"]
    return (f"{out['machine']}; {a['threads']} thread(s); {a['n']} samples x {a['steps']} uniform steps; "
            f"median of {a['repeats']} alternating repeats.\n\n"
            + harness.md_table(["target", "drift", "sample s (per row / shared)", "speed-up",
                                "EUBO s (per row / shared)", "speed-up"], rows))


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--targets", nargs="+", default=["manywell32", "manywell64"])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    harness.add_threads(ap, default=1)
    args = ap.parse_args(argv)
    harness.set_threads(args.threads)
    rows = []
    for target in args.targets:
        rows.append(measure(target, args))
        print(json.dumps(rows[-1]), flush=True)
    m = harness.machine()
    out = {"machine": f"{m['processor']}, {m['cpus']} cores, torch {m['torch']}", "args": vars(args), "rows": rows,
           "command": harness.command()}
    harness.write_results(os.path.join(harness.out_dir(NAME), NAME), out, markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
