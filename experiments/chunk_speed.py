"""Seconds and peak memory per training iteration of a particle learner against `grad_chunk_steps`
and `compile`.

grad_chunk_steps = k rolls a batch out without an autograd graph and back-propagates log_pf k steps
at a time (`diffsampler.sde.backprop_log_pf`): the same gradient, with the graph of k steps instead
of all N. This script measures what that costs or saves, side by side in one process, on the SGDS
paper's LJ learners (EGNN 64 x 5, batch 32, 100 random steps, on-policy TB):

    python experiments/chunk_speed.py --device cuda --targets lj13 lj55 --chunks 0 10 25
    python experiments/chunk_speed.py --device cuda --targets lj13 --chunks 25 --compile none default
    python experiments/chunk_speed.py --device cpu --targets lj13 --chunks 25 --compile none default \\
        --iterations 2 --warmup 2 --threads 1 --name compile_speed_cpu

compile = mode: torch.compile of the drift (config key `compile`); its compilation happens in the
warm-up iterations, whose total time is reported separately (warmup_seconds).

Peak memory: torch.cuda.max_memory_allocated on a GPU (reset per setting); on the CPU the process's
peak RSS, which only grows, so run one setting per process there. A setting that runs out of GPU
memory is reported as such. Writes experiments/out/chunk_speed/<name>.{json,md} (default name
chunk_speed; --out PATH writes PATH.{json,md} instead).
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time

if __package__ in (None, ""):   # run as a file: python experiments/chunk_speed.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness

NAME = "chunk_speed"


def measure(target: str, chunk: int, mode: str, args) -> dict:
    import torch

    import diffsampler as ds
    from diffsampler.training import TrainConfig
    from diffsampler.training.trainer import Trainer
    cfg = TrainConfig.from_dict(dict(recipe="tb", drift="egnn", width=args.width, depth=args.depth,
                                     batch_size=args.batch, train_steps=args.steps, train_grid="random",
                                     grad_chunk_steps=chunk, lr=5e-4, grad_clip=1.0, log_Z_init=0.0,
                                     device=args.device, threads=args.threads, compile=mode))
    row = {"target": target, "grad_chunk_steps": chunk, "compile": mode, "batch": args.batch, "steps": args.steps}
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    tr = None
    try:
        tr = Trainer(ds.targets.get(target), cfg, progress=False)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            tr.step()
        if cuda:
            torch.cuda.synchronize()
        row["warmup_seconds"] = time.perf_counter() - t0
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(args.iterations):
            tr.step()
        if cuda:
            torch.cuda.synchronize()
        row["seconds_per_iteration"] = (time.perf_counter() - t0) / args.iterations
        row["peak_memory_gb"] = (torch.cuda.max_memory_allocated() if cuda else
                                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 1e9
        row["memory_kind"] = "cuda max allocated" if cuda else "process peak RSS"
    except torch.cuda.OutOfMemoryError as e:
        row["error"] = "out of GPU memory: " + str(e).split("\n")[0][:160]
    except Exception as e:   # e.g. a compile mode this machine cannot build: report it, measure the rest
        row["error"] = f"{type(e).__name__}: " + str(e).split("\n")[0][:160]
    finally:
        tr = None
        if cuda:
            torch.cuda.empty_cache()
    return row


def markdown(out: dict) -> str:
    a = out["args"]
    rows = [[r["target"], r["grad_chunk_steps"], r["compile"],
             f"{r['seconds_per_iteration']:.3f}" if "seconds_per_iteration" in r else r.get("error", "?"),
             f"{r['warmup_seconds']:.1f}" if "warmup_seconds" in r else "-",
             f"{r['peak_memory_gb']:.2f}" if "peak_memory_gb" in r else "-"] for r in out["rows"]]
    return (f"Device: {out['device']}, torch {out['torch']}; EGNN {a['width']} x {a['depth']}, batch {a['batch']}, "
            f"{a['steps']} steps, on-policy TB; mean of {a['iterations']} iterations after {a['warmup']}.\n\n"
            + harness.md_table(["target", "grad_chunk_steps", "compile", "s / iteration", "warm-up (s)",
                                "peak memory (GB)"], rows))


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--targets", nargs="+", default=["lj13"])
    ap.add_argument("--chunks", nargs="+", type=int, default=[0, 10, 25])
    ap.add_argument("--compile", nargs="+", default=["none"], choices=["none", "default"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    harness.add_threads(ap, default=0)
    ap.add_argument("--name", default=NAME, help="output name under experiments/out/chunk_speed (no extension)")
    ap.add_argument("--out", default=None, help="output path without extension, in place of --name")
    args = ap.parse_args(argv)
    import torch
    rows = []
    for target in args.targets:
        for chunk in args.chunks:
            for mode in args.compile:
                rows.append(measure(target, chunk, mode, args))
                print(json.dumps(rows[-1]), flush=True)
    best = {}
    for r in rows:
        if "seconds_per_iteration" in r and (r["target"] not in best or
                                             r["seconds_per_iteration"] < best[r["target"]]["seconds_per_iteration"]):
            best[r["target"]] = r
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    out = {"device": device, "torch": torch.__version__, "args": vars(args), "rows": rows,
           "fastest_chunk": {k: v["grad_chunk_steps"] for k, v in best.items()},
           "fastest_compile": {k: v["compile"] for k, v in best.items()}}
    harness.write_results(args.out or os.path.join(harness.out_dir(NAME), args.name), out, markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
