"""Gradient variance of the orbit Rao-Blackwell estimator against plain data augmentation (LJ-13), per
noise level and over the whole loss, at equal network passes.

Both estimators use the same network passes (one drift pass per sample): they differ only in the
regression target of the Rao-Blackwellised backward maximum-likelihood loss
(`diffsampler.objectives.orbit`), y (augmentation: y <- g y, g random, K = 1) or the orbit
average y_hat over K group elements. Per noise level t (x_t ~ N(t y, sigma^2 t (1-t)), sigma = 0.2),
the per-sample loss is ||mu(x_t, t) - (target - x_t) / (1 - t)||^2 / (2 sigma^2); we draw R
minibatches of b reference samples (the DEM LJ-13 samples stand in for searcher data here, for this
variance measurement only), with common random numbers (same y, g, x_t for both estimators), and
report the total gradient variance tr Cov[grad] of one sample (minibatch variance * b). The drift is an
EGNN briefly warmed up with the orbit loss so that it is not at its zero initialisation. A last
row gives the same for the whole loss (sum over a uniform 20-step grid, weights dt).

    OMP_NUM_THREADS=1 python experiments/orbit_variance.py [--kappa 7.5 --time-warp 2 --name NAME]
Writes experiments/out/orbit_variance/<name>.{json,md,png} (default name orbit_variance). With --kappa the targets are also
measured with the score form of the data mixed in (`orbit_ml_loss(kappa=...)`), at more t near 1.
"""
from __future__ import annotations

import os
import platform
import sys
import time

import torch

if __package__ in (None, ""):   # run as a file: python experiments/orbit_variance.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

import diffsampler as ds  # noqa: E402
from diffsampler.objectives.adjoint import mixed_target  # noqa: E402
from diffsampler.objectives.orbit import augment_together, drift_on_states, orbit_ml_loss, orbit_target  # noqa: E402
from diffsampler.sde import make_grid  # noqa: E402

NAME = "orbit_variance"
T_LEVELS = [0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.6, 0.9]


def flat_grad(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])


def per_t_variance(sampler, data, t: float, K: int, b: int, R: int, scores=None, kappa: float = 0.0) -> dict:
    """Per-sample gradient variance at noise level t of the augmentation and orbit targets; with
    kappa > 0 (and the data's scores) also of both with the score form mixed in (`adjoint_kappa`'s
    lambda(t) = 1 / (1 + kappa (1 - t)))."""
    ref, sym, sigma = sampler.reference, sampler.target.symmetry, sampler.reference.sigma
    params = [p for p in sampler.drift.parameters() if p.requires_grad]
    grads = {"augmentation": [], "orbit": []}
    if kappa:
        grads.update({"augmentation_mixed": [], "orbit_mixed": []})
    ess = []
    lam = 1 / (1 + kappa * (1 - t))   # reported; mixed_target applies it
    for _ in range(R):
        idx = torch.randint(0, len(data), (b,))
        y, s = augment_together(sym, data[idx], None if scores is None else scores[idx])
        tt = torch.full((b,), t)
        x = t * y + sigma * (t * (1 - t)) ** 0.5 * ref.noise_like(y)
        orb = orbit_target(x, y, tt, K, symmetry=sym, sigma=sigma, score=s if kappa else None)
        mu = drift_on_states(sampler, x, tt)  # one network pass, shared by all estimators
        targets = {"augmentation": (y - x) / (1 - t), "orbit": (orb.y_hat - x) / (1 - t)}
        if kappa:
            targets["augmentation_mixed"] = mixed_target(ref, ref.project(y + sigma ** 2 * s), y, x, tt, kappa)
            targets["orbit_mixed"] = mixed_target(ref, ref.project(orb.y_hat + sigma ** 2 * orb.score_hat),
                                                  orb.y_hat, x, tt, kappa)
        for name, u in targets.items():
            res = ((mu - ref.project(u)) ** 2).sum(-1) / (2 * sigma ** 2)
            grads[name].append(flat_grad(res.mean(), params))
        ess.append(orb.ess.mean())
    var = {name: torch.stack(g).var(0).sum().item() * b for name, g in grads.items()}
    va, vo = var["augmentation"], var["orbit"]
    row = {"t": t, "var_augmentation": va, "var_orbit": vo, "ratio": va / vo if vo > 0 else None,
           "ess_mean": float(torch.stack(ess).mean()),
           "grad_norm2_mean": float(torch.stack(grads["augmentation"]).mean(0).pow(2).sum())}
    if kappa:
        row.update({"lambda": lam, "var_augmentation_mixed": var["augmentation_mixed"],
                    "var_orbit_mixed": var["orbit_mixed"]})
    return row


def full_loss_variance(sampler, data, K: int, b: int, R: int, steps: int = 20, scores=None,
                       kappa: float = 0.0, kind: str = "uniform") -> dict:
    params = [p for p in sampler.drift.parameters() if p.requires_grad]
    res = {}
    variants = [("var_augmentation", 1, 0.0), ("var_orbit", K, 0.0)]
    if kappa:
        variants += [("var_augmentation_mixed", 1, kappa), ("var_orbit_mixed", K, kappa)]
    base = int(torch.randint(0, 2 ** 31 - 1, ()))
    for name, k, kap in variants:
        gs = []
        for r in range(R):   # common random numbers: repeat r draws the same data, group elements, states, grid
            torch.manual_seed(base + r)
            idx = torch.randint(0, len(data), (b,))
            loss, _ = orbit_ml_loss(sampler, data[idx], sampler.make_grid(kind, b, steps), K=k, augment_data=True,
                                    score=None if not kap else scores[idx], kappa=kap)
            gs.append(flat_grad(loss, params))
        res[name] = torch.stack(gs).var(0).sum().item() * b
    return {"t": f"all ({steps} {kind} steps, time warp {sampler.time_warp:g})", **res,
            "ratio": res["var_augmentation"] / res["var_orbit"], "ess_mean": None, "grad_norm2_mean": None}


def warm_up(sampler, data, iters: int, K: int, batch: int = 64, steps: int = 10) -> list[float]:
    opt = torch.optim.Adam(sampler.drift.parameters(), lr=1e-3)
    losses = []
    for _ in range(iters):
        y = data[torch.randint(0, len(data), (batch,))]
        loss, _ = orbit_ml_loss(sampler, y, make_grid("random", batch, steps), K=K)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def plot(rows, path: str, K: int) -> None:
    rows = [r for r in rows if isinstance(r["t"], float)]
    x = [r["t"] for r in rows]
    with harness.figure(path, 1, 2, figsize=(10, 3.8)) as (fig, axes):
        axes[0].loglog(x, [r["var_augmentation"] for r in rows], "o-", label="data augmentation (K=1)")
        axes[0].loglog(x, [r["var_orbit"] for r in rows], "s-", label=f"orbit RB (K={K})")
        axes[0].set_ylabel("tr Cov[grad] per sample")
        axes[1].semilogx(x, [r["ratio"] for r in rows], "o-")
        axes[1].axhline(2.0, color="k", ls="--", lw=0.8, label="goal 2x")
        axes[1].set_yscale("log")
        axes[1].set_ylabel("variance ratio (augmentation / orbit)")
        for ax in axes:
            ax.set_xlabel("t (small t = high noise)")
            ax.legend(fontsize=8)
        fig.suptitle("LJ-13: gradient variance at equal network passes")


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--K", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    harness.add_threads(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kappa", type=float, default=0.0,
                    help="also measure the targets with the score form mixed in, lambda = 1 / (1 + kappa (1 - t)) "
                         "(orbit_ml_loss(kappa=...); needs the reference samples' scores), adding t near 1")
    ap.add_argument("--time-warp", type=float, default=1.0, help="time warp of the whole-loss row's grid")
    ap.add_argument("--name", default="orbit_variance")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    target = ds.targets.get("lj13")
    if not target.has_samples:
        raise SystemExit("LJ-13 reference samples (lj13_dem_val.npy) not found; set $DIFFSAMPLER_DATA")
    data = target.reference_samples()
    sampler = ds.DiffusionSampler(target, drift="egnn", width=a.width, depth=a.depth, time_warp=a.time_warp)
    scores = sampler.reference.project(target.score(data)) if a.kappa else None
    t0 = time.perf_counter()
    losses = warm_up(sampler, data, a.warmup, a.K)
    t_warm = time.perf_counter() - t0
    levels = T_LEVELS + ([0.95, 0.99, 0.999] if a.kappa else [])
    rows = [per_t_variance(sampler, data, t, a.K, a.batch, a.repeats, scores, a.kappa) for t in levels]
    rows.append(full_loss_variance(sampler, data, a.K, a.batch, a.repeats, scores=scores, kappa=a.kappa))
    wall = time.perf_counter() - t0
    base = os.path.join(harness.out_dir(NAME), a.name)
    meta = {"target": "lj13", "sigma": sampler.reference.sigma, "K": a.K, "batch": a.batch,
            "repeats": a.repeats, "warmup_iters": a.warmup, "warmup_loss_first_last": [losses[0], losses[-1]] if losses else None,
            "warmup_seconds": round(t_warm, 1), "drift": f"egnn width {a.width} depth {a.depth}",
            "threads": a.threads, "wall_seconds": round(wall, 1), "machine": platform.processor() or platform.machine(),
            "variance_rel_stderr": round((2 / (a.repeats - 1)) ** 0.5, 3)}
    meta["kappa"] = a.kappa
    harness.write_json(base + ".json", {"meta": meta, "rows": rows}, indent=2)
    caption = (f"LJ-13, sigma = {meta['sigma']}, K = {a.K}, per-sample gradient variance (tr Cov) from "
               f"{a.repeats} minibatches of {a.batch}; EGNN {a.width}x{a.depth} after {a.warmup} warm-up steps; "
               f"relative std. error of each variance about {meta['variance_rel_stderr']:.0%}; "
               f"{meta['wall_seconds']} s on {a.threads} thread(s).")
    mixed = f" | lambda | augmentation, mixed (kappa {a.kappa:g}) | orbit RB, mixed | orbit / orbit mixed |" if a.kappa else " |"
    lines = [caption, "",
             "| t | augmentation (K=1) | orbit RB | ratio | mean ESS" + mixed,
             "| --- | --- | --- | --- | --- |" + (" --- | --- | --- | --- |" if a.kappa else "")]
    for r in rows:
        ess = "" if r["ess_mean"] is None else f"{r['ess_mean']:.2f}"
        line = f"| {r['t']} | {r['var_augmentation']:.4g} | {r['var_orbit']:.4g} | {r['ratio']:.2f} | {ess} |"
        if a.kappa:
            lam = f"{r['lambda']:.3f}" if "lambda" in r else "t-dependent"
            line += (f" {lam} | {r['var_augmentation_mixed']:.4g} | {r['var_orbit_mixed']:.4g} | "
                     f"{r['var_orbit'] / r['var_orbit_mixed']:.2f} |")
        lines.append(line)
    harness.write_text(base + ".md", "\n".join(lines))
    plot(rows, base + ".png", a.K)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
