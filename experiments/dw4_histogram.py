"""DW-4 energy histogram of a trained sampler against the reference samples: raw, importance-weighted
and MALA-corrected samples, with energy W1 / W2 to the reference.

Draws N samples with their log-weights (Euler-Maruyama, 100 uniform steps, or `--integrator NAME`
and `--steps K`; log w is exact for each integrator's kernels), and compares the energy distribution with the reference set three ways: raw samples,
the self-normalised importance estimate of the mean energy, and N samples resampled in proportion
to w (multinomial). With `--corrector-steps K [K ...]` it adds, for each K, the same raw samples
moved by K MALA steps on the target (`DiffusionSampler.correct`; K + 1 energy-and-gradient calls per
sample), so the cost of matching the histogram without weights is on the table.
Writes experiments/out/dw4_histogram/<name>.{json,md,png} (default name dw4_energy_histogram).

    python experiments/dw4_histogram.py --run RUN_DIR [--n 10000] [--name NAME] [--corrector-steps 10 100]
        [--steps 500 | --integrator randomized_midpoint_is --steps 50]
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
from scipy.stats import wasserstein_distance

if __package__ in (None, ""):   # run as a file: python experiments/dw4_histogram.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

from diffsampler.evaluation.particles import wasserstein_1d  # noqa: E402
from diffsampler.training import load_run  # noqa: E402

NAME = "dw4_histogram"


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--run", required=True, help="a trained dw4 run directory")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--integrator", default="euler_maruyama",
                    help="SDE integrator for sampling (a name in diffsampler.sde.INTEGRATORS; log w exact for each)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name", default="dw4_energy_histogram", help="output file name (without extension)")
    ap.add_argument("--corrector-steps", type=int, nargs="*", default=[],
                    help="also report the raw samples after K MALA steps on the target, for each K")
    a = ap.parse_args(argv)
    if any(k <= 0 for k in a.corrector_steps):
        ap.error(f"--corrector-steps {a.corrector_steps}: each K must be a positive number of MALA steps")
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    run = load_run(a.run)
    t = run.target
    before = t.counter.total
    x, lw = run.sampler.sample(a.n, steps=a.steps, integrator=a.integrator)
    sample_calls = (t.counter.total - before) / a.n
    e = t.energy(x).double()
    e_ref = t.energy(t.sample(a.n)).double()
    w = torch.softmax(lw.double(), 0)
    idx = torch.multinomial(w, a.n, replacement=True)
    out = {"run": a.run, "n": a.n, "steps": a.steps, "integrator": a.integrator,
           "energy_calls_per_sample": sample_calls, "ess": float(1 / (w ** 2).sum()),
           "ref_energy_mean": float(e_ref.mean()), "raw_energy_mean": float(e.mean()),
           "snis_energy_mean": float((w * e).sum()),
           "raw_energy_w1": wasserstein_distance(e.numpy(), e_ref.numpy()),
           "raw_energy_w2": wasserstein_1d(e, e_ref, p=2),
           "resampled_energy_w1": wasserstein_distance(e[idx].numpy(), e_ref.numpy()),
           "resampled_energy_w2": wasserstein_1d(e[idx], e_ref, p=2),
           "distinct_resampled": int(idx.unique().numel()), "corrected": []}
    corrected = {}
    for k in a.corrector_steps:   # the same raw samples each time, so the rows differ only by K
        before = t.counter.total
        xk = run.sampler.correct(x, k)
        ek = t.energy(xk).double()
        corrected[k] = ek
        out["corrected"].append({"steps": k, "energy_calls_per_sample": (t.counter.total - before) / a.n - 1,
                                 "energy_mean": float(ek.mean()),
                                 "energy_w1": wasserstein_distance(ek.numpy(), e_ref.numpy()),
                                 "energy_w2": wasserstein_1d(ek, e_ref, p=2)})
    base = os.path.join(harness.out_dir(NAME), a.name)
    harness.write_json(base + ".json", out)
    md = ["| samples | energy mean | energy W1 / W2 to reference |", "| --- | --- | --- |",
          f"| reference ({a.n}) | {out['ref_energy_mean']:.2f} | 0 |",
          f"| sampler, raw ({a.n}) | {out['raw_energy_mean']:.2f} | {out['raw_energy_w1']:.3f} / "
          f"{out['raw_energy_w2']:.3f} |",
          f"| sampler, importance-weighted (ESS {out['ess']:.0f}) | {out['snis_energy_mean']:.2f} | "
          f"{out['resampled_energy_w1']:.3f} / {out['resampled_energy_w2']:.3f} (resampled) |"]
    md += [f"| sampler, raw, then {c['steps']} MALA steps ({c['energy_calls_per_sample']:.0f} energy calls per sample) | "
           f"{c['energy_mean']:.2f} | {c['energy_w1']:.3f} / {c['energy_w2']:.3f} |" for c in out["corrected"]]
    harness.write_text(base + ".md", "\n".join(md))
    with harness.figure(base + ".png", figsize=(6, 4)) as (fig, ax):
        bins = np.linspace(-28, -8, 100)
        ax.hist(e_ref.numpy(), bins, density=True, histtype="step", lw=2, label="reference")
        ax.hist(e.clamp(max=-8.1).numpy(), bins, density=True, histtype="step", lw=2, label="sampler, raw (clipped)")
        ax.hist(e[idx].clamp(max=-8.1).numpy(), bins, density=True, histtype="step", lw=2,
                label=f"sampler, importance-resampled (ESS {out['ess']:.0f})")
        for k, ek in corrected.items():
            ax.hist(ek.clamp(max=-8.1).numpy(), bins, density=True, histtype="step", lw=1.5,
                    label=f"sampler, raw + {k} MALA steps")
        ax.set_xlabel("energy")
        ax.legend(fontsize=7)
        ax.set_title(f"DW-4 energy: {os.path.basename(os.path.normpath(a.run))}")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
