"""Core benchmark (issue: core library): train-coarse / evaluate-fine on Manywell-32, GMM-40, Funnel,
plus training throughput against the FLOP lower bound of the network pass.

Writes benchmarks/out/core.json and benchmarks/out/core.md. Each case trains into its own run
directory (benchmarks/out/runs/<case>) with checkpoints, so an interrupted benchmark resumes.

    python benchmarks/core.py                       # all cases
    python benchmarks/core.py --only mw32_random10 mw32_uniform100
    python benchmarks/core.py --threads 1           # what docs/RESULTS.md reports
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

import diffsampler as ds
from diffsampler.training.checkpoint import write_json

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")

# One recipe per case (Langevin drift, batch 300 unless named).
MW32 = dict(width=128, iterations=20000)
CASES = {
    # on-policy TB (+ exploration 0.5 decayed to 0 at half of the run), Langevin drift
    "mw32_tb_random10": ("manywell32", dict(MW32, recipe="tb", train_grid="random", train_steps=10, exploration=0.5,
                                            exploration_until=0.5)),
    # the same learner and objective (TB) with off-policy buffer data from an AIS searcher (recipe sgds)
    "mw32_sgds_random10": ("manywell32", dict(MW32, recipe="sgds", searcher="ais", train_grid="random",
                                              train_steps=10)),
    # the fine uniform training grid, 20 minutes of training at most. Exploration noise is per step
    # (gfn-diffusion's convention), so 0.5 / sqrt(10) = 0.158 on 100 steps adds the same total
    # variance to a trajectory as 0.5 does on 10 steps.
    "mw32_tb_uniform100": ("manywell32", dict(MW32, recipe="tb", train_grid="uniform", train_steps=100, exploration=0.158,
                                              exploration_until=0.5, max_seconds=1200)),
    "mw32_sgds_uniform100": ("manywell32", dict(MW32, recipe="sgds", searcher="ais", train_grid="uniform",
                                                train_steps=100, max_seconds=1200)),
    "gmm40_tb_random10": ("gmm40", dict(recipe="tb", width=128, iterations=10000, train_grid="random", train_steps=10,
                                        exploration=0.5, exploration_until=0.5)),
    "gmm40_sgds_random10": ("gmm40", dict(width=128, iterations=10000, recipe="sgds", searcher="ais",
                                          train_grid="random", train_steps=10)),
    # MALA searcher whose chains start wide enough (std 20 vs sigma 10) to reach the corner modes
    "gmm40_sgds_mala_random10": ("gmm40", dict(width=128, iterations=10000, recipe="sgds", searcher="mala",
                                               search_init_std=20.0, train_grid="random", train_steps=10)),
    "funnel_tb_random10": ("funnel", dict(recipe="tb", width=128, iterations=10000, train_grid="random", train_steps=10)),
}
GOALS = {
    "mw32_tb_random10": "ELBO ≥ 159.70, EUBO − ELBO ≤ 8, ≤ 1200 s",
    "mw32_sgds_random10": "ELBO ≥ 159.70, EUBO − ELBO ≤ 8, ≤ 1200 s",
    "gmm40_tb_random10": "40/40 modes",
    "gmm40_sgds_random10": "40/40 modes",
    "gmm40_sgds_mala_random10": "40/40 modes",
    "funnel_tb_random10": "abs Δlog Z ≤ 0.5",
}


def run_case(name: str, threads: int, max_seconds: float | None) -> dict:
    target, cfg = CASES[name]
    out = os.path.join(OUT, "runs", name)
    if os.path.exists(os.path.join(out, "report.json")):  # finished earlier: reuse (delete to rerun)
        return {**json.load(open(os.path.join(out, "report.json"))), "case": name}
    resume = os.path.exists(os.path.join(out, "checkpoint.pt"))
    if os.path.isdir(out) and not resume:
        os.rmdir(out)
    t0 = time.perf_counter()
    cfg = dict(cfg)
    if max_seconds is not None:
        cfg["max_seconds"] = min(max_seconds, cfg.get("max_seconds", max_seconds))
    run = ds.train(target, out=out, resume=resume, threads=threads, eval_samples=2000, eval_steps=100,
                   eval_every=2500, **cfg)
    rep = dict(run.report)
    rep["wall_seconds_total"] = round(time.perf_counter() - t0, 1)
    rep["case"] = name
    return rep


def matmul_rate(threads: int, reps: int = 40) -> float:
    """Measured float32 matmul throughput (FLOP/s) of this machine at `threads` threads (1024^2)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(5):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * 1024 ** 3 * reps / (time.perf_counter() - t)


def throughput(threads: int, width: int = 128, steps: int = 10, batch: int = 300, reps: int = 60,
               rounds: int = 5) -> dict:
    """Seconds per TB iteration on Manywell-32 vs the time the network FLOPs need at the matmul rate.

    The host is shared (a VM), so its speed drifts: iterations and the 1024^2 matmul rate are timed
    in alternating blocks (`rounds` of each) and the ratio is the median of the per-round ratios,
    each from an iteration block and the matmul block next to it."""
    from torch.utils.flop_counter import FlopCounterMode

    from diffsampler.objectives import make_objective
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    target = ds.targets.get("manywell32")
    s = ds.DiffusionSampler(target, drift="langevin", width=width)
    obj = make_objective("tb")
    opt = torch.optim.Adam(s.parameters(), lr=1e-3)

    def iteration():
        tr = s.rollout(batch, steps, "random")
        loss = obj(tr, s)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        iteration()
    flops = fc.get_total_flops()
    for _ in range(5):
        iteration()
    per_round = max(2, reps // rounds)
    secs, rates = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(per_round):
            iteration()
        secs.append((time.perf_counter() - t) / per_round)
        rates.append(matmul_rate(threads, reps=10))
    ratios = sorted(flops / r / sec for r, sec in zip(rates, secs))
    sec, rate = sorted(secs)[rounds // 2], sorted(rates)[rounds // 2]
    return {"width": width, "batch": batch, "steps": steps, "threads": threads, "seconds_per_iteration": sec,
            "flops_per_iteration": flops, "matmul_flops_per_second": rate,
            "flop_lower_bound_seconds": flops / rate, "ratio_lower_bound_to_measured": ratios[rounds // 2],
            "ratio_range": [ratios[0], ratios[-1]]}


def markdown(results: dict) -> str:
    lines = ["| case | target | train grid | ELBO | EUBO | EUBO−ELBO | log Z (IS) | abs Δlog Z | ESS | W2 | coverage | "
             "train s | iterations | energy calls (train) | goal |",
             "|" + " --- |" * 15]
    for name, r in results.get("cases", {}).items():
        def f(k, fmt="{:.2f}"):
            v = r.get(k)
            return "n/a" if v is None else fmt.format(v)
        lines.append(f"| {name} | {r['target']} | {r['train_grid']}×{r['train_steps']} | {f('elbo')} | {f('eubo')} | "
                     f"{f('eubo_minus_elbo')} | {f('log_Z_is')} | {f('delta_log_Z_is')} | {f('ess', '{:.3f}')} | "
                     f"{f('w2')} | {f('mode_coverage')} | {f('train_seconds', '{:.0f}')} | {r['iterations']} | "
                     f"{r['energy_calls']['train']:,} | {GOALS.get(name, '')} |")
    if "throughput" in results:
        rows = results["throughput"]
        lines += ["", "| width | batch | steps | threads | s/iteration | GFLOP/iteration | matmul GFLOP/s | "
                      "FLOP lower bound (s) | lower bound / measured (median) | range over rounds |", "|" + " --- |" * 10]
        for t in (rows if isinstance(rows, list) else [rows]):
            lines.append(f"| {t['width']} | {t['batch']} | {t['steps']} | {t['threads']} | "
                         f"{t['seconds_per_iteration']:.4f} | {t['flops_per_iteration'] / 1e9:.3f} | "
                         f"{t['matmul_flops_per_second'] / 1e9:.1f} | {t['flop_lower_bound_seconds']:.4f} | "
                         f"{t['ratio_lower_bound_to_measured']:.2f} | "
                         + ("{:.2f}–{:.2f} |".format(*t["ratio_range"]) if "ratio_range" in t else "n/a |"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=None, help=f"cases: {', '.join(CASES)} throughput")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=None, help="cap on training seconds per case")
    p.add_argument("--widths", type=int, nargs="*", default=[128, 256, 512, 1024],
                   help="drift widths for the throughput case")
    a = p.parse_args(argv)
    os.makedirs(os.path.join(OUT, "runs"), exist_ok=True)
    path = os.path.join(OUT, "core.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    results["machine"] = {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0]}
    results.setdefault("cases", {})
    todo = a.only if a.only is not None else [*CASES, "throughput"]
    for name in todo:
        if name == "throughput":
            # width 128 (our Manywell-32 learner), 256 (the SGDS paper's), and wider, to show where
            # the matmuls' share of an iteration reaches the goal; fewer repetitions when wider
            results["throughput"] = [throughput(a.threads, width=w, reps=max(8, 60 * 256 ** 2 // w ** 2))
                                     for w in a.widths]
        else:
            results["cases"][name] = run_case(name, a.threads, a.max_seconds)
        write_json(path, results)
        open(os.path.join(OUT, "core.md"), "w").write(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
