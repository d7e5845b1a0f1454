"""How far a trained sampler's drift is from the exact Föllmer drift, per time t (issue: particles).

The optimal drift of the pinned-Brownian reference (scale sigma) is
    mu*(x, t) = E[sigma^2 grad log p(Y) + Y | X_t = x],   Y | X_t = x  ~  p(y) N(y; x / t, sigma^2 (1 - t) / t I)
(`Target.optimal_drift`). For targets without a closed form it is estimated here by self-normalised
importance sampling: M draws y_k ~ N(x / t, sigma^2 (1 - t) / t I) (projected onto the reference's
subspace, e.g. centre-of-mass free), weights w_k ∝ R(y_k), mu* ≈ sum_k w_k (sigma^2 grad log R(y_k) + y_k);
the weights' ESS is reported so unreliable times show. States x are drawn from the optimal process's
own marginal at t, X_t = t Y + sigma sqrt(t (1 - t)) xi with Y from the target's reference samples.

Per t it reports the relative error |mu - mu*|^2 / |mu*|^2 and the coefficient
beta = <mu, mu*> / |mu*|^2 (beta < 1: the learned drift is too weak along mu*, e.g. it contracts the
stiff directions too little, so samples come out too spread and too high in energy).
Writes benchmarks/out/<name>.{json,md,png}.

    python benchmarks/drift_error.py --run benchmarks/out/runs/dw4_deep2_ft [--run ...] [--states 256] [--mc 2048]
"""
from __future__ import annotations

import argparse
import json
import os

import matplotlib
import torch

from diffsampler.sde import forward_rollout
from diffsampler.training import load_run

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def mc_follmer_drift(target, reference, x: torch.Tensor, t: float, mc: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-normalised IS estimate of mu*(x, t) (B, d) and the ESS of its weights (B,)."""
    B, d = x.shape
    s2 = reference.sigma ** 2
    noise = reference.project(torch.randn(B * mc, d, generator=generator, dtype=x.dtype))
    y = (x / t).repeat_interleave(mc, 0) + (s2 * (1 - t) / t) ** 0.5 * noise
    log_r, score = target.log_reward_and_score(y)
    w = torch.softmax(log_r.reshape(B, mc).double(), 1).to(x.dtype)
    value = (s2 * score + y).reshape(B, mc, d)
    return (w[..., None] * value).sum(1), 1.0 / (w.double() ** 2).sum(1)


@torch.no_grad()
def switched_samples(run, t_switch: float, n: int, steps: int, mc: int, generator: torch.Generator) -> torch.Tensor:
    """n samples (n, d): the learned sampler's own rollout (Euler-Maruyama, its warped uniform grid of
    `steps` steps) up to the first grid time >= t_switch, then Euler-Maruyama with the Monte Carlo
    Föllmer drift mu* to t = 1. Where the learned drift errs shows as how much of the terminal energy
    excess the swap removes (t_switch > 1: the learned drift throughout)."""
    s = run.sampler
    grid = s.make_grid("uniform", n, steps)
    k = int((grid[0] < t_switch).sum()) if t_switch <= 1 else steps
    x = forward_rollout(s, grid[:, :k + 1]).x[:, -1]
    ref = s.reference
    for j in range(k, steps):
        t, h = float(grid[0, j]), float(grid[0, j + 1] - grid[0, j])
        mu = mc_follmer_drift(s.target, ref, x, t, mc, generator)[0]
        x = x + h * ref.project(mu) + ref.sigma * h ** 0.5 * ref.project(
            torch.randn(x.shape, generator=generator, dtype=x.dtype))
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="a trained run directory (repeatable)")
    ap.add_argument("--times", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999])
    ap.add_argument("--states", type=int, default=256, help="states x per time")
    ap.add_argument("--mc", type=int, default=2048, help="Monte Carlo draws per state for mu*")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="drift_error")
    ap.add_argument("--switch-at", type=float, nargs="*", default=[],
                    help="also sample the first run with the learned drift up to t_s, then mu*, for each t_s "
                         "(> 1: learned throughout) and report the terminal energies against the reference")
    ap.add_argument("--samples", type=int, default=1000, help="samples per --switch-at row")
    ap.add_argument("--steps", type=int, default=100, help="Euler-Maruyama steps of the --switch-at rows")
    a = ap.parse_args()
    if any(not 0 < t < 1 for t in a.times):
        ap.error(f"--times {a.times}: each t must lie in (0, 1)")
    torch.set_num_threads(2)
    runs = {os.path.basename(os.path.normpath(r)): load_run(r) for r in a.run}
    first = next(iter(runs.values()))
    target, reference = first.target, first.sampler.reference
    if not target.has_samples:
        raise SystemExit(f"target {target.name!r} has no reference samples to draw X_t from")
    g = torch.Generator().manual_seed(a.seed)
    rows = []
    for t in a.times:
        y = reference.project(target.sample(a.states))
        x = t * y + reference.sigma * (t * (1 - t)) ** 0.5 * reference.project(
            torch.randn(y.shape, generator=g, dtype=y.dtype))
        mu_star, ess = mc_follmer_drift(target, reference, x, t, a.mc, g)
        row = {"t": t, "mc_ess_median": float(ess.median()), "mu_star_rms": float(mu_star.pow(2).sum(1).mean().sqrt())}
        tt = torch.full((x.shape[0],), t, dtype=x.dtype)
        for name, run in runs.items():
            s = run.sampler
            with torch.no_grad():
                score = target.score(x) if getattr(s.drift, "needs_score", False) else None
                mu = s.drift(x, tt, score)
            den = mu_star.pow(2).sum()
            row[name] = {"rel_err": float((mu - mu_star).pow(2).sum() / den),
                         "beta": float((mu * mu_star).sum() / den)}
        rows.append(row)
        print(f"t={t}: " + "; ".join(f"{n} beta {row[n]['beta']:.3f} rel.err {row[n]['rel_err']:.3f}"
                                      for n in runs) + f" (MC ESS median {row['mc_ess_median']:.0f} of {a.mc})")
    switched = []
    if a.switch_at:
        from scipy.stats import wasserstein_distance
        e_ref = target.energy(target.sample(10000)).double()
        for ts in a.switch_at:
            torch.manual_seed(a.seed)   # the same rollout noise up to the switch in every row
            e = target.energy(switched_samples(first, ts, a.samples, a.steps, a.mc, g)).double()
            switched.append({"t_switch": ts, "energy_mean": float(e.mean()), "ref_energy_mean": float(e_ref.mean()),
                             "energy_w1": wasserstein_distance(e.numpy(), e_ref.numpy())})
            print(f"learned drift to t={ts}, then mu*: energy mean {switched[-1]['energy_mean']:.3f} "
                  f"(reference {switched[-1]['ref_energy_mean']:.3f}), W1 {switched[-1]['energy_w1']:.3f}", flush=True)
    os.makedirs(OUT, exist_ok=True)
    json.dump({"runs": a.run, "states": a.states, "mc": a.mc, "rows": rows, "switched": switched},
              open(os.path.join(OUT, f"{a.name}.json"), "w"), indent=1)
    names = list(runs)
    md = ["| t | MC ESS (median) | " + " | ".join(f"{n}: beta / rel. err." for n in names) + " |",
          "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    md += [f"| {r['t']} | {r['mc_ess_median']:.0f} | " +
           " | ".join(f"{r[n]['beta']:.3f} / {r[n]['rel_err']:.3f}" for n in names) + " |" for r in rows]
    if switched:
        md += ["", f"| drift: learned up to t_s, then mu* ({a.samples} samples, {a.steps} steps) | energy mean "
               f"(reference {switched[0]['ref_energy_mean']:.2f}) | energy W1 |", "| --- | --- | --- |"]
        md += [f"| t_s = {r['t_switch']} | {r['energy_mean']:.3f} | {r['energy_w1']:.3f} |" for r in switched]
    open(os.path.join(OUT, f"{a.name}.md"), "w").write("\n".join(md) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    ts = [r["t"] for r in rows]
    for n in names:
        axes[0].plot(ts, [r[n]["beta"] for r in rows], marker="o", label=n)
        axes[1].plot(ts, [r[n]["rel_err"] for r in rows], marker="o", label=n)
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set(xlabel="t", ylabel="beta = <mu, mu*> / |mu*|^2")
    axes[1].set(xlabel="t", ylabel="|mu - mu*|^2 / |mu*|^2", yscale="log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{target.name}: learned drift against the Monte Carlo Föllmer drift")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, f"{a.name}.png"), dpi=110)
    print("\n".join(md))


if __name__ == "__main__":
    main()
