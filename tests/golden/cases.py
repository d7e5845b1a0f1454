"""Golden runs: short fixed-seed CPU runs of every recipe and objective family, whose metrics and
final parameters must not change when the code is reorganised (one thread, bitwise).

`python tests/golden/cases.py --record` rewrites golden.json (only for a deliberate change of the
numbers, named in the commit message); tests/test_golden.py replays every case against it."""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys

import torch

import diffsampler as ds

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden.json")

TINY = dict(width=16, depth=1, time_features=8, batch_size=24, train_steps=4, iterations=12, eval_steps=8,
            eval_samples=64, checkpoint_every=1000, log_every=4, threads=1, search_chains=32, search_steps=6,
            search_burnin=4, search_thin=2, search_inner=2, buffer_size=500, seed=3)
LOCAL_SEARCH = {"tb_ls": dict(local_search_every=5, local_search_steps=3, local_search_batch=8)}
PARTICLE = dict(drift="egnn", width=8, depth=1, time_features=8)

CASES: dict[str, tuple[str, dict]] = {
    # every recipe on gmm25 (the MLP drift) and on manywell32 (the Langevin drift)
    **{f"gmm25_{r}": ("gmm25", dict(recipe=r, drift="mlp", **LOCAL_SEARCH.get(r, {}))) for r in (
        "tb", "tb_expl", "vargrad", "subtb", "pis", "tb_ls", "sgds", "sgds_jeffreys", "ais_ml", "sgds_no_rnd",
        "sgds_finetune", "sgds_reset_log_Z")},
    **{f"manywell32_{r}": ("manywell32", dict(recipe=r, **LOCAL_SEARCH.get(r, {}))) for r in (
        "tb", "tb_expl", "vargrad", "subtb", "pis", "tb_ls", "sgds", "sgds_jeffreys", "ais_ml")},
    # objectives and keys that the recipes above do not reach
    "gmm25_db": ("gmm25", dict(recipe="custom", objective="db", drift="mlp")),
    "gmm25_adjoint": ("gmm25", dict(recipe="custom", objective="adjoint", drift="mlp", adjoint_times=3)),
    "gmm25_adjoint_importance_kappa_reuse": ("gmm25", dict(
        recipe="custom", objective="adjoint", drift="mlp", adjoint_weights="importance", adjoint_kappa=5.0,
        adjoint_t_min=0.1, adjoint_t_max=0.9, trajectory_reuse=2)),
    "manywell32_adjoint_batch_average": ("manywell32", dict(recipe="custom", objective="adjoint",
                                                             adjoint_batch_average=True)),
    "gmm25_tb_reuse_chunk_lrdecay_ema": ("gmm25", dict(recipe="tb", drift="mlp", trajectory_reuse=1,
                                                       grad_chunk_steps=2, lr_final=0.2, ema_decay=0.9,
                                                       exploration=0.3)),
    "gmm25_sgds_pt": ("gmm25", dict(recipe="sgds", drift="mlp", searcher="pt", search_temperatures=3)),
    "gmm25_sgds_underdamped": ("gmm25", dict(recipe="sgds", drift="mlp", searcher="underdamped")),
    "gmm25_sgds_rmp": ("gmm25", dict(recipe="sgds", drift="mlp", searcher="rmp_langevin")),
    "gmm25_sgds_ais_reinit_keep_mlwarmup": ("gmm25", dict(recipe="sgds", drift="mlp", searcher="ais",
                                                           reinit_keep=0.5, ml_warmup=2, lr_ml=1e-2,
                                                           round_iterations="4,8", log_Z_warm_start="buffer")),
    "gmm25_tb_target_samples_logmeanexp": ("gmm25", dict(recipe="tb", drift="mlp", behaviour="mixed",
                                                         offpolicy_data="target_samples",
                                                         log_Z_warm_start="logmeanexp", offpolicy_weight=0.5)),
    "manywell32_tb_backward_replay_uniform": ("manywell32", dict(recipe="tb", behaviour="backward",
                                                                  buffer_priority="uniform", grad_clip=10.0,
                                                                  train_grid="equidistant", time_warp=2.0)),
    # particle systems: EGNN drifts, the orbit estimator, adjoint matching on the CoM-free space
    "dw4_sgds_jeffreys": ("dw4", dict(recipe="sgds_jeffreys", **PARTICLE)),
    "dw4_sgds_egnn_langevin": ("dw4", dict(recipe="sgds", **{**PARTICLE, "drift": "egnn_langevin"}, rnd_alpha=10.0)),
    "dw4_orbit_ml": ("dw4", dict(recipe="ais_ml", **PARTICLE, orbit_K=4, orbit_t_threshold=0.5)),
    "dw4_orbit_kappa_jeffreys": ("dw4", dict(recipe="sgds_jeffreys", **PARTICLE, orbit_K=3, orbit_kappa=2.0)),
    "dw4_adjoint": ("dw4", dict(recipe="custom", objective="adjoint", **PARTICLE, adjoint_weights="importance")),
    "lj13_sgds_buffer_start": ("lj13", dict(recipe="sgds", **PARTICLE, rnd_alpha=10.0, rnd_width=8,
                                            log_Z_warm_start="buffer", batch_size=8, search_chains=8)),
}

DROP = {"train_seconds", "config"}   # wall time, and the config's layout (its values are the case's keys)


def make_target(name: str):
    t = ds.targets.get(name)
    if hasattr(t, "data_filename"):   # no dependence on whether the shared reference data is present
        t.data_filename = None
    return t


def parameter_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def run_case(name: str) -> dict:
    target_name, keys = CASES[name]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    run = ds.train(make_target(target_name), {**TINY, **keys}, progress=False)
    rep = {k: v for k, v in run.report.items() if k not in DROP}
    return _plain({"report": rep, "parameters": parameter_hash(run.sampler)})


def main(argv: list[str]) -> int:
    if argv != ["--record"]:
        print(__doc__)
        return 2
    out = {name: run_case(name) for name in CASES}
    with open(GOLDEN, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"recorded {len(out)} cases in {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
