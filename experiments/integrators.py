"""Integrators: sample quality against drift evaluations (NFE) for every integrator of
`diffsampler.sde.integrators`, on trained samplers and on Gaussian targets with an exact drift.

1. Trained samplers (GMM-40, Manywell-32, Funnel): ELBO, log Z (IS), ESS and W2 (2000 samples vs
   2000 exact samples) at NFE in {10, 24, 50, 100, 200}. A finished run directory of the target
   under experiments/out/*/runs/ is reused (the longest-trained one); otherwise a small one is
   trained into experiments/out/integrators/runs/integrators_<target>.
2. Picard (parallel-in-time) midpoint: sequential rounds vs quality on a 100-step grid.
3. Dimension: Gaussian targets N(1, 0.5^2 I_d), sigma = 1, exact (Föllmer) drift, d = 8..512. Given
   the integrator's uniform draws the law of x_1 is N(m_a 1, v_a I); with probe noise (one unit
   draw per coordinate, as in tests/test_integrators.py) m_a and v_a are read off exactly and
       W2_c(d)^2 = d E_a[(m_a - m)^2 + (sqrt(v_a) - s)^2]
   (W2 of the coupling that matches the uniform draws; an upper bound on W2, tight as d grows).
   Reported: NFE needed for W2_c <= 0.1 s and its log-log slope in d.
Besides W2 to the target (2000 vs 2000 points: in 10-32 dimensions its sampling floor hides the
integrators' differences) the tables give the mean 1-D marginal W2 to the target and to samples of
the same SDE on a 1000-step Euler grid (the discretisation error alone).

    python experiments/integrators.py     # writes experiments/out/integrators/integrators.{json,md,png}
"""
from __future__ import annotations

import glob
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

if __package__ in (None, ""):   # run as a file: python experiments/integrators.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

import diffsampler as ds  # noqa: E402
from diffsampler.evaluation import ess_fraction, log_z_is, wasserstein2  # noqa: E402
from diffsampler.sde import make_grid  # noqa: E402
from diffsampler.sde.integrators import (EulerMaruyama, ExponentialEuler, PicardMidpoint,  # noqa: E402
                                         ProbabilityFlowHeun, RandomizedMidpoint, RandomizedMidpointODE,
                                         fisher_scale)
from diffsampler.sde.integrators.probe import ProbeNoise  # noqa: E402
from diffsampler.training import load_run  # noqa: E402

NAME = "integrators"
NFES = [10, 24, 50, 100, 200]
INTEGRATORS = {
    "euler_maruyama": EulerMaruyama,
    "exponential": ExponentialEuler,
    "randomized_midpoint": RandomizedMidpoint,
    "randomized_midpoint_is": lambda: RandomizedMidpoint("importance"),
    "probability_flow": ProbabilityFlowHeun,
    "randomized_midpoint_ode": RandomizedMidpointODE,
}
TARGETS = {"gmm40": "gmm40", "manywell32": "manywell32", "funnel": "funnel"}


# -- trained samplers ------------------------------------------------------------------------------
def trained_run(target: str, iterations: int):
    """The longest-trained finished run of `target` under experiments/out/*/runs, else a fresh one:
    SGDS with an AIS searcher, the width sized by dimension (the library's default of 2026-11-25,
    when these figures were made)."""
    best = None
    for rep_path in glob.glob(os.path.join(harness.OUT_ROOT, "*", "runs", "*", "report.json")):
        rep = json.load(open(rep_path))
        if rep.get("target") == target and (best is None or rep.get("iterations", 0) > best[1]):
            best = (os.path.dirname(rep_path), rep.get("iterations", 0))
    if best is not None:
        try:
            return load_run(best[0]), best[0]
        except Exception as e:  # a run written by an older config schema
            print(f"  cannot reuse {best[0]}: {e}")
    out = os.path.join(harness.out_dir(NAME, "runs"), f"integrators_{target}")
    d = ds.targets.get(target).dim
    harness.run_case(target, dict(recipe="sgds", searcher="ais", width=64 if d <= 4 else (128 if d <= 32 else 256),
                                  iterations=iterations, exploration=0.2, exploration_until=0.25, eval_samples=1000,
                                  threads=1), out)
    return load_run(out), out


def marginal_w2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over coordinates of the 1-D W2 between the marginals of x and y (equal sizes)."""
    a, b = torch.sort(x.double(), 0)[0], torch.sort(y.double(), 0)[0]
    return float(((a - b) ** 2).mean(0).sqrt().mean())


def metrics(sim, target, x_true, x_sde=None) -> dict:
    """x_true: exact target samples; x_sde: samples of the same SDE on a 1000-step Euler grid."""
    lw = sim.log_w.double()
    ok = bool(torch.isfinite(sim.x).all())
    m = {"nfe": sim.nfe, "rounds": sim.rounds, "elbo": float(lw.mean()),
         "elbo_se": float(lw.std() / math.sqrt(len(lw))), "log_Z_is": log_z_is(lw), "ess": ess_fraction(lw),
         "w2": wasserstein2(sim.x, x_true) if ok else None,
         "w2_marginal": marginal_w2(sim.x, x_true) if ok else None,
         "w2_marginal_vs_sde": marginal_w2(sim.x, x_sde) if ok and x_sde is not None else None}
    m["delta_log_Z_is"] = None if target.log_Z is None else abs(m["log_Z_is"] - target.log_Z)
    return m


def fine_sde_samples(sampler, n: int, steps: int = 1000) -> torch.Tensor:
    p = next(sampler.parameters())
    torch.manual_seed(123)
    return EulerMaruyama().simulate(sampler, make_grid("uniform", n, steps, dtype=p.dtype, device=p.device)).x


def quality_vs_nfe(sampler, target, n: int, x_sde: torch.Tensor) -> dict:
    x_true = target.sample(n)
    res = {}
    for name, make in INTEGRATORS.items():
        integ = make()
        if hasattr(integ, "calibrate") and integ.calibrate:  # Fisher scale once, counted separately
            integ.scale = fisher_scale(sampler, steps=100)
        rows, p = [], next(sampler.parameters())
        for nfe in NFES:
            steps = max(1, round(nfe / integ.nfe_per_step))
            torch.manual_seed(0)
            with target.counter.use("eval"):
                sim = integ.simulate(sampler, make_grid("uniform", n, steps, dtype=p.dtype, device=p.device))
            rows.append({"steps": steps, **metrics(sim, target, x_true, x_sde)})
        res[name] = {"scale": getattr(integ, "scale", None), "rows": rows}
        print(f"  {name:24s} " + "  ".join(f"{r['nfe']}:{r['elbo']:.2f}/{r['w2']:.2f}" for r in rows), flush=True)
    return res


def picard_rounds(sampler, target, n: int, x_sde: torch.Tensor, steps: int = 100) -> list[dict]:
    x_true = target.sample(n)
    rows = []
    for window in (5, 10):
        for rounds in (1, 2, 3, 4):
            torch.manual_seed(0)
            sim = PicardMidpoint(window, rounds).simulate(sampler, make_grid("uniform", n, steps))
            rows.append({"window": window, "rounds_per_window": rounds, **metrics(sim, target, x_true, x_sde)})
    for em_steps in (20, 100):
        torch.manual_seed(0)
        sim = EulerMaruyama().simulate(sampler, make_grid("uniform", n, em_steps))
        rows.append({"window": 0, "rounds_per_window": 1, **metrics(sim, target, x_true, x_sde)})
    return rows


# -- dimension experiment (analytic drift, probe noise) --------------------------------------------
class FollmerDrift(nn.Module):
    """Exact drift of N(m, s^2 I) under the pinned Brownian reference sigma."""

    needs_score = False

    def __init__(self, sigma: float, m: float, s: float) -> None:
        super().__init__()
        self.s2, self.m, self.a = sigma ** 2, m, sigma ** 2 - s ** 2

    def forward(self, x, t, score=None):
        return ((self.s2 * self.m - self.a * x) / (self.s2 - self.a * t)[:, None])


class StandIn:
    def __init__(self, target, drift, reference) -> None:
        self.target, self.drift, self.reference = target, drift, reference


def per_coordinate_error(integ, steps: int, sigma=1.0, m=1.0, s=0.5, B=1000) -> float:
    """sqrt(E_a[(m_a - m)^2 + (sqrt(v_a) - s)^2]) of x_1 per coordinate (float64)."""
    ref = ProbeNoise(sigma)
    dim = 2 + 2 * steps
    target = ds.targets.from_energy(lambda x: 0.5 * ((x - m) ** 2).sum(-1) / s ** 2, dim=dim)
    x = integ.simulate(StandIn(target, FollmerDrift(sigma, m, s), ref),
                       make_grid("uniform", B, steps, dtype=torch.float64)).x[:, :ref.calls + 1]
    m_a, v_a = x[:, 0], ((x[:, 1:] - x[:, :1]) ** 2).sum(1)
    return float(((m_a - m) ** 2 + (v_a.sqrt() - s) ** 2).mean().sqrt())


def dimension_experiment(dims=(8, 32, 128, 512), eps_rel=0.1, s=0.5) -> dict:
    makers = {"euler_maruyama": EulerMaruyama, "randomized_midpoint": RandomizedMidpoint,
              "randomized_midpoint(theta=0)": lambda: RandomizedMidpoint(theta=0.0),
              "picard_midpoint(4,2)": lambda: PicardMidpoint(4, 2)}
    steps_grid = [2, 4, 8, 16, 32, 64, 128, 256]
    out = {}
    for name, make in makers.items():
        torch.manual_seed(0)
        errs = [per_coordinate_error(make(), N, s=s) for N in steps_grid]
        nfe_per_step = make().nfe_per_step
        need = {}
        for d in dims:
            target_err = eps_rel * s / math.sqrt(d)
            # first crossing below the threshold, interpolated log-log between grid points
            nfe = None
            for (n0, e0), (n1, e1) in zip(zip(steps_grid, errs), zip(steps_grid[1:], errs[1:])):
                if e1 <= target_err < e0 or (e0 <= target_err and nfe is None and n0 == steps_grid[0]):
                    if e0 <= target_err:
                        nfe = n0 * nfe_per_step
                    else:
                        f = (math.log(e0) - math.log(target_err)) / (math.log(e0) - math.log(e1))
                        nfe = math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0))) * nfe_per_step
                    break
            need[d] = nfe
        ok = [d for d in dims if need[d]]
        slope = float(np.polyfit(np.log(ok), np.log([need[d] for d in ok]), 1)[0]) if len(ok) >= 2 else None
        out[name] = {"steps": steps_grid, "per_coordinate_error": errs, "nfe_for_w2": need, "slope": slope}
        print(f"  {name:30s} nfe(d) {need}  slope {slope}", flush=True)
    return {"target": f"N(1, {s}^2 I_d), sigma = 1", "w2_threshold": f"{eps_rel} * s", "dims": list(dims),
            "results": out}


# -- report ----------------------------------------------------------------------------------------
def goal_check(res: dict) -> dict:
    """Randomized midpoint (and, for comparison, the exponential integrator) at 24 NFE vs
    Euler-Maruyama at 100 NFE: ELBO within 0.1 nats and W2 within 5%."""
    out = {}
    for tname, r in res.items():
        em = next(row for row in r["integrators"]["euler_maruyama"]["rows"] if row["nfe"] == 100)
        for name in ("randomized_midpoint", "randomized_midpoint_is", "exponential", "probability_flow",
                     "randomized_midpoint_ode"):
            # the most drift evaluations <= 25 (24 for the SDE integrators, 23 for the ODE ones)
            row = max((row for row in r["integrators"][name]["rows"] if row["nfe"] <= 25), key=lambda q: q["nfe"])
            d_elbo = row["elbo"] - em["elbo"]
            w2_ratio = None if row["w2"] is None or em["w2"] is None else row["w2"] / em["w2"]
            out[f"{tname}/{name}"] = {"elbo_minus_em100": d_elbo, "w2_over_em100": w2_ratio,
                                      "w2_marginal_vs_sde": row["w2_marginal_vs_sde"],
                                      "em100_w2_marginal_vs_sde": em["w2_marginal_vs_sde"],
                                      "holds": bool(d_elbo >= -0.1 and w2_ratio is not None and w2_ratio <= 1.05)}
    return out


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def write_markdown(rep: dict, path: str) -> None:
    L = ["# Integrators: quality vs drift evaluations (NFE)", "",
         f"{rep['n']} samples per cell; W2 against {rep['n']} exact samples; ELBO ± its standard error; "
         "uniform grids; `steps = NFE / nfe_per_step` (the ODE integrators use 1 + 2 (steps - 1)). Weights "
         "are exact for each integrator's own (augmented) kernels. The SDE integrators' ELBO is a path-space "
         "bound; the probability-flow integrators' is the marginal bound E_q[log R(x) - log q(x)] with the "
         "exact density q of their terminal samples: both are lower bounds on log Z.", ""]
    for tname, r in rep["trained"].items():
        L += [f"## {tname} (log Z = {r['log_Z']}; run {r['run_dir']})", "",
              f"Marginal W2 of the SDE itself (1000 Euler steps) to the target: {r['w2_marginal_sde_vs_target']:.3f}.", "",
              "| integrator | NFE | steps | ELBO | log Z (IS) | ESS | W2 | marginal W2 | marginal W2 to SDE |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, ir in r["integrators"].items():
            lab = name + (f" (scale {ir['scale']:.3g})" if ir["scale"] else "")
            for row in ir["rows"]:
                w2 = "n/a" if row["w2"] is None else f"{row['w2']:.3f}"
                L.append(f"| {lab} | {row['nfe']} | {row['steps']} | {row['elbo']:.3f} ± {row['elbo_se']:.3f} | "
                         f"{row['log_Z_is']:.3f} | {row['ess']:.3f} | {w2} | {_f(row['w2_marginal'])} | "
                         f"{_f(row['w2_marginal_vs_sde'])} |")
        L.append("")
    L += ["## Goal: randomized midpoint at <= 25 NFE vs Euler-Maruyama at 100 NFE", "",
          "| case | ELBO − ELBO(EM,100) | W2 / W2(EM,100) | marginal W2 to SDE (EM,100 alongside) | "
          "ELBO within 0.1 and W2 within 5% |", "| --- | --- | --- | --- | --- |"]
    for k, g in rep["goal"].items():
        w = "n/a" if g["w2_over_em100"] is None else f"{g['w2_over_em100']:.3f}"
        L.append(f"| {k} | {g['elbo_minus_em100']:+.3f} | {w} | {_f(g['w2_marginal_vs_sde'])} "
                 f"({_f(g['em100_w2_marginal_vs_sde'])}) | {'yes' if g['holds'] else 'no'} |")
    p = rep["picard"]
    L += ["", f"## Picard midpoint on {p['target']}: sequential rounds vs quality (100-step grid)", "",
          "| window | rounds per window | sequential rounds | NFE | ELBO | ESS | W2 | marginal W2 to SDE |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in p["rows"]:
        w = "EM" if row["window"] == 0 else row["window"]
        L.append(f"| {w} | {row['rounds_per_window']} | {row['rounds']} | {row['nfe']} | {row['elbo']:.3f} | "
                 f"{row['ess']:.3f} | {_f(row['w2'])} | {_f(row['w2_marginal_vs_sde'])} |")
    dm = rep["dimension"]
    L += ["", f"## Dimension: NFE for W2 ≤ {dm['w2_threshold']} on {dm['target']} (exact drift)", "",
          "| integrator | " + " | ".join(f"d = {d}" for d in dm["dims"]) + " | log-log slope |",
          "| --- | " + " | ".join("---" for _ in dm["dims"]) + " | --- |"]
    for name, r in dm["results"].items():
        cells = ["n/a" if r["nfe_for_w2"][d] is None else f"{r['nfe_for_w2'][d]:.0f}" for d in dm["dims"]]
        L.append(f"| {name} | " + " | ".join(cells) + f" | {r['slope']:.3f} |" if r["slope"] is not None else
                 f"| {name} | " + " | ".join(cells) + " | n/a |")
    L += ["", f"Wall time {rep['seconds']:.0f} s."]
    harness.write_text(path, "\n".join(L))


def plot(rep: dict, path: str) -> None:
    names = list(rep["trained"])
    with harness.figure(path, 2, len(names) + 1, figsize=(4.2 * (len(names) + 1), 7.5)) as (fig, ax):
        _draw(rep, names, ax)


def _draw(rep: dict, names: list[str], ax) -> None:
    for j, tname in enumerate(names):
        r = rep["trained"][tname]
        for name, ir in r["integrators"].items():
            nf = [row["nfe"] for row in ir["rows"]]
            ax[0, j].plot(nf, [row["elbo"] for row in ir["rows"]], "o-", label=name)
            ax[1, j].plot(nf, [row["w2_marginal_vs_sde"] if row["w2_marginal_vs_sde"] is not None else np.nan
                               for row in ir["rows"]], "o-", label=name)
        if r["log_Z"] is not None:
            ax[0, j].axhline(r["log_Z"], color="k", ls="--", lw=0.8)
        ax[0, j].set_title(f"{tname}: ELBO")
        ax[1, j].set_title(f"{tname}: marginal W2 to the SDE")
        ax[1, j].set_yscale("log")
        for a in ax[:, j]:
            a.set_xscale("log")
            a.set_xlabel("NFE")
        lo = min(row["elbo"] for ir in r["integrators"].values() for row in ir["rows"] if row["nfe"] >= 24)
        ax[0, j].set_ylim(lo - 0.5, (r["log_Z"] if r["log_Z"] is not None else lo) + 0.5)
    ax[0, 0].legend(fontsize=7)
    dm = rep["dimension"]
    for name, r in dm["results"].items():
        ds_ = [d for d in dm["dims"] if r["nfe_for_w2"][d]]
        ax[0, -1].plot(ds_, [r["nfe_for_w2"][d] for d in ds_], "o-", label=f"{name} (slope {r['slope']:.2f})")
    ax[0, -1].set_xscale("log")
    ax[0, -1].set_yscale("log")
    ax[0, -1].set_xlabel("dimension d")
    ax[0, -1].set_title(f"NFE for W2 <= {dm['w2_threshold']}")
    ax[0, -1].legend(fontsize=7)
    p = rep["picard"]
    for w in (5, 10):
        rows = [row for row in p["rows"] if row["window"] == w]
        ax[1, -1].plot([row["rounds"] for row in rows], [row["w2_marginal_vs_sde"] for row in rows], "o-",
                       label=f"Picard window {w}")
    em = [row for row in p["rows"] if row["window"] == 0]
    ax[1, -1].plot([row["rounds"] for row in em], [row["w2_marginal_vs_sde"] for row in em], "s--", label="Euler-Maruyama")
    ax[1, -1].set_xlabel("sequential rounds")
    ax[1, -1].set_title(f"{p['target']}: marginal W2 to the SDE vs rounds")
    ax[1, -1].legend(fontsize=7)


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--iterations", type=int, default=2500, help="training iterations when no cached run exists")
    ap.add_argument("--targets", nargs="*", default=list(TARGETS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = harness.out_dir(NAME)
    t0 = time.perf_counter()
    rep = {"n": args.n, "nfes": NFES, "trained": {}}
    samplers = {}
    for tname in args.targets:
        run, run_dir = trained_run(TARGETS[tname], args.iterations)
        print(f"{tname}: run {run_dir}", flush=True)
        sampler, target = run.sampler.eval(), run.target
        x_sde = fine_sde_samples(sampler, args.n)
        samplers[tname] = (sampler, target, x_sde)
        rep["trained"][tname] = {"run_dir": os.path.relpath(run_dir, harness.OUT_ROOT), "log_Z": target.log_Z,
                                 "w2_marginal_sde_vs_target": marginal_w2(x_sde, target.sample(args.n)),
                                 "integrators": quality_vs_nfe(sampler, target, args.n, x_sde)}
    pick = "manywell32" if "manywell32" in samplers else next(iter(samplers))
    print(f"Picard rounds on {pick}", flush=True)
    sampler, target, x_sde = samplers[pick]
    rep["picard"] = {"target": pick, "rows": picard_rounds(sampler, target, args.n, x_sde)}
    print("dimension experiment", flush=True)
    with torch.no_grad():
        rep["dimension"] = dimension_experiment()
    rep["goal"] = goal_check(rep["trained"])
    rep["seconds"] = time.perf_counter() - t0
    harness.write_json(os.path.join(out, "integrators.json"), rep)
    write_markdown(rep, os.path.join(out, "integrators.md"))
    plot(rep, os.path.join(out, "integrators.png"))
    print(json.dumps(rep["goal"], indent=1))
    print(f"wrote {out}/integrators.{{json,md,png}} in {rep['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
