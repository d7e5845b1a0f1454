"""Gradient variance of adjoint matching, per noise level: the per-sample regression target against the
batch Rao-Blackwellised one (`adjoint_batch_average=true`), at equal energy calls and network passes.

Draws a pool of terminal samples Y from a trained run's sampler (100 uniform steps), with their
trajectory log-weights and the target score at Y. Then, for each bridge-time bin [a, b), R repeats of:
a batch of B samples from the pool, M bridge states per sample with t ~ U(a, b), and the gradient of
the adjoint-matching loss with respect to the drift's parameters, once with each estimator on the
*same* states (one score call per state and the same drift passes for both). Reports the total
variance tr Cov(grad) over the repeats, per bin, and its ratio (per-sample / batch-averaged). With
`--weights importance` both estimators use self-normalised trajectory weights.
Writes experiments/out/adjoint_variance/<name>.{json,md,png}.

    python experiments/adjoint_variance.py --run RUN_DIR [--batch 300] [--times 8] [--repeats 40]
        [--weights uniform|importance] [--name adjoint_variance_dw4]
"""
from __future__ import annotations

import os
import sys

import torch

if __package__ in (None, ""):   # run as a file: python experiments/adjoint_variance.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

from diffsampler.objectives import adjoint_target, batch_averaged_target, bridge_states  # noqa: E402
from diffsampler.training import load_run  # noqa: E402

NAME = "adjoint_variance"


def grads(sampler, x_t, t, goal_x, w_x, params) -> torch.Tensor:
    """Flattened gradient of mean_q w_q ||mu(x_q, t_q) - goal_q||^2 / sigma^2 w.r.t. params."""
    ref, drift = sampler.reference, sampler.drift
    score = sampler.target.log_reward_and_score(x_t)[1] if drift.needs_score else None
    mu = ref.project(drift(x_t, t, score))
    loss = (w_x * ((mu - goal_x) ** 2).sum(-1)).mean() / ref.sigma ** 2
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--run", required=True, help="a trained run directory")
    ap.add_argument("--pool", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=300)
    ap.add_argument("--times", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--bins", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
    ap.add_argument("--weights", choices=("uniform", "importance"), default="uniform")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="adjoint_variance")
    a = ap.parse_args(argv)
    if a.repeats < 2 or a.batch < 2 or a.times < 1 or a.pool < a.batch:
        ap.error("need --repeats >= 2, --batch >= 2, --times >= 1 and --pool >= --batch")
    if sorted(a.bins) != a.bins or a.bins[0] < 0 or a.bins[-1] > 1 or len(a.bins) < 2:
        ap.error(f"--bins {a.bins}: an increasing list in [0, 1]")
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    run = load_run(a.run)
    s, target = run.sampler, run.target
    ref = s.reference
    with torch.no_grad():
        y_pool, lw_pool = s.sample(a.pool, steps=100)
    y_pool = y_pool.to(s.log_Z)
    goal_pool = adjoint_target(ref, y_pool, target.score(y_pool), s.drift.score_clip
                               if hasattr(s.drift, "score_clip") else None)
    params = [p for p in s.drift.parameters() if p.requires_grad]
    rows = []
    for lo, hi in zip(a.bins[:-1], a.bins[1:]):
        g_plain, g_rb = [], []
        for _ in range(a.repeats):
            idx = torch.randint(a.pool, (a.batch,))
            y, goal = y_pool[idx], goal_pool[idx]
            w = (torch.softmax(lw_pool[idx].to(y), 0) * a.batch if a.weights == "importance"
                 else torch.ones(a.batch, dtype=y.dtype))
            t = torch.empty(a.times * a.batch, dtype=y.dtype).uniform_(lo, hi)
            x_t = bridge_states(ref, y.repeat(a.times, 1), t)
            goal_hat, w_hat = batch_averaged_target(ref, x_t, t, y, goal, w)
            g_plain.append(grads(s, x_t, t, goal.repeat(a.times, 1), w.repeat(a.times), params))
            g_rb.append(grads(s, x_t, t, goal_hat, w_hat, params))
        vp = torch.stack(g_plain).var(0).sum().item()
        vr = torch.stack(g_rb).var(0).sum().item()
        mp = torch.stack(g_plain).mean(0)
        mr = torch.stack(g_rb).mean(0)
        rows.append({"t_bin": [lo, hi], "var_plain": vp, "var_batch_average": vr, "ratio": vp / vr,
                     "mean_grad_norm_plain": mp.norm().item(), "mean_grad_norm_batch_average": mr.norm().item()})
        print(f"t in [{lo:.2f}, {hi:.2f}): tr Cov plain {vp:.4g}, batch-averaged {vr:.4g}, ratio {vp / vr:.2f}")
    out = {"run": a.run, "target": target.name, "pool": a.pool, "batch": a.batch, "times": a.times,
           "repeats": a.repeats, "weights": a.weights, "rows": rows}
    base = os.path.join(harness.out_dir(NAME), a.name)
    harness.write_json(base + ".json", out)
    md = [f"Adjoint-matching gradient variance, {target.name}, run `{a.run}`, B = {a.batch}, M = {a.times}, "
          f"{a.repeats} repeats, weights {a.weights}", "",
          "| t bin | tr Cov, per-sample target | tr Cov, batch-averaged | ratio | mean-gradient norm (plain / averaged) |",
          "| --- | --- | --- | --- | --- |"]
    for r in rows:
        md.append(f"| [{r['t_bin'][0]:.2f}, {r['t_bin'][1]:.2f}) | {r['var_plain']:.4g} | {r['var_batch_average']:.4g} | "
                  f"{r['ratio']:.2f} | {r['mean_grad_norm_plain']:.3g} / {r['mean_grad_norm_batch_average']:.3g} |")
    harness.write_text(base + ".md", "\n".join(md))
    with harness.figure(base + ".png", figsize=(5, 3.5), dpi=120) as (fig, ax):
        mids = [(r["t_bin"][0] + r["t_bin"][1]) / 2 for r in rows]
        ax.semilogy(mids, [r["var_plain"] for r in rows], "o-", label="per-sample target")
        ax.semilogy(mids, [r["var_batch_average"] for r in rows], "s-", label="batch-averaged target")
        ax.set_xlabel("bridge time t (0: reference start, 1: target)")
        ax.set_ylabel("tr Cov(gradient)")
        ax.set_title(f"adjoint matching, {target.name}")
        ax.legend()
    print(f"wrote {base}.json/.md/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
