"""Train coarse, evaluate fine: Manywell-32, GMM-40 and Funnel trained on 10 random (or 100 uniform)
steps and evaluated on 100 uniform steps (ELBO, EUBO, log Z, ESS, W2, mode coverage against each
case's goal), plus training throughput against the FLOP lower bound of the network pass.

Each case is a full config (TrainConfig defaults under the case's keys: no target settings, so the
cases stay what they were when measured) and trains into its own run directory, resumed when
interrupted and reused when finished (delete it to rerun).

    python experiments/core.py                       # all cases, then the throughput table
    python experiments/core.py --only mw32_sgds_random10 mw32_sgds_uniform100
    python experiments/core.py --only throughput --widths 128 256
Writes experiments/out/core/core.{json,md} and experiments/out/core/runs/<case>/.
"""
from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):   # run as a file: python experiments/core.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

NAME = "core"
# One recipe per case (Langevin drift, batch 300 unless named).
MW32 = dict(width=128, iterations=20000)
EVAL = dict(eval_samples=2000, eval_steps=100, eval_every=2500)
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
    "mw32_tb_uniform100": ("manywell32", dict(MW32, recipe="tb", train_grid="uniform", train_steps=100,
                                              exploration=0.158, exploration_until=0.5, max_seconds=1200)),
    "mw32_sgds_uniform100": ("manywell32", dict(MW32, recipe="sgds", searcher="ais", train_grid="uniform",
                                                train_steps=100, max_seconds=1200)),
    "gmm40_tb_random10": ("gmm40", dict(recipe="tb", width=128, iterations=10000, train_grid="random", train_steps=10,
                                        exploration=0.5, exploration_until=0.5)),
    "gmm40_sgds_random10": ("gmm40", dict(width=128, iterations=10000, recipe="sgds", searcher="ais",
                                          train_grid="random", train_steps=10)),
    # MALA searcher whose chains start wide enough (std 20 vs sigma 10) to reach the corner modes
    "gmm40_sgds_mala_random10": ("gmm40", dict(width=128, iterations=10000, recipe="sgds", searcher="mala",
                                               search_init_std=20.0, train_grid="random", train_steps=10)),
    "funnel_tb_random10": ("funnel", dict(recipe="tb", width=128, iterations=10000, train_grid="random",
                                          train_steps=10)),
}
GOALS = {
    "mw32_tb_random10": "ELBO ≥ 159.70, EUBO − ELBO ≤ 8, ≤ 1200 s",
    "mw32_sgds_random10": "ELBO ≥ 159.70, EUBO − ELBO ≤ 8, ≤ 1200 s",
    "gmm40_tb_random10": "40/40 modes",
    "gmm40_sgds_random10": "40/40 modes",
    "gmm40_sgds_mala_random10": "40/40 modes",
    "funnel_tb_random10": "abs Δlog Z ≤ 0.5",
}


def case_keys(name: str, threads: int, max_seconds: float | None) -> dict:
    cfg = {**EVAL, **CASES[name][1], "threads": threads}
    if max_seconds is not None:
        cfg["max_seconds"] = min(max_seconds, cfg.get("max_seconds", max_seconds))
    return cfg


def matmul_rate(threads: int, reps: int = 40) -> float:
    """Measured float32 matmul throughput (FLOP/s) of this machine at `threads` threads (1024^2)."""
    import torch
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
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import diffsampler as ds
    from diffsampler.objectives import make_objective
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s = ds.DiffusionSampler(ds.targets.get("manywell32"), drift="langevin", width=width)
    obj = make_objective("tb")
    opt = torch.optim.Adam(s.parameters(), lr=1e-3)

    def iteration():
        loss = obj(s.rollout(batch, steps, "random"), s)
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
    f = harness.fmt
    rows = [[name, r["target"], f"{r['train_grid']}×{r['train_steps']}", f(r.get("elbo")), f(r.get("eubo")),
             f(r.get("eubo_minus_elbo")), f(r.get("log_Z_is")), f(r.get("delta_log_Z_is")), f(r.get("ess"), "{:.3f}"),
             f(r.get("w2")), f(r.get("mode_coverage")), f(r.get("train_seconds"), "{:.0f}"), r["iterations"],
             f"{r['energy_calls']['train']:,}", GOALS.get(name, "")] for name, r in results.get("cases", {}).items()]
    text = harness.md_table(["case", "target", "train grid", "ELBO", "EUBO", "EUBO−ELBO", "log Z (IS)", "abs Δlog Z",
                             "ESS", "W2", "coverage", "train s", "iterations", "energy calls (train)", "goal"], rows)
    if "throughput" in results:
        ts = results["throughput"]
        rows = [[t["width"], t["batch"], t["steps"], t["threads"], f"{t['seconds_per_iteration']:.4f}",
                 f"{t['flops_per_iteration'] / 1e9:.3f}", f"{t['matmul_flops_per_second'] / 1e9:.1f}",
                 f"{t['flop_lower_bound_seconds']:.4f}", f"{t['ratio_lower_bound_to_measured']:.2f}",
                 "{:.2f}–{:.2f}".format(*t["ratio_range"]) if "ratio_range" in t else "n/a"]
                for t in (ts if isinstance(ts, list) else [ts])]
        text += "\n" + harness.md_table(["width", "batch", "steps", "threads", "s/iteration", "GFLOP/iteration",
                                         "matmul GFLOP/s", "FLOP lower bound (s)", "lower bound / measured (median)",
                                         "range over rounds"], rows)
    return text


def main(argv=None) -> int:
    p = harness.parser(__doc__)
    harness.add_only(p, [*CASES, "throughput"], "cases")
    harness.add_threads(p)
    p.add_argument("--max-seconds", type=float, default=None, help="cap on training seconds per case")
    p.add_argument("--widths", type=int, nargs="*", default=[128, 256, 512, 1024],
                   help="drift widths for the throughput case")
    a = p.parse_args(argv)
    todo = harness.check_only(p, a.only, [*CASES, "throughput"])
    out = harness.out_dir(NAME)
    path = os.path.join(out, "core.json")
    results = harness.read_json(path, {})
    results["machine"] = harness.machine()
    results.setdefault("cases", {})
    for name in todo:
        if name == "throughput":
            # width 128 (our Manywell-32 learner), 256 (the SGDS paper's), and wider, to show where
            # the matmuls' share of an iteration reaches the goal; fewer repetitions when wider
            results["throughput"] = [throughput(a.threads, width=w, reps=max(8, 60 * 256 ** 2 // w ** 2))
                                     for w in a.widths]
        else:
            target = CASES[name][0]
            rep = harness.run_case(target, case_keys(name, a.threads, a.max_seconds),
                                   os.path.join(harness.out_dir(NAME, "runs"), name))
            results["cases"][name] = {**rep, "case": name}
        harness.write_json(path, results)
        harness.write_text(os.path.join(out, "core.md"), markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
