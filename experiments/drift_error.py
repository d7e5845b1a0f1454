"""How far a trained sampler's drift is from the exact Föllmer drift, per time t: relative error and
the coefficient along the optimum, with a Monte Carlo (SNIS or MCMC) estimate of the optimal drift.

The optimal drift of the pinned-Brownian reference (scale sigma) is
    mu*(x, t) = E[sigma^2 grad log p(Y) + Y | X_t = x],   Y | X_t = x  ~  p(y) N(y; x / t, sigma^2 (1 - t) / t I)
(`Target.optimal_drift`). For targets without a closed form it is estimated here by self-normalised
importance sampling: M draws y_k ~ N(x / t, sigma^2 (1 - t) / t I) (projected onto the reference's
subspace, e.g. centre-of-mass free), weights w_k ∝ R(y_k), mu* ≈ sum_k w_k (sigma^2 grad log R(y_k) + y_k);
the weights' ESS is reported so unreliable times show. That estimate is noisy and biased where the
ESS is small (t <= 0.85 on DW-4: it differs from the exact drift by more than the learners do), so
`--estimator mcmc` resamples `--chains` draws per state from those proposals and runs MALA on the
posterior U(y) = E(y) + ||y - x/t||^2 / (2 sigma^2 (1 - t) / t), averaging over chains and steps;
it also returns the Tweedie form (E[Y | x] - x) / (1 - t) of the same mu* as a consistency check
(MALA does not hop between posterior modes, so their weights come from the resampling, i.e. from
the proposals; more proposals, better weights). States x are drawn from the optimal process's
own marginal at t, X_t = t Y + sigma sqrt(t (1 - t)) xi with Y from the target's reference samples.

Per t it reports the relative error |mu - mu*|^2 / |mu*|^2 and the coefficient
beta = <mu, mu*> / |mu*|^2 (beta < 1: the learned drift is too weak along mu*, e.g. it contracts the
stiff directions too little, so samples come out too spread and too high in energy).
Writes experiments/out/drift_error/<name>.{json,md,png}.

    python experiments/drift_error.py --run RUN_DIR [--run ...] [--states 256] [--mc 2048]
        [--estimator mcmc --chains 64 --mcmc-steps 400] [--switch-at 1.01 0.9 0.8 --samples 1000]
"""
from __future__ import annotations

import os
import sys

import torch

if __package__ in (None, ""):   # run as a file: python experiments/drift_error.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

from diffsampler.search import Potential, run_mala  # noqa: E402
from diffsampler.sde import forward_rollout  # noqa: E402
from diffsampler.training import load_run  # noqa: E402

NAME = "drift_error"


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


class PosteriorPotential(Potential):
    """U(y) = E(y) + ||y - c||^2 / (2 s2): the posterior of Y given X_t = x, with c = x / t and
    s2 = sigma^2 (1 - t) / t, one centre per chain row (energy calls counted as usual)."""

    def __init__(self, target, centre: torch.Tensor, s2: float) -> None:
        super().__init__(target, phase="eval")
        self.centre, self.s2 = centre, float(s2)

    def combine(self, x, E, grad_E):
        r = x - self.centre
        return E + 0.5 * (r ** 2).sum(-1) / self.s2, grad_E + r / self.s2


def mcmc_follmer_drift(target, reference, x: torch.Tensor, t: float, mc: int, chains: int, steps: int,
                       generator: torch.Generator) -> dict[str, torch.Tensor]:
    """mu*(x, t) by sampling the posterior Y | X_t = x: `chains` draws per state resampled from the
    SNIS proposals (sampling-importance-resampling), then `steps` MALA steps on U(y) = E(y) +
    ||y - x/t||^2 / (2 s2) (half adapting the step size, discarded; half recorded). Returns both
    estimators of the same mu*, which must agree:
        score form    E[sigma^2 grad log R(Y) + Y | x],
        Tweedie form  (E[Y | x] - x) / (1 - t)
    (equal by integrating the posterior's score to zero), each (B, d), projected on the subspace.
    With translation-invariant energies the centre of mass of y is an independent Gaussian that the
    projection removes, so the chains run in the full space."""
    B, d = x.shape
    s2 = reference.sigma ** 2 * (1 - t) / t
    noise = reference.project(torch.randn(B * mc, d, generator=generator, dtype=x.dtype))
    y = (x / t).repeat_interleave(mc, 0) + s2 ** 0.5 * noise
    w = torch.softmax(-target.energy(y, check_finite=False).reshape(B, mc).double(), 1)
    pick = torch.multinomial(w, chains, replacement=True, generator=generator)          # (B, chains)
    y0 = y.reshape(B, mc, d).gather(1, pick[..., None].expand(B, chains, d)).reshape(B * chains, d)
    pot = PosteriorPotential(target, (x / t).repeat_interleave(chains, 0), s2)
    run = run_mala(pot, y0, steps - steps // 2, n_adapt=steps // 2, step_size=0.05 * s2)
    ys = run.x.reshape(-1, d)                                                            # (T * B * chains, d)
    score = reference.project(target.score(ys))
    T = run.x.shape[0]
    mean_y = reference.project(ys.reshape(T, B, chains, d).mean((0, 2)))
    a_form = (reference.sigma ** 2 * score + reference.project(ys)).reshape(T, B, chains, d)
    b_form = ((reference.project(ys) - reference.project(x).repeat_interleave(chains, 0).repeat(T, 1))
              / (1 - t)).reshape(T, B, chains, d)
    a_c, b_c = a_form - a_form.mean((0, 2), keepdim=True), b_form - b_form.mean((0, 2), keepdim=True)
    return {"score": a_form.mean((0, 2)), "tweedie": (mean_y - reference.project(x)) / (1 - t),
            "acceptance": torch.tensor(run.acceptance_rate),
            # posterior variances (trace, averaged over states) of the two regression targets and their
            # covariance: what an adjoint-matching target of either form, or a mix, costs in noise
            "var_score": (a_c ** 2).sum(-1).mean(), "var_bridge": (b_c ** 2).sum(-1).mean(),
            "cov": (a_c * b_c).sum(-1).mean()}


@torch.no_grad()
def switched_samples(run, t_switch: float, n: int, steps: int, mc: int, generator: torch.Generator,
                     mcmc: tuple[int, int] | None = None) -> torch.Tensor:
    """n samples (n, d): the learned sampler's own rollout (Euler-Maruyama, its warped uniform grid of
    `steps` steps) up to the first grid time >= t_switch, then Euler-Maruyama with the Monte Carlo
    Föllmer drift mu* (SNIS, or with mcmc = (chains, steps) the MALA posterior estimate) to t = 1. Where the learned drift errs shows as how much of the terminal energy
    excess the swap removes (t_switch > 1: the learned drift throughout)."""
    s = run.sampler
    grid = s.make_grid("uniform", n, steps)
    k = int((grid[0] < t_switch).sum()) if t_switch <= 1 else steps
    x = forward_rollout(s, grid[:, :k + 1]).x[:, -1]
    ref = s.reference
    for j in range(k, steps):
        t, h = float(grid[0, j]), float(grid[0, j + 1] - grid[0, j])
        mu = (mc_follmer_drift(s.target, ref, x, t, mc, generator)[0] if mcmc is None else
              mcmc_follmer_drift(s.target, ref, x, t, mc, *mcmc, generator)["score"])
        x = x + h * ref.project(mu) + ref.sigma * h ** 0.5 * ref.project(
            torch.randn(x.shape, generator=generator, dtype=x.dtype))
    return x


def parse_args(argv=None):
    ap = harness.parser(__doc__)
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
    ap.add_argument("--steps", type=int, default=100, help="Euler-Maruyama steps of the --switch-at rows and of --states-from sampler")
    ap.add_argument("--estimator", choices=["snis", "mcmc"], default="snis",
                    help="mu* by self-normalised IS from the Gaussian proposal (noisy when its ESS is small), "
                         "or by MALA on the posterior Y | X_t started from resampled proposals")
    ap.add_argument("--states-from", choices=["optimal", "sampler"], default="optimal",
                    help="states x at which the drifts are compared: the optimal process's marginal at t "
                         "(one set for all runs), or each run's own rollout (--steps warped uniform steps; "
                         "the grid time nearest to t)")
    ap.add_argument("--kappa", type=float, default=40.0,
                    help="--estimator mcmc: also report the target variance of the adjoint_kappa mix "
                         "lambda = 1 / (1 + kappa (1 - t))")
    ap.add_argument("--chains", type=int, default=64, help="--estimator mcmc: MALA chains per state")
    ap.add_argument("--mcmc-steps", type=int, default=400, help="--estimator mcmc: MALA steps (half burn-in)")
    a = ap.parse_args(argv)
    if any(not 0 < t < 1 for t in a.times):
        ap.error(f"--times {a.times}: each t must lie in (0, 1)")
    return a


def own_rollouts(runs: dict, a) -> dict:
    """--states-from sampler: each run's rollout (grid times, states (B, K+1, d)) on its warped uniform grid."""
    torch.manual_seed(a.seed)
    out = {}
    for name, run in runs.items():
        grid = run.sampler.make_grid("uniform", a.states, a.steps)
        with torch.no_grad():
            out[name] = (grid[0], forward_rollout(run.sampler, grid).x)
    return out


def states_at(t_asked: float, runs: dict, rollouts: dict, a, g: torch.Generator) -> dict:
    """{run: (t, x (B, d))}: each run's own rollout state nearest to t, or one shared set of states of the
    optimal process's marginal X_t = t Y + sigma sqrt(t (1 - t)) xi, Y from the reference samples."""
    if a.states_from == "sampler":
        out = {}
        for name in runs:
            times, xs = rollouts[name]
            k = int((times - t_asked).abs().argmin())
            out[name] = (float(times[k]), xs[:, k])
        return out
    first = next(iter(runs.values()))
    target, reference = first.target, first.sampler.reference
    y = reference.project(target.sample(a.states))
    noise = reference.project(torch.randn(y.shape, generator=g, dtype=y.dtype))
    x = t_asked * y + reference.sigma * (t_asked * (1 - t_asked)) ** 0.5 * noise
    return dict.fromkeys(runs, (t_asked, x))


def target_variance(est: dict, t: float, kappa: float) -> dict:
    """Posterior variance of the adjoint-matching regression target in its score and bridge forms, their
    best mix lambda* and the adjoint_kappa mix lambda = 1 / (1 + kappa (1 - t))."""
    va, vb, cab = (float(est[k]) for k in ("var_score", "var_bridge", "cov"))
    lam = (vb - cab) / (va + vb - 2 * cab)
    mix = 1 / (1 + kappa * (1 - t))
    mixed = lambda m: m * m * va + (1 - m) ** 2 * vb + 2 * m * (1 - m) * cab
    return {"score_form": va, "bridge_form": vb, "correlation": cab / (va * vb) ** 0.5, "best_lambda": lam,
            "at_best_lambda": mixed(lam), "kappa": kappa, "lambda_kappa": mix, "at_lambda_kappa": mixed(mix)}


def optimal_drift(target, reference, x: torch.Tensor, t: float, a, g: torch.Generator):
    """mu* at the states x (SNIS, or MCMC with --estimator mcmc) and the estimator's diagnostics."""
    mu_star, ess = mc_follmer_drift(target, reference, x, t, a.mc, g)
    diag = {"t_used": t, "mc_ess_median": float(ess.median())}
    if a.estimator == "mcmc":
        est = mcmc_follmer_drift(target, reference, x, t, a.mc, a.chains, a.mcmc_steps, g)
        diag["snis_vs_mcmc_rel"] = float((mu_star - est["score"]).pow(2).sum() / est["score"].pow(2).sum())
        mu_star = est["score"]
        diag["score_vs_tweedie_rel"] = float((mu_star - est["tweedie"]).pow(2).sum() / mu_star.pow(2).sum())
        diag["mala_acceptance"] = float(est["acceptance"])
        diag["target_variance"] = target_variance(est, t, a.kappa)
    diag["mu_star_rms"] = float(mu_star.pow(2).sum(1).mean().sqrt())
    return mu_star, diag


def compare_at(t_asked: float, runs: dict, rollouts: dict, a, g: torch.Generator) -> dict:
    """One row: per run, rel. error and beta of its drift against mu* at its states for time t."""
    states = states_at(t_asked, runs, rollouts, a, g)
    first = next(iter(runs.values()))
    target, reference = first.target, first.sampler.reference     # mu* of the first run's target and reference
    row, cache = {"t": t_asked}, {}
    for name, run in runs.items():
        t, x = states[name]
        if id(x) not in cache:
            cache[id(x)] = optimal_drift(target, reference, x, t, a, g)
        mu_star, diag = cache[id(x)]
        for key, value in diag.items():
            row.setdefault(key, value)          # estimator diagnostics of the first run's states
        s = run.sampler
        with torch.no_grad():
            score = target.score(x) if getattr(s.drift, "needs_score", False) else None
            mu = s.drift(x, torch.full((x.shape[0],), t, dtype=x.dtype), score)
        den = mu_star.pow(2).sum()
        row[name] = {"rel_err": float((mu - mu_star).pow(2).sum() / den),
                     "beta": float((mu * mu_star).sum() / den), "t_used": t}
    print(f"t={row['t_used']:.4g}: " + "; ".join(f"{n} beta {row[n]['beta']:.3f} rel.err {row[n]['rel_err']:.3f}"
                                                for n in runs) + f" (MC ESS median {row['mc_ess_median']:.0f} of {a.mc})"
          + ("" if a.estimator == "snis" else f"; MCMC: score vs Tweedie {row['score_vs_tweedie_rel']:.4f}, "
             f"SNIS vs MCMC {row['snis_vs_mcmc_rel']:.4f}, MALA acceptance {row['mala_acceptance']:.2f}"), flush=True)
    return row


def switched_rows(first, a, g: torch.Generator) -> list[dict]:
    """--switch-at: terminal energies of samples drawn with the learned drift up to t_s, then mu*."""
    from scipy.stats import wasserstein_distance
    target = first.target
    e_ref = target.energy(target.sample(10000)).double()
    out = []
    for ts in a.switch_at:
        torch.manual_seed(a.seed)   # the same rollout noise up to the switch in every row
        e = target.energy(switched_samples(first, ts, a.samples, a.steps, a.mc, g,
                                           (a.chains, a.mcmc_steps) if a.estimator == "mcmc" else None)).double()
        out.append({"t_switch": ts, "energy_mean": float(e.mean()), "ref_energy_mean": float(e_ref.mean()),
                    "energy_w1": wasserstein_distance(e.numpy(), e_ref.numpy())})
        print(f"learned drift to t={ts}, then mu*: energy mean {out[-1]['energy_mean']:.3f} "
              f"(reference {out[-1]['ref_energy_mean']:.3f}), W1 {out[-1]['energy_w1']:.3f}", flush=True)
    return out


def markdown(rows: list[dict], switched: list[dict], names: list[str], a) -> list[str]:
    mcmc = a.estimator == "mcmc"
    extra = " MCMC: score vs Tweedie / SNIS vs MCMC (rel.) / MALA acc. |" if mcmc else ""
    md = [f"mu* estimator: {a.estimator} ({a.mc} proposals" + (f", {a.chains} chains x {a.mcmc_steps} MALA steps"
                                                                 if mcmc else "") + f"), {a.states} states per t from "
          + ("the optimal process's marginal" if a.states_from == "optimal" else "each run's own rollout"), "",
          "| t | SNIS ESS (median) |" + extra + " " + " | ".join(f"{n}: beta / rel. err." for n in names) + " |",
          "| --- | --- |" + (" --- |" if mcmc else "") + " " + " | ".join("---" for _ in names) + " |"]
    md += [f"| {r['t_used']:.4g} | {r['mc_ess_median']:.0f} |" + (
        f" {r['score_vs_tweedie_rel']:.4f} / {r['snis_vs_mcmc_rel']:.4f} / {r['mala_acceptance']:.2f} |" if mcmc else "")
        + " " + " | ".join(f"{r[n]['beta']:.3f} / {r[n]['rel_err']:.3f}" for n in names) + " |" for r in rows]
    if mcmc:
        md += ["", f"Posterior variance (trace, mean over states) of the adjoint-matching regression target: score form "
               f"Y + sigma^2 grad log p(Y), bridge form (Y - X_t) / (1 - t), their best mix lambda*, and "
               f"lambda = 1 / (1 + {a.kappa:g} (1 - t)) (adjoint_kappa):", "",
               "| t | score form | bridge form | correlation | lambda* | at lambda* | lambda(kappa) | at lambda(kappa) |",
               "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        md += [f"| {r['t_used']:.4g} | {v['score_form']:.3g} | {v['bridge_form']:.3g} | {v['correlation']:.2f} | "
               f"{v['best_lambda']:.3f} | {v['at_best_lambda']:.3g} | {v['lambda_kappa']:.3f} | {v['at_lambda_kappa']:.3g} |"
               for r in rows for v in [r["target_variance"]]]
    if switched:
        md += ["", f"| drift: learned up to t_s, then mu* ({a.samples} samples, {a.steps} steps) | energy mean "
               f"(reference {switched[0]['ref_energy_mean']:.2f}) | energy W1 |", "| --- | --- | --- |"]
        md += [f"| t_s = {r['t_switch']} | {r['energy_mean']:.3f} | {r['energy_w1']:.3f} |" for r in switched]
    return md


def plot(path: str, rows: list[dict], names: list[str], target_name: str) -> None:
    with harness.figure(path, 1, 2, figsize=(9, 3.5)) as (fig, axes):
        ts = [r["t_used"] for r in rows]
        for n in names:
            axes[0].plot(ts, [r[n]["beta"] for r in rows], marker="o", label=n)
            axes[1].plot(ts, [r[n]["rel_err"] for r in rows], marker="o", label=n)
        axes[0].axhline(1.0, color="k", lw=0.8)
        axes[0].set(xlabel="t", ylabel="beta = <mu, mu*> / |mu*|^2")
        axes[1].set(xlabel="t", ylabel="|mu - mu*|^2 / |mu*|^2", yscale="log")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{target_name}: learned drift against the Monte Carlo Föllmer drift")


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(2)
    runs = {os.path.basename(os.path.normpath(r)): load_run(r) for r in a.run}
    first = next(iter(runs.values()))
    if not first.target.has_samples:
        raise SystemExit(f"target {first.target.name!r} has no reference samples to draw X_t from")
    g = torch.Generator().manual_seed(a.seed)
    rollouts = own_rollouts(runs, a) if a.states_from == "sampler" else {}
    rows = [compare_at(t, runs, rollouts, a, g) for t in a.times]
    switched = switched_rows(first, a, g) if a.switch_at else []
    base = os.path.join(harness.out_dir(NAME), a.name)
    harness.write_json(base + ".json", {"runs": a.run, "states": a.states, "mc": a.mc, "rows": rows,
                                        "switched": switched})
    md = markdown(rows, switched, list(runs), a)
    harness.write_text(base + ".md", "\n".join(md))
    plot(base + ".png", rows, list(runs), first.target.name)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
