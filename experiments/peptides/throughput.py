"""Energy+force evaluations per second of a peptide target's batched path against a plain loop.

    python experiments/peptides/throughput.py --target aldp --batches 256 1024 --workers 1 2

Measured side by side in one run, on the same rows (the shipped structure plus N(0, 0.01^2 nm^2)
noise), the configurations timed in turn, `--repeats` rounds (best kept):
- plain loop: one Context (CPU platform, one thread), for each row setPositions(Quantity in nm),
  getState(energy, forces), values converted with value_in_unit: what a user writes first;
- batched path: `target.log_reward_and_score(x)` on the (B, 3n) tensor (the counted path the
  sampler uses: one Context per worker, no unit objects), with 1 worker and with k spawned workers.
Prints a table and writes JSON (evaluations per second and the ratio to the plain loop).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


def plain_loop(system, x: np.ndarray) -> None:
    import openmm
    from openmm import unit

    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                         {"Threads": "1"})
    for row in x.reshape(x.shape[0], -1, 3):
        ctx.setPositions(row * unit.nanometer)
        st = ctx.getState(getEnergy=True, getForces=True)
        st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)


def interleaved_rates(fns: dict, B: int, repeats: int) -> dict[str, float]:
    """Rows per second of each function, best of `repeats`, the functions timed in turn within each
    repeat (so that a change in the machine's load hits all of them alike)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return {k: B / v for k, v in best.items()}


def measure(name: str, batches: list[int], workers: list[int], repeats: int) -> list[dict]:
    from diffsampler.targets.peptides import make

    targets = {k: make(name) for k in workers}
    for k, t in targets.items():
        t.n_workers = k
    rows = []
    for B in batches:
        x = torch.as_tensor(targets[workers[0]].positions.reshape(1, -1)).repeat(B, 1)
        x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(B), dtype=torch.float64)
        for t in targets.values():      # warm-up (spawns the pools)
            t.log_reward_and_score(x[: 4 * t.n_workers])
        fns = {"plain_loop": lambda x=x: plain_loop(targets[workers[0]].system, x.numpy())}
        fns.update({f"batched_{k}w": (lambda t=t, x=x: t.log_reward_and_score(x)) for k, t in targets.items()})
        row = {"B": B, **interleaved_rates(fns, B, repeats)}
        row.update({f"ratio_{k}w": row[f"batched_{k}w"] / row["plain_loop"] for k in targets})
        rows.append(row)
    for t in targets.values():
        t.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="aldp")
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON file (default: print only)")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = measure(args.target, args.batches, args.workers, args.repeats)
    print(f"{args.target}: energy+force evaluations per second (CPU platform, 1 thread per Context, "
          f"{os.cpu_count()} cores)")
    for r in rows:
        print("  " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"target": args.target, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
