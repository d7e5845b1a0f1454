"""Fault injection: kill a training run at many moments, resume it each time, and check that it ends
exactly where an uninterrupted run ends.

    python experiments/fault_injection.py                    # 20 SIGKILLs, then 20 SIGTERMs
    python experiments/fault_injection.py --kills 4 --signals KILL --short   # what CI runs (a test)

The run is the default recipe of a small target (gmm25: SGDS with a MALA searcher, two rounds), scaled
down so that a whole run takes well under a minute, with a search split in several checkpointed blocks.
Each kill is placed by `diffsampler.faults` (DIFFSAMPLER_FAULT=POINT:K:SIGNAL) at the K-th arrival at
one of four points, chosen at random: after a search block, inside a checkpoint write (before the
rename), in the middle of a metrics append (a torn line), at the start of the final evaluation. A
lineage plans 2 to 5 faults in the order a run meets them; after each kill the run resumes
(`diffsampler train ... --resume`) with the next fault, and when a fault is not reached (the run got
past it) the lineage finishes; new lineages start until `--kills` kills have landed. Every finished lineage must give the reference
run's final parameters and report (bitwise, one CPU thread; wall-time keys aside). Work lost per
kill: energy calls and training seconds done since the last checkpoint on disk.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness  # noqa: E402

POINTS = ("search_block", "checkpoint_write", "metrics_append", "evaluation")
SMALL = dict(recipe="sgds", iterations=240, batch_size=64, width=32, search_chains=120, search_burnin=10,
             search_steps=40, search_thin=5, search_checkpoint_calls=1500, checkpoint_every=40, log_every=10,
             eval_every=120, eval_samples=400, eval_steps=30, threads=1)
TIMING = ("train_seconds", "lineage")


def command(cfg_path: str, out: str, resume: bool) -> list[str]:
    return [sys.executable, "-m", "diffsampler", "train", "gmm25", "--config", cfg_path, "--out", out, "-q"] + (
        ["--resume"] if resume else [])


def launch(cfg_path: str, out: str, resume: bool, fault: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DIFFSAMPLER_FAULT", None)
    if fault:
        env["DIFFSAMPLER_FAULT"] = fault
    return subprocess.run(command(cfg_path, out, resume), env=env, capture_output=True, text=True, timeout=900)


def fingerprint(out: str) -> dict:
    """The final weights (sha256 of the checkpoint's sampler and EMA tensors) and report (timing aside)."""
    import torch
    state = torch.load(os.path.join(out, "checkpoint.pt"), map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for part in ("sampler", "ema"):
        tensors = state[part] if part == "sampler" else (state[part] or {}).get("shadow", {})
        for k, v in sorted(tensors.items()):
            h.update(k.encode())
            h.update(v.contiguous().numpy().tobytes())
    report = json.load(open(os.path.join(out, "report.json")))
    return {"weights": h.hexdigest(), "report": {k: v for k, v in report.items() if k not in TIMING}}


def checkpoint_progress(out: str) -> tuple[int, float]:
    """(energy calls, training seconds) of the checkpoint on disk; (0, 0) before the first one."""
    import torch
    path = os.path.join(out, "checkpoint.pt")
    if not os.path.exists(path):
        return 0, 0.0
    state = torch.load(path, map_location="cpu", weights_only=True)
    return sum(state["energy_calls"].values()), float(state["train_seconds"])


def one_kill(cfg_path: str, out: str, resume: bool, fault: str) -> dict:
    """Run (or resume) with one fault; the kill's record (None when the run finished first)."""
    calls_ckpt, secs_ckpt = checkpoint_progress(out) if resume else (0, 0.0)
    r = launch(cfg_path, out, resume, fault)
    m = re.search(r"FAULT point=(\w+) calls=(\d+) seconds=([\d.]+)", r.stderr)
    if m is None:
        return {"fault": fault, "reached": False, "returncode": r.returncode, "stderr": r.stderr[-400:]}
    calls_at, secs_at = int(m.group(2)), float(m.group(3))
    calls_saved, secs_saved = checkpoint_progress(out)
    return {"fault": fault, "reached": True, "returncode": r.returncode, "point": m.group(1),
            "calls_lost": max(0, calls_at - max(calls_saved, calls_ckpt)),
            "seconds_lost": round(max(0.0, secs_at - max(secs_saved, secs_ckpt)), 3),
            "message": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""}


def lineage(cfg_path: str, out: str, faults: list[str], reference: dict) -> tuple[list[dict], bool]:
    """Kill and resume with `faults` in turn, then finish; (kill records, identical to the reference)."""
    shutil.rmtree(out, ignore_errors=True)
    records, resume = [], False
    for fault in faults:
        rec = one_kill(cfg_path, out, resume, fault)
        records.append(rec)
        resume = True
        if not rec["reached"]:
            break
    if records and records[-1]["reached"]:
        final = launch(cfg_path, out, True, None)
        if final.returncode:
            raise RuntimeError(f"the last resume failed: {final.stderr[-800:]}")
    return records, fingerprint(out) == reference


ORDER = {"search_block": 0, "metrics_append": 1, "checkpoint_write": 1, "evaluation": 2}


def lineage_plan(rng: random.Random, sig: str) -> list[str]:
    """2 to 5 faults at random points, in the order a run reaches them (search, training, evaluation),
    each at its 1st to 3rd arrival."""
    pts = sorted((rng.choice(POINTS) for _ in range(rng.randint(2, 5))), key=ORDER.__getitem__)
    return [f"{p}:{rng.randint(1, 3)}:{sig}" for p in pts]


def run(kills: int, signals: list[str], seed: int, short: bool) -> dict:
    work = harness.out_dir("fault_injection", "short" if short else "full")
    cfg_path = os.path.join(work, "config.json")
    harness.write_json(cfg_path, SMALL)
    ref_dir = os.path.join(work, "reference")
    shutil.rmtree(ref_dir, ignore_errors=True)
    r = launch(cfg_path, ref_dir, False, None)
    if r.returncode:
        raise RuntimeError(f"the reference run failed: {r.stderr[-800:]}")
    reference = fingerprint(ref_dir)
    rng, summary = random.Random(seed), {}
    for sig in signals:
        rows, identical, lineages = [], 0, 0
        while sum(x["reached"] for x in rows) < kills and lineages < 4 * kills:
            recs, same = lineage(cfg_path, os.path.join(work, f"{sig}_{lineages}"), lineage_plan(rng, sig), reference)
            rows += recs
            lineages, identical = lineages + 1, identical + int(same)
        reached = [x for x in rows if x["reached"]]
        summary[sig] = {"kills": len(reached), "faults_planned": len(rows), "lineages": lineages,
                        "identical": identical, "records": rows,
                        "max_calls_lost": max((x["calls_lost"] for x in reached), default=0),
                        "max_seconds_lost": max((x["seconds_lost"] for x in reached), default=0.0)}
    return {"config": SMALL, "seed": seed, "machine": harness.machine(), "results": summary}


def table(res: dict) -> str:
    rows = []
    for sig, s in res["results"].items():
        by_point = {p: [x for x in s["records"] if x.get("point") == p] for p in POINTS}
        for p, xs in by_point.items():
            if xs:
                rows.append([sig, p, len(xs), max(x["calls_lost"] for x in xs), max(x["seconds_lost"] for x in xs),
                             sorted({x["returncode"] for x in xs})])
        rows.append([sig, "all", s["kills"], s["max_calls_lost"], s["max_seconds_lost"],
                     f"{s['identical']}/{s['lineages']} lineages identical"])
    return harness.md_table(["signal", "point", "kills", "max calls lost", "max seconds lost", "exit codes / result"],
                            rows)


def main(argv=None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--signals", nargs="+", default=["KILL", "TERM"], choices=["KILL", "TERM"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--short", action="store_true", help="the small run only (what the test runs)")
    a = p.parse_args(argv)
    res = run(a.kills, a.signals, a.seed, a.short)
    out = harness.out_dir("fault_injection")
    harness.write_json(os.path.join(out, "fault_injection.json"), res)
    harness.write_text(os.path.join(out, "fault_injection.md"), table(res))
    print(table(res))
    return 0 if all(s["identical"] == s["lineages"] for s in res["results"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
