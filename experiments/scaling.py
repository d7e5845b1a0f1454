"""Throughput of one training run on 1, 2, ... processes (torchrun, torch.distributed) with the same
shards: energy calls per second and learner iterations per second, the parallel efficiency, and
mixed precision (precision=bf16) against fp32 at equal iterations.

    python experiments/scaling.py                                        # this CPU: 1 and 2 processes
    python experiments/scaling.py --device cuda --nproc 1 2 4 8 --shards 8 --batch 4096 --chains 65536
    python experiments/scaling.py --only learner --nproc 1 2 --repeats 3 --name scaling_cpu

Two workloads, each launched as `torchrun --standalone --nproc_per_node P -m diffsampler train ...`
for every P of --nproc, all with shards = --shards (so every P trains on the same numbers):
  learner  Manywell-32, Langevin drift, on-policy TB, no search: the learner's iterations per second
           and its energy calls per second (B (N - 1) + B + S per iteration);
  search   one MALA search of --chains chains (blocks shared out among the processes) and a single
           learner iteration: energy calls per second of the searcher.
Rates are over the run's own clock (report.json's train_seconds: rank 0's, start-up and the final
evaluation excluded). efficiency = (rate_P / rate_1) / P. With --repeats R each setting runs R
times and the best rate counts (the machine may be shared). The bf16 row repeats the learner
workload on one process with precision=bf16 and gives its EUBO - ELBO beside the fp32 run's (same
iterations, same seed); on a CPU without bf16 units it is usually slower.

On a GPU (--device cuda) each process takes cuda:LOCAL_RANK and the gradients go through NCCL; this
path is written to be correct but has not been run here (no GPU). Writes
experiments/out/scaling/<name>.{json,md} (default name scaling).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

if __package__ in (None, ""):   # run as a file: python experiments/scaling.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

NAME = "scaling"
WORKLOADS = ("learner", "search", "bf16")


def keys(workload: str, args) -> tuple[str, dict]:
    """(target, config keys) of a workload."""
    base = dict(recipe="custom", drift="langevin", objective="tb", behaviour="forward", searcher="none", seed=0,
                device=args.device, shards=args.shards, eval_samples=args.eval_samples, eval_steps=50,
                log_every=10 ** 6, checkpoint_every=10 ** 6, width=args.width, train_steps=args.steps)
    if args.threads:
        base["threads"] = args.threads
    if workload == "search":
        return "manywell32", {**base, "searcher": "mala", "search_chains": args.chains, "search_steps": args.search_steps,
                              "search_burnin": 0, "search_thin": 10, "search_checkpoint_calls": 0, "iterations": 1,
                              "batch_size": args.shards, "eval_samples": 64, "eval_steps": 10}
    return "manywell32", {**base, "iterations": args.iterations, "batch_size": args.batch}


def launch(target: str, cfg: dict, nproc: int, out: str) -> dict:
    """One run under torchrun; its report."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cfg_path = out + ".json"
    harness.write_json(cfg_path, cfg)
    env = {**os.environ, "PYTHONPATH": os.path.join(harness.REPO, "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if "threads" in cfg:
        env["OMP_NUM_THREADS"] = str(cfg["threads"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "diffsampler", "train", target, "--config", cfg_path, "--out", out, "-q"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f)


def row_of(workload: str, nproc: int, cfg: dict, rep: dict) -> dict:
    secs, calls = rep["train_seconds"], rep["energy_calls"]
    return {"workload": workload, "processes": nproc, "shards": cfg["shards"], "device": cfg["device"],
            "precision": cfg.get("precision", "fp32"), "iterations": rep["iterations"], "train_seconds": secs,
            "calls_per_second": (calls["search"] + calls["train"]) / secs, "iterations_per_second": rep["iterations"] / secs,
            "eubo_minus_elbo": rep.get("eubo_minus_elbo"), "devices": rep.get("devices")}


def best(workload: str, nproc: int, cfg: dict, target: str, args) -> dict:
    """The fastest of --repeats runs of one setting."""
    runs = []
    for r in range(args.repeats):
        out = harness.out_dir(NAME, "runs", args.name) + f"/{workload}_p{nproc}_r{r}"
        runs.append(row_of(workload, nproc, cfg, launch(target, cfg, nproc, out)))
        print(f"{workload} P={nproc} run {r}: {runs[-1]['calls_per_second']:,.0f} calls/s, "
              f"{runs[-1]['iterations_per_second']:.2f} it/s", flush=True)
    return max(runs, key=lambda x: x["calls_per_second"])


def measure(args) -> list[dict]:
    rows = []
    for workload in args.only:
        if workload == "bf16":
            continue
        target, cfg = keys(workload, args)
        group = [best(workload, p, cfg, target, args) for p in args.nproc]
        base = group[0]
        for row in group:
            for rate in ("calls_per_second", "iterations_per_second"):
                row[f"efficiency_{rate}"] = (row[rate] / base[rate]) * base["processes"] / row["processes"]
        rows += group
    if "bf16" in args.only:
        target, cfg = keys("learner", args)
        rows += [best(f"learner {p}", 1, {**cfg, "precision": p}, target, args) for p in ("fp32", "bf16")]
    return rows


def table(rows: list[dict]) -> str:
    header = ["workload", "processes", "shards", "device", "precision", "iterations", "train s", "energy calls/s",
              "iterations/s", "efficiency (calls)", "efficiency (it)", "EUBO - ELBO"]
    cells = [[r["workload"], r["processes"], r["shards"], r["device"], r["precision"], r["iterations"],
              f"{r['train_seconds']:.2f}", f"{r['calls_per_second']:,.0f}", f"{r['iterations_per_second']:.2f}",
              harness.fmt(r.get("efficiency_calls_per_second")), harness.fmt(r.get("efficiency_iterations_per_second")),
              harness.fmt(r["eubo_minus_elbo"])] for r in rows]
    return harness.md_table(header, cells)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--device", default="cpu", help="cpu | cuda (one GPU per process)")
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts; the first is the baseline")
    p.add_argument("--shards", type=int, default=2, help="shards of every run (a multiple of every --nproc)")
    p.add_argument("--batch", type=int, default=256, help="learner batch (global)")
    p.add_argument("--steps", type=int, default=20, help="training grid steps")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--iterations", type=int, default=60, help="learner iterations")
    p.add_argument("--chains", type=int, default=4096, help="search chains")
    p.add_argument("--search-steps", type=int, default=100, help="search MALA steps per chain")
    p.add_argument("--eval-samples", type=int, default=500)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--name", default=NAME)
    harness.add_threads(p, default=1)
    harness.add_only(p, WORKLOADS)
    args = p.parse_args(argv)
    args.only = harness.check_only(p, args.only, WORKLOADS)
    if any(args.shards % n for n in args.nproc):
        p.error(f"--shards {args.shards} must be a multiple of every --nproc {args.nproc}")
    if args.device.startswith("cuda"):
        args.threads = 0
    rows = measure(args)
    out = harness.out_dir(NAME)
    harness.write_json(os.path.join(out, f"{args.name}.json"),
                       {"command": harness.command(), "machine": harness.machine(), "rows": rows})
    text = table(rows)
    harness.write_text(os.path.join(out, f"{args.name}.md"), f"`{harness.command()}`\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
