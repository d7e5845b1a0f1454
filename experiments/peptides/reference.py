"""Reference ensembles of the peptide targets by Langevin MD (OpenMM), cached for `target.sample`.

    python experiments/peptides/reference.py aldp          # 2 chains x 20 ns: about 55 min on 2 cores
    python experiments/peptides/reference.py aldp --chains 1 --ns 40 --seed 7   # the cached run, one core
    python experiments/peptides/reference.py aldp --max-minutes 15   # stop each chain after 15 min
    python experiments/peptides/reference.py ala3 --merge run1.npz run2.npz   # pool independent runs

Dynamics: LangevinMiddleIntegrator (BAOAB-type splitting, Zhang et al. 2019) at the target's
temperature (300 K), friction 1/ps, time step 2 fs with hydrogen mass repartitioning (each H set
to 3 amu, the mass taken from its bonded heavy atom; total mass unchanged), NO constraints (the
target is the all-atom Cartesian density, hydrogens free). Masses do not enter the configurational
Boltzmann density exp(-U/kT), so repartitioning changes the dynamics only, not the ensemble
sampled (up to the integrator's O(dt^2) configurational error). `--hmr 0 --dt-fs 1` runs plain
masses at 1 fs. The System is the target's own (amber14 + OBC2 or vacuum, NoCutoff), on the CPU
platform with one thread.

Protocol: minimise the shipped structure, equilibrate `--equil-ps` (100 ps), then record a frame
every `--save-ps` (1 ps) for `--ns` ns or until `--max-minutes` of production wall time.
`--chains K` runs K independent such runs (`--ns`, `--max-minutes` each) in K processes (seeds seed .. seed + K - 1)
and concatenates their frames. Convergence check: basin populations (C7eq, C5, alphaR, alphaL, C7ax per
alanine; boundaries in `diffsampler.evaluation.peptides`) of the first and second halves of the
production frames (with two chains: chain against chain) must agree
within `--tol` (0.05 absolute) in every basin; the figures and the verdict are stored with the
samples and printed. The frames go to ~/.cache/diffsampler/data/<name>_reference.npz (arrays x
(N, 3n) in nm, energy (N,) in kT, variant, settings and convergence as JSON), where the target's
`sample` / `has_samples` find them; the folder is outside the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

CACHE = Path.home() / ".cache" / "diffsampler" / "data"


def repartition_hydrogen_mass(system, topology, h_mass: float) -> None:
    """Set every hydrogen's mass to h_mass amu, subtracting the difference from its bonded atom."""
    from openmm import unit

    for a, b in topology.bonds():
        h, heavy = (a, b) if a.element.symbol == "H" else (b, a)
        if h.element.symbol != "H" or heavy.element.symbol == "H":
            continue
        dm = h_mass - system.getParticleMass(h.index).value_in_unit(unit.dalton)
        system.setParticleMass(h.index, h_mass)
        system.setParticleMass(heavy.index, system.getParticleMass(heavy.index).value_in_unit(unit.dalton) - dm)


def make_simulation(target, args, temperature: float | None = None, seed: int | None = None):
    """A Context for Langevin MD of the target's System (copied; masses repartitioned) at
    `temperature` (default: the target's), minimised, velocities drawn."""
    import openmm
    from openmm import unit

    T = target.temperature if temperature is None else temperature
    seed = args.seed if seed is None else seed
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(target.system))
    if args.hmr > 0:
        repartition_hydrogen_mass(system, target.topology, args.hmr)
    integ = openmm.LangevinMiddleIntegrator(T * unit.kelvin, args.friction / unit.picosecond,
                                           args.dt_fs * unit.femtosecond)
    integ.setRandomNumberSeed(seed)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"), {"Threads": str(args.threads)})
    ctx.setPositions(target.positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 0)
    ctx.setVelocitiesToTemperature(T * unit.kelvin, seed)
    return ctx, integ


def temperature_ladder(T0: float, T_max: float, K: int) -> list[float]:
    """K temperatures, geometric from T0 to T_max (T0 alone for K = 1)."""
    return [float(T0)] if K == 1 else [float(T0 * (T_max / T0) ** (k / (K - 1))) for k in range(K)]


def try_swaps(ctxs, temps: list[float], parity: int, rng: np.random.Generator, stats: np.ndarray) -> None:
    """Metropolis swaps of neighbouring replicas (i, i+1), i = parity, parity + 2, ...: accept with
    min(1, exp((beta_i - beta_j)(U_i - U_j))), beta = 1 / (R T); velocities rescaled by sqrt(T_new / T_old)."""
    from diffsampler.targets.openmm import kT_kJ_per_mol

    states = [c.getState(getPositions=True, getVelocities=True, getEnergy=True) for c in ctxs]
    for i in range(parity, len(ctxs) - 1, 2):
        j = i + 1
        d = (1 / kT_kJ_per_mol(temps[i]) - 1 / kT_kJ_per_mol(temps[j])) * (
            states[i].getPotentialEnergy()._value - states[j].getPotentialEnergy()._value)
        stats[i, 1] += 1
        if d >= 0 or rng.random() < np.exp(d):
            stats[i, 0] += 1
            for a, b in ((i, j), (j, i)):
                ctxs[a].setPositions(states[b].getPositions(asNumpy=True))
                ctxs[a].setVelocities(states[b].getVelocities(asNumpy=True) * np.sqrt(temps[a] / temps[b]))


def run_md(target, args) -> tuple[np.ndarray, np.ndarray, dict]:
    """Frames (N, 3n) nm of the replica at the target's temperature, energies (N,) kT and run figures
    (length, wall time, swap acceptance). One replica: plain Langevin MD; K > 1: replica exchange with
    a swap attempt (alternating even / odd neighbour pairs) after every frame."""
    temps = temperature_ladder(target.temperature, args.t_max, args.replicas)
    sims = [make_simulation(target, args, T, args.seed + k) for k, T in enumerate(temps)]
    ctxs = [c for c, _ in sims]
    steps_per_frame = round(args.save_ps * 1000 / args.dt_fs)
    t0 = time.time()
    for _, integ in sims:
        integ.step(round(args.equil_ps * 1000 / args.dt_fs))
    t_equil, t1 = time.time() - t0, time.time()
    n_max, rng = round(args.ns * 1000 / args.save_ps), np.random.default_rng(args.seed)
    stats = np.zeros((len(temps), 2))
    xs, es = [], []
    while len(xs) < n_max and (args.max_minutes is None or time.time() - t1 < 60 * args.max_minutes):
        for _, integ in sims:
            integ.step(steps_per_frame)
        if len(temps) > 1:
            try_swaps(ctxs, temps, len(xs) % 2, rng, stats)
        st = ctxs[0].getState(getPositions=True, getEnergy=True)
        xs.append(st.getPositions(asNumpy=True)._value.reshape(-1).astype(np.float32))
        es.append(st.getPotentialEnergy()._value / target.kT)
    wall = time.time() - t1
    ns = len(xs) * args.save_ps / 1000
    run = {"frames": len(xs), "production_ns": ns, "equilibration_ps": args.equil_ps,
           "equilibration_wall_s": round(t_equil, 1), "production_wall_s": round(wall, 1),
           "ns_per_day": round(ns / wall * 86400, 2) if wall > 0 else None, "temperatures_K": temps,
           "swap_acceptance": [round(a / max(n, 1), 3) for a, n in stats[:-1]]}
    return np.stack(xs), np.asarray(es), run


def _one_chain(args: argparse.Namespace, k: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Chain k of `run_chains`, in its own process: the target built there, seed args.seed + k."""
    torch.set_num_threads(1)
    from diffsampler import targets

    return run_md(targets.get(args.target), argparse.Namespace(**{**vars(args), "seed": args.seed + k}))


def run_chains(args) -> tuple[np.ndarray, np.ndarray, dict]:
    """`args.chains` independent runs of `run_md` in as many processes (each from the minimised
    structure, its own seed); frames concatenated in chain order, so that with two chains the
    convergence check's halves are the two independent chains."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.chains, mp_context=mp.get_context("spawn")) as pool:
        parts = list(pool.map(_one_chain, [args] * args.chains, range(args.chains)))
    runs = [r for _, _, r in parts]
    run = {"chains": args.chains, "frames": sum(r["frames"] for r in runs),
           "production_ns": sum(r["production_ns"] for r in runs), "per_chain": runs}
    return np.concatenate([x for x, _, _ in parts]), np.concatenate([e for _, e, _ in parts]), run


def basin_populations(target, x: np.ndarray) -> dict[str, list[float]]:
    """{'1': [pop per basin in BASINS order], ...} per alanine."""
    from diffsampler.evaluation.peptides import BASINS, basin_index, torsions_of

    t = torsions_of(target, torch.as_tensor(x, dtype=torch.float64))
    out = {}
    for k in [n[3:] for n in t if n.startswith("phi")]:
        b = basin_index(t[f"phi{k}"], t[f"psi{k}"])
        out[k] = [float((b == i).double().mean()) for i in range(len(BASINS))]
    return out


def convergence(target, x: np.ndarray, tol: float) -> dict:
    """Basin populations of the two halves, their largest difference, and whether it is <= tol."""
    from diffsampler.evaluation.peptides import BASINS

    h = x.shape[0] // 2
    first, second = basin_populations(target, x[:h]), basin_populations(target, x[h:])
    diff = max(abs(a - b) for k in first for a, b in zip(first[k], second[k]))
    return {"basins": list(BASINS), "first_half": first, "second_half": second, "all": basin_populations(target, x),
            "max_abs_difference": diff, "tolerance": tol, "converged": bool(diff <= tol)}


def chain_convergence(target, parts: list[np.ndarray], tol: float) -> dict:
    """Basin populations of each independent chain, the largest difference between any two chains
    in any basin, and whether it is <= tol (the two-chain form of `convergence`, for any K >= 2)."""
    from diffsampler.evaluation.peptides import BASINS

    pops = [basin_populations(target, x) for x in parts]
    diff = max(abs(a[k][i] - b[k][i]) for j, a in enumerate(pops) for b in pops[j + 1:]
               for k in a for i in range(len(BASINS)))
    pooled = np.concatenate(parts)
    return {"basins": list(BASINS), "per_chain": pops, "frames_per_chain": [len(x) for x in parts],
            "all": basin_populations(target, pooled), "max_abs_difference": diff, "tolerance": tol,
            "converged": bool(diff <= tol)}


def merge_runs(target, paths: list[Path], tol: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Frames of independent runs of this script (their .npz), pooled: each must be of the target's
    variant; the check compares the runs with one another (`chain_convergence`)."""
    xs, es, runs = [], [], []
    for path in paths:
        with np.load(path) as f:
            if str(f["variant"]) != target.variant:
                raise SystemExit(f"{path}: variant {str(f['variant'])!r} is not the target's {target.variant!r}")
            xs.append(f["x"])
            es.append(f["energy"])
            runs.append({"file": str(path), **json.loads(str(f["summary"]))})
    run = {"chains": len(xs), "frames": sum(len(x) for x in xs),
           "production_ns": sum(r["run"].get("production_ns", 0.0) for r in runs),
           "per_chain": [{"file": r["file"], "settings": r["settings"], "run": r["run"]} for r in runs]}
    conv = chain_convergence(target, xs, tol)
    # each run's own check (its halves), kept beside the runs' agreement: blocks shorter than a run
    # vary more, which bounds how far the pooled populations can be trusted
    conv["own_halves_max_abs_difference"] = [r.get("convergence", {}).get("max_abs_difference") for r in runs]
    return np.concatenate(xs), np.concatenate(es), {"run": run, "convergence": conv}


def check_energies(target, x: np.ndarray, e: np.ndarray, k: int = 20) -> float:
    """Largest |E_target(x) - E_md(x)| (kT) on k frames: the cached energies are the target's."""
    idx = np.linspace(0, x.shape[0] - 1, min(k, x.shape[0])).astype(int)
    with torch.no_grad():
        et = target.energy(torch.as_tensor(x[idx], dtype=torch.float64), check_finite=False).numpy()
    return float(np.abs(et - e[idx]).max())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Langevin-MD reference ensemble of a peptide target")
    p.add_argument("target", nargs="?", default="aldp")
    p.add_argument("--ns", type=float, default=20.0, help="production length per chain (ns)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop production after this wall time")
    p.add_argument("--equil-ps", type=float, default=100.0)
    p.add_argument("--save-ps", type=float, default=1.0)
    p.add_argument("--dt-fs", type=float, default=2.0)
    p.add_argument("--hmr", type=float, default=3.0, help="hydrogen mass (amu); 0: no repartitioning")
    p.add_argument("--friction", type=float, default=1.0, help="1/ps")
    p.add_argument("--replicas", type=int, default=1, help="replica exchange over this many temperatures; 1: plain MD")
    p.add_argument("--t-max", type=float, default=600.0, help="highest replica temperature (K)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--chains", type=int, default=2,
                   help="independent runs, one process each (seeds seed, seed + 1, ...); frames concatenated")
    p.add_argument("--tol", type=float, default=0.05, help="basin-population tolerance between halves")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="NPZ",
                   help="run nothing: pool these independent runs of the target (files this script wrote), "
                        "checking the runs against one another")
    return p.parse_args(argv)


def run_settings(args: argparse.Namespace, target) -> dict:
    """The command's options and the fixed facts of the dynamics, stored with the frames."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings.update(integrator="LangevinMiddleIntegrator", method="replica exchange" if args.replicas > 1 else "MD",
                    temperature_K=target.temperature, constraints=None,
                    platform="CPU", openmm_version=__import__("openmm").__version__)
    return settings


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    from diffsampler import targets

    target = targets.get(args.target)
    if args.merge:
        x, e, merged = merge_runs(target, args.merge, args.tol)
        summary = {"variant": target.variant, "settings": {"method": "independent runs pooled",
                                                           "files": [str(p) for p in args.merge]}, **merged}
    else:
        x, e, run = run_chains(args) if args.chains > 1 else run_md(target, args)
        summary = {"variant": target.variant, "settings": run_settings(args, target), "run": run,
                   "convergence": convergence(target, x, args.tol)}
    summary["energy_check_max_abs_kT"] = check_energies(target, x, e)
    out = args.out or CACHE / f"{target.name}_reference.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x=x, energy=e, variant=np.array(target.variant), summary=np.array(json.dumps(summary)))
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"wrote {len(x)} frames to {out}")
    return summary


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
