"""Reference samples for a particle target by long MCMC (checked by the virial identity), and a trained
run evaluated against them.

The shared data has reference samples for DW-4 and LJ-13 but none for LJ-55, so the LJ-55 gap,
W2 and energy-W2 cannot be measured against the paper's set. This script makes our own:

    python experiments/particle_reference.py make --target lj55 [--chains 500 --burnin 20000
        --steps 20000 --thin 2000 --temperatures 1 1.2 1.5 2] [--name lj55_mcmc_reference]

runs MALA chains (parallel tempering when more than one temperature is given) from random
centred configurations, discards `burnin` steps (the first fifth adapting each chain's step
size), records every `thin`-th state of the T = 1 chains, and checks equilibrium with the virial
identity E_p[x . grad E] = (n - 1) D (exact for a translation-invariant energy on the
centre-of-mass-free subspace; 162 for LJ-55), per recorded sweep, so a drift shows. With
`--target lj13` the same procedure can be compared with the DEM reference set (`--check`:
energy and distance W1 between the two sets). Writes experiments/out/particle_reference/<name>.npy
(N, dim) and .json.

    python experiments/particle_reference.py eval --run RUN_DIR --reference FILE.npy [--n 2000]
        [--name NAME]

evaluates a trained run (ELBO, EUBO on the reference samples, log Z (IS), W2, equivariant W2,
energy and distance W1/W2, histograms) with FILE as the target's reference set, and writes
experiments/out/particle_reference/<name>.{json,md,png}. The reference set is named in every output: it is ours, not
the paper's, so numbers against it are comparable with the paper's only as far as the two sets agree.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch

if __package__ in (None, ""):   # run as a file: python experiments/particle_reference.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

import diffsampler as ds  # noqa: E402
from diffsampler.evaluation.particles import interatomic_distances, wasserstein_1d  # noqa: E402
from diffsampler.search.energy import target_potential  # noqa: E402
from diffsampler.search.mala import MALA, run_mala  # noqa: E402
from diffsampler.search.tempering import run_tempering  # noqa: E402

NAME = "particle_reference"


def virial(target, x: torch.Tensor) -> torch.Tensor:
    """x . grad E(x) per sample, (B,) (counted energy calls)."""
    _, score = target.log_reward_and_score(x)
    return -(x * score).sum(1)


def make(a) -> None:
    torch.manual_seed(a.seed)
    t = ds.targets.get(a.target)
    if not hasattr(t, "n_particles"):
        raise SystemExit(f"{a.target}: not a particle target")
    n, D = t.n_particles, t.spatial_dim
    x0 = t.project(a.init_std * torch.randn(a.chains, t.dim, dtype=torch.float64)).float()
    n_adapt = a.burnin // 5
    t0 = time.perf_counter()
    if len(a.temperatures) > 1:
        res = run_tempering(t, x0, a.temperatures, a.burnin - n_adapt + a.steps, kernel=MALA(a.step_size),
                            n_adapt=n_adapt, thin=a.thin)
        acc = {"mala": [float(v) for v in res.acceptance_rate], "swap": [float(v) for v in res.swap_rate]}
        xs, es = res.x, res.energy
    else:
        res = run_mala(target_potential(t), x0, a.burnin - n_adapt + a.steps, step_size=a.step_size, n_adapt=n_adapt,
                       thin=a.thin)
        acc, xs, es = res.acceptance_rate, res.x, res.energy
    seconds = time.perf_counter() - t0
    skip = (a.burnin - n_adapt) // a.thin          # recorded sweeps still inside the burn-in
    xs, es = xs[skip:], es[skip:]
    sweeps = []
    for k in range(xs.shape[0]):                   # one row per recorded sweep: equilibrium drift shows
        v = virial(t, xs[k])
        sweeps.append({"sweep": k, "energy_mean": float(es[k].mean()), "virial_mean": float(v.mean()),
                       "virial_se": float(v.std() / len(v) ** 0.5)})
    x = t.project(xs.reshape(-1, t.dim))
    v = virial(t, x)
    out = {"target": a.target, "chains": a.chains, "burnin": a.burnin, "adapting_steps": n_adapt, "steps": a.steps,
           "thin": a.thin, "temperatures": a.temperatures, "init_std": a.init_std, "seed": a.seed,
           "n_samples": x.shape[0], "acceptance": acc, "seconds": seconds,
           "energy_mean": float(es.mean()), "energy_sd": float(es.std()),
           "virial_mean": float(v.mean()), "virial_se_naive": float(v.std() / len(v) ** 0.5),
           "virial_exact": (n - 1) * D, "sweeps": sweeps}
    if a.check:
        if not t.has_samples:
            raise SystemExit(f"--check: {a.target} has no reference samples to compare with")
        ref = t.reference_samples()
        e, e_ref = t.energy(x), t.energy(ref)
        out["check_against"] = str(t.data_path)
        out["check"] = {"energy_mean_ref": float(e_ref.mean()),
                        "energy_w1": wasserstein_1d(e, e_ref, 1), "energy_w2": wasserstein_1d(e, e_ref, 2),
                        "distance_w1": wasserstein_1d(interatomic_distances(x, n, D), interatomic_distances(ref, n, D), 1)}
    base = os.path.join(harness.out_dir(NAME), a.name)
    np.save(base + ".npy", x.double().numpy())
    harness.write_json(base + ".json", out)
    print(json.dumps({k: v for k, v in out.items() if k != "sweeps"}, indent=1))
    for s in sweeps:
        print(f"sweep {s['sweep']:3d}: energy mean {s['energy_mean']:9.3f}  virial {s['virial_mean']:8.2f} "
              f"± {s['virial_se']:.2f} (exact {(n - 1) * D})")


def evaluate_run(a) -> None:
    from diffsampler.evaluation.evaluator import evaluate
    from diffsampler.training import load_run
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    run = load_run(a.run)
    t = run.target
    ref = torch.as_tensor(np.load(a.reference))
    t.use_reference_samples(ref, source=a.reference)
    ev = evaluate(run.sampler, a.n, steps=a.steps)
    m = {k: v for k, v in ev.metrics.items() if isinstance(v, (int, float, str)) or v is None}
    m.update({"run": a.run, "reference": a.reference, "n_reference": int(ref.shape[0])})
    out = harness.out_dir(NAME)
    base = os.path.join(out, a.name)
    harness.write_json(base + ".json", m)
    t.extra_plots(ev.x, ev.x_true, out, title=f"{os.path.basename(os.path.normpath(a.run))} "
                  f"vs {os.path.basename(a.reference)}")
    os.replace(os.path.join(out, "histograms.png"), base + ".png")
    keys = ["elbo", "eubo", "eubo_minus_elbo", "log_Z_is", "ess", "w2", "equivariant_w2", "energy_w2",
            "energy_w1", "distance_w1", "energy_mean", "energy_mean_ref"]
    md = [f"Run `{a.run}` against `{a.reference}` ({ref.shape[0]} samples; our MCMC set, not the paper's).", "",
          "| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys),
          "| " + " | ".join("—" if m.get(k) is None else f"{m[k]:.3f}" for k in keys) + " |"]
    harness.write_text(base + ".md", "\n".join(md))
    print("\n".join(md))


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="long MCMC reference samples")
    mk.add_argument("--target", default="lj55")
    mk.add_argument("--chains", type=int, default=500)
    mk.add_argument("--burnin", type=int, default=20000)
    mk.add_argument("--steps", type=int, default=20000)
    mk.add_argument("--thin", type=int, default=2000)
    mk.add_argument("--temperatures", type=float, nargs="+", default=[1.0])
    mk.add_argument("--step-size", type=float, default=1e-4)
    mk.add_argument("--init-std", type=float, default=1.0)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--check", action="store_true", help="compare with the target's own reference set")
    mk.add_argument("--name", default=None)
    ev = sub.add_parser("eval", help="evaluate a trained run against a reference file")
    ev.add_argument("--run", required=True)
    ev.add_argument("--reference", required=True)
    ev.add_argument("--n", type=int, default=2000)
    ev.add_argument("--steps", type=int, default=100)
    ev.add_argument("--seed", type=int, default=1)
    ev.add_argument("--name", default=None)
    a = ap.parse_args(argv)
    if a.cmd == "make":
        if a.burnin < 0 or a.steps <= 0 or a.thin <= 0 or a.chains <= 0:
            ap.error("need chains, steps, thin > 0 and burnin >= 0")
        a.name = a.name or f"{a.target}_mcmc_reference"
        make(a)
    else:
        a.name = a.name or f"{os.path.basename(os.path.normpath(a.run))}_vs_{os.path.splitext(os.path.basename(a.reference))[0]}"
        evaluate_run(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
