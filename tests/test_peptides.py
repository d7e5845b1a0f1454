"""Peptide targets (OpenMM) and their evaluation: energies against direct OpenMM calls, units,
non-finite handling, call counts, symmetry, validity, torsions, trajectory files."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm", reason="OpenMM not installed (pip install diffsampler[peptides])")
md = pytest.importorskip("mdtraj", reason="mdtraj not installed (pip install diffsampler[peptides])")

from diffsampler import targets
from diffsampler.errors import MissingDependencyError, NonFiniteError, ShapeError
from diffsampler.evaluation import peptides as P
from diffsampler.targets.openmm import evaluate_rows, make_context, require
from diffsampler.targets.peptides import PeptideTarget, structure_file

KT_300 = 2.494338785445972  # kJ/mol = R * 300 K


@pytest.fixture(scope="module")
def aldp():
    torch.set_num_threads(1)
    return targets.get("aldp")


@pytest.fixture(scope="module")
def aldp_ref():
    """The same density on OpenMM's double-precision Reference platform (for tight checks)."""
    return PeptideTarget("aldp", platform="Reference")


def perturbed(t, B, scale=0.005, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(t.positions.reshape(1, -1), dtype=torch.float64)
    return x0 + scale * torch.randn(B, t.dim, generator=g, dtype=torch.float64)


def random_rotation(seed=0):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def test_energy_and_forces_equal_direct_openmm(aldp):
    x = perturbed(aldp, 5)
    ctx = make_context(aldp.system, "CPU")
    U, F = [], []
    for row in x.numpy().reshape(5, -1, 3):
        ctx.setPositions(row * openmm.unit.nanometer)
        st = ctx.getState(getEnergy=True, getForces=True)
        U.append(st.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
        F.append(st.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer))
    U, F = np.array(U), np.array(F).reshape(5, -1)
    log_r, score = aldp.log_reward_and_score(x)
    np.testing.assert_allclose(-log_r.numpy() * aldp.kT, U, rtol=1e-6)
    np.testing.assert_allclose(score.numpy() * aldp.kT, F, rtol=1e-6, atol=1e-6 * np.abs(F).max())
    np.testing.assert_allclose(aldp.energy(x).numpy() * aldp.kT, U, rtol=1e-6)


def test_gradient_matches_central_differences(aldp_ref):
    x = perturbed(aldp_ref, 3, seed=1)
    _, g = aldp_ref._energy_and_grad(x)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    h = 1e-5
    fd = (aldp_ref._energy_and_grad(x + h * v)[0] - aldp_ref._energy_and_grad(x - h * v)[0]) / (2 * h)
    np.testing.assert_allclose((g * v).sum(1).numpy(), fd.numpy(), rtol=1e-5, atol=1e-4)


def test_units_kT_at_300K_and_temperature_scaling(aldp_ref):
    assert abs(aldp_ref.kT - 2.494) < 1e-3 and abs(aldp_ref.kT - KT_300) < 1e-12
    x = perturbed(aldp_ref, 2)
    U, _ = evaluate_rows(aldp_ref._context, x.numpy().reshape(2, -1, 3))     # kJ/mol
    np.testing.assert_allclose(aldp_ref.energy(x).numpy(), U / KT_300, rtol=1e-12)
    hot = PeptideTarget("aldp", temperature=600.0, platform="Reference")
    assert hot.name == "aldp_600K"
    np.testing.assert_allclose(hot.energy(x).numpy() * 2, aldp_ref.energy(x).numpy(), rtol=1e-12)


def test_autograd_path_uses_openmm_gradient_and_counts_once(aldp):
    x = perturbed(aldp, 4).requires_grad_(True)
    c0 = aldp.counter.total
    e = aldp.energy(x)
    e.sum().backward()
    assert aldp.counter.total == c0 + 4
    _, g = aldp._energy_and_grad(x.detach())
    torch.testing.assert_close(x.grad, g)
    with aldp.counter.use("search"):
        _, s = aldp.log_reward_and_score(x)
        _, s2 = aldp.log_reward_and_score(x, create_graph=True)
    assert aldp.counter.counts["search"] == 8 and aldp.counter.total == c0 + 12
    torch.testing.assert_close(s, -g)
    torch.testing.assert_close(s2.detach(), -g)


def test_exploded_geometry_is_non_finite_not_a_crash(aldp):
    x = perturbed(aldp, 4)
    x[1, 5] = float("nan")                          # NaN coordinate
    x[2, 3:6] = x[2, 0:3]                           # two atoms on top of each other: r = 0
    x[3] = x[3] * 1e30                              # exploded
    c0 = aldp.counter.total
    with pytest.raises(NonFiniteError, match="non-finite"):
        aldp.energy(x)
    with pytest.raises(NonFiniteError):
        aldp.log_reward_and_score(x, check_finite=True)
    e = aldp.energy(x, check_finite=False)
    lr, s = aldp.log_reward_and_score(x, check_finite=False)
    assert torch.isfinite(e[0]) and not torch.isfinite(e[1:]).any()
    assert torch.isfinite(s[0]).all() and not torch.isfinite(lr[1:]).any()
    lr, s = aldp.log_reward_and_score(x)             # the default policy: zero density, zero score
    assert torch.isfinite(lr[0]) and torch.isneginf(lr[1:]).all() and torch.equal(s[1:], torch.zeros_like(s[1:]))
    assert aldp.counter.total == c0 + 20              # every row counts, bad ones too
    assert torch.isfinite(aldp.energy(perturbed(aldp, 2))).all()   # the Context still works


def test_energy_invariant_under_rotation_translation(aldp_ref):
    x = perturbed(aldp_ref, 3, seed=3)
    R, shift = random_rotation(5), torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64)
    y = (x.view(3, -1, 3) @ R.T + shift).reshape(3, -1)
    torch.testing.assert_close(aldp_ref.energy(y), aldp_ref.energy(x), rtol=1e-9, atol=1e-9)


def test_reflection_keeps_energy_but_flips_chirality(aldp_ref):
    """amber14's torsion phases are all 0 or 180 degrees, so U(-x) = U(x): chirality is not in the
    energy (module docstring of targets/openmm.py); the validity check is what tells L from D."""
    x = perturbed(aldp_ref, 3, seed=4)
    mirror = -x
    torch.testing.assert_close(aldp_ref.energy(mirror), aldp_ref.energy(x), rtol=1e-9, atol=1e-9)
    assert P.validity(aldp_ref, x)["valid"].all()
    v = P.validity(aldp_ref, mirror)
    assert not v["chirality"].any() and v["bonds"].all() and not v["valid"].any()


def test_samples_leave_as_the_l_enantiomer(aldp_ref):
    """to_user inverts a row whose CA is D (x -> -x, the same energy) and leaves L rows and rows of
    targets whose force field is not marked mirror-symmetric as they are."""
    x = perturbed(aldp_ref, 4, seed=6)
    mixed = torch.cat([x[:2], -x[2:]])                       # two L rows, two D rows
    out = aldp_ref.to_user(mixed)
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    assert P.validity(aldp_ref, out)["valid"].all()
    torch.testing.assert_close(aldp_ref.energy(out), aldp_ref.energy(mixed), rtol=1e-9, atol=1e-9)
    from diffsampler.targets.openmm import OpenMMTarget
    plain = OpenMMTarget(aldp_ref.system, aldp_ref.topology, platform="CPU")
    torch.testing.assert_close(plain.to_user(mixed), mixed, rtol=0, atol=0)
    plain.close()


@pytest.mark.parametrize("name", ["aldp", "ala4"])
def test_validity_flags_broken_bond_and_clash(name):
    t = targets.get(name)
    x = perturbed(t, 3, scale=0.002)
    h, c = next((a.index, b.index) for a, b in t.topology.bonds() if a.element.symbol == "H")
    u = x[1, 3 * h:3 * h + 3] - x[1, 3 * c:3 * c + 3]
    x[1, 3 * h:3 * h + 3] += 0.1 * u / u.norm()     # pull a hydrogen 0.1 nm off along its bond
    o = [a.index for a in t.topology.atoms() if a.name == "O"]
    x[2, 3 * o[-1]:3 * o[-1] + 3] = x[2, 3 * o[0]:3 * o[0] + 3] + 0.05   # two O 0.05 nm apart
    v = P.validity(t, x)
    assert v["valid"].tolist() == [True, False, False]
    assert v["bonds"].tolist()[1] is False and v["contacts"].tolist()[2] is False
    assert v["chirality"].all()


@pytest.mark.parametrize("name", ["aldp", "ala3", "ala4"])
def test_torsions_match_mdtraj(name):
    t = targets.get(name)
    x = perturbed(t, 4, scale=0.02, seed=6)
    traj = md.Trajectory(x.numpy().reshape(4, -1, 3), md.Topology.from_openmm(t.topology))
    tors = P.torsions_of(t, x)
    n_ala = name == "aldp" and 1 or int(name[-1]) - 1
    for kind, fn in (("phi", md.compute_phi), ("psi", md.compute_psi)):
        ref = fn(traj)[1]
        assert ref.shape[1] == n_ala
        ours = torch.stack([tors[f"{kind}{k + 1}"] for k in range(n_ala)], 1).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    if n_ala > 1:                                   # mdtraj's omega: the Ala-Ala peptide bonds
        ours = torch.stack([tors[f"omega{k}"] for k in range(2, n_ala + 1)], 1).numpy()
        np.testing.assert_allclose(np.cos(ours), np.cos(md.compute_omega(traj)[1]), atol=1e-5)


def test_minimised_structures_are_valid_and_l():
    for name in ("aldp", "ala3", "ala4"):
        t = targets.get(name)
        x = torch.as_tensor(t.positions.reshape(1, -1))
        assert P.validity(t, x)["valid"].all()
        assert (P.chirality_volumes(x, t.topology) > 1e-3).all()


@pytest.mark.parametrize("fmt", ["pdb", "dcd"])
def test_trajectory_round_trip(aldp, tmp_path, fmt):
    x = perturbed(aldp, 3, scale=0.01)
    path = P.write_trajectory(aldp, x, str(tmp_path / f"traj.{fmt}"))
    traj = md.load(path, top=str(structure_file("aldp"))) if fmt == "dcd" else md.load(path)
    assert traj.n_frames == 3 and traj.n_atoms == 22
    atol = 6e-5 if fmt == "pdb" else 1e-6         # PDB: 1e-3 A = 1e-4 nm printed precision
    np.testing.assert_allclose(traj.xyz.reshape(3, -1), x.numpy(), atol=atol)
    assert [a.name for a in traj.topology.atoms] == [a.name for a in aldp.topology.atoms()]
    with pytest.raises(ValueError, match="pdb' or 'dcd"):
        P.write_trajectory(aldp, x, str(tmp_path / "t.xyz"))


def test_mean_free_reference_and_centred_samples(aldp, monkeypatch, tmp_path):
    from diffsampler.sde.mean_free import MeanFreePinnedBrownian

    ref = aldp.make_reference(aldp.sigma)
    assert isinstance(ref, MeanFreePinnedBrownian) and ref.free_dim == 63
    x = perturbed(aldp, 5) + 3.0
    np.save(tmp_path / "x.npy", x.numpy())
    np.savez(tmp_path / "aldp_reference.npz", x=x.numpy(), variant=np.array(aldp.variant))
    monkeypatch.setenv("DIFFSAMPLER_DATA", str(tmp_path))
    t = targets.get("aldp")
    assert t.has_samples
    s = t.sample(4)
    assert s.shape == (4, 66) and s.view(4, 22, 3).mean(1).abs().max() < 1e-6
    np.savez(tmp_path / "aldp_vacuum_reference.npz", x=x.numpy(), variant=np.array(aldp.variant))
    with pytest.raises(ShapeError, match="holds samples of"):
        targets.get("aldp_vacuum").sample(2)


def test_metrics_and_plots(aldp, tmp_path):
    x_ref = perturbed(aldp, 300, scale=0.003, seed=7)
    x = perturbed(aldp, 200, scale=0.003, seed=8)
    x[0] = -x[0]                                   # one D sample: invalid
    m = aldp.extra_metrics(x, x_ref)
    assert m["frac_valid"] == pytest.approx(199 / 200) and m["frac_chirality"] == pytest.approx(199 / 200)
    assert m["kl_phi1"] < 0.2 and m["energy_w1"] < 5 and m["pop1_C7eq"] == pytest.approx(1.0)
    assert m["pop1_C7eq_ref"] == pytest.approx(1.0)
    mw = aldp.extra_metrics(x, x_ref, log_w=torch.zeros(200))
    for k in ("kl_phi1", "kl_phipsi1", "pop1_C7eq", "energy_w1", "energy_w2"):
        assert mw[f"is_{k}"] == pytest.approx(mw[k], rel=1e-9, abs=1e-12)
    own = aldp.extra_metrics(x, None, log_w=torch.zeros(200))    # no reference: own populations
    assert own["pop1_C7eq"] == pytest.approx(m["pop1_C7eq"]) and own["is_pop1_C7eq"] == pytest.approx(1.0)
    assert "kl_phi1" not in own and own["energy_mean"] == pytest.approx(m["energy_mean"])
    aldp.extra_plots(x, x_ref, str(tmp_path), "aldp test")
    assert (tmp_path / "ramachandran.png").stat().st_size > 0 and (tmp_path / "energy_histogram.png").is_file()


def test_basins_partition_and_kl():
    g = torch.linspace(-math.pi, math.pi - 1e-9, 181)
    phi, psi = torch.meshgrid(g, g, indexing="ij")
    b = P.basin_index(phi.reshape(-1), psi.reshape(-1))
    assert set(b.tolist()) == set(range(5))
    deg = torch.deg2rad(torch.tensor([[-83.0, 73.0], [-155.0, 160.0], [-70.0, -40.0], [60.0, 45.0], [75.0, -65.0]]))
    assert P.basin_index(deg[:, 0], deg[:, 1]).tolist() == [0, 1, 2, 3, 4]   # C7eq C5 aR aL C7ax
    p = torch.tensor([0.5, 0.5, 0.0])
    assert P.kl_histograms(p, p) == pytest.approx(0.0, abs=1e-12)
    expected = 0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-6)
    assert P.kl_histograms(p, torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(expected, rel=1e-3)


def test_weighted_wasserstein_uniform_weights_equals_unweighted():
    from diffsampler.evaluation.particles import wasserstein_1d

    a, b = np.random.default_rng(0).normal(size=37), np.random.default_rng(1).normal(1, 2, size=50)
    for p in (1, 2):
        assert P.weighted_wasserstein_1d(a, np.ones(37), b, p) == pytest.approx(wasserstein_1d(a, b, p), rel=1e-12)
    w = np.r_[np.ones(36), 0.0]                    # a zero weight removes a point
    assert P.weighted_wasserstein_1d(a, w, b, 1) == pytest.approx(wasserstein_1d(a[:36], b, 1), rel=1e-12)


def test_worker_pool_matches_single_process():
    t = PeptideTarget("aldp", n_workers=2)
    try:
        x = perturbed(t, 6)
        e2, g2 = t._energy_and_grad(x)
    finally:
        t.close()
    e1, g1 = targets.get("aldp")._energy_and_grad(x)
    torch.testing.assert_close(e2, e1)
    torch.testing.assert_close(g2, g1)


def test_registry_and_info():
    for name in ("aldp", "ala3", "ala4", "aldp_vacuum"):
        info = targets.get(name).info()
        assert "amber14" in info["variant"] and "300 K" in info["variant"] and info["dim"] == 3 * info["n_atoms"]
    assert targets.get("ala4").dim == 126 and "OBC2" in targets.get("ala3").info()["solvent"]
    with pytest.raises(MissingDependencyError, match="never downloads"):
        if importlib.util.find_spec("torchani") is None:
            targets.get("aldp_ani2x")
        else:
            raise MissingDependencyError("never downloads (torchani present: skip)")


def test_missing_dependency_message():
    with pytest.raises(MissingDependencyError, match=r"pip install diffsampler\[peptides\]"):
        require("no_such_module_for_peptides")
    code = ("import sys; sys.modules['openmm'] = None; sys.modules['openmm.app'] = None\n"
            "import diffsampler, diffsampler.targets as T\n"
            "try:\n    T.get('aldp')\nexcept Exception as e:\n    print(type(e).__name__, e)")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert "MissingDependencyError" in r.stdout and "pip install diffsampler[peptides]" in r.stdout, r.stderr
    code = ("import sys, json; sys.modules['openmm'] = None; sys.modules['openmm.app'] = None\n"
            "from diffsampler.cli import main\nmain(['targets', '--json'])")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    by = {row["name"]: row for row in json.loads(r.stdout)}
    assert by["manywell32"]["dim"] == 32 and by["aldp"]["dim"] is None and "peptides" in by["aldp"]["unavailable"]


def test_cli_energy_of_openmmtools_coordinates(tmp_path, aldp):
    spec = importlib.util.find_spec("openmmtools")
    pdb = (Path(spec.submodule_search_locations[0]) / "data" / "alanine-dipeptide-gbsa" / "alanine-dipeptide.pdb"
           if spec else structure_file("aldp"))
    x = np.asarray(openmm.app.PDBFile(str(pdb)).getPositions(asNumpy=True)._value).reshape(1, -1)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([sys.executable, "-m", "diffsampler", "energy", "aldp", str(tmp_path / "x.npy"), "-o",
                        str(tmp_path / "e.npy")], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), aldp.energy(torch.as_tensor(x)).numpy(), rtol=1e-6)


def test_generic_openmm_target_units_with_a_harmonic_bond():
    """Two particles, U = k/2 (r - r0)^2 with k = 1000 kJ/(mol nm^2), r0 = 0.1 nm: E = U / (R T)."""
    from diffsampler.targets.openmm import OpenMMTarget

    system = openmm.System()
    for _ in range(2):
        system.addParticle(12.0)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.1, 1000.0)
    system.addForce(bond)
    t = OpenMMTarget(system, None, temperature=300.0, platform="Reference", name="bond")
    x = torch.tensor([[0.0, 0.0, 0.0, 0.15, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.08]], dtype=torch.float64)
    e, g = t._energy_and_grad(x)
    np.testing.assert_allclose(e.numpy(), [0.5 * 1000 * d ** 2 / KT_300 for d in (0.05, 0.02)], rtol=1e-12)
    np.testing.assert_allclose(g[0].numpy(), np.array([-50.0, 0, 0, 50.0, 0, 0]) / KT_300, atol=1e-12)
    assert t.extra_metrics(x, x) == {} and t.dim == 6 and t.info()["units"] == "x in nm; E in kT"
    system.addConstraint(0, 1, 0.1)
    with pytest.raises(ValueError, match="constraints"):
        OpenMMTarget(system, None)


def test_a_molecule_from_a_pdb_file_is_the_built_in_peptide_with_the_same_structure(tmp_path):
    """``FILE.pdb[:SOLVENT]`` builds the peptides' System (amber14, OBC2 or vacuum) from a user's PDB:
    with aldp's own structure file its energies and forces equal the `aldp` / `aldp_vacuum` targets'
    (the same System), the run records the file's SHA-256, the peptides' settings apply, and bad
    files or options give one clear error."""
    import shutil

    from diffsampler.errors import TargetSpecError
    from diffsampler.targets.spec import file_sha256, resolve_target
    from diffsampler.training.defaults import default_keys

    pdb = tmp_path / "mymol.pdb"
    shutil.copy(structure_file("aldp"), pdb)
    torch.manual_seed(0)
    for spec, builtin in ((str(pdb), "aldp"), (f"{pdb}:vacuum", "aldp_vacuum")):
        mine, ref = resolve_target(spec), targets.get(builtin)
        x = torch.from_numpy(ref.positions).reshape(1, -1) + 0.002 * torch.randn(4, ref.dim, dtype=torch.float64)
        e1, g1 = mine._energy_and_grad(x)
        e0, g0 = ref._energy_and_grad(x)
        torch.testing.assert_close(e1, e0, rtol=1e-12, atol=0)
        torch.testing.assert_close(g1, g0, rtol=1e-12, atol=1e-12)
        assert mine.name == "mymol" and mine.spec_record.sha256 == file_sha256(pdb)
    assert default_keys(mine)["searcher"] == "mala" and default_keys(mine)["coordinates"] == "internal"
    lines = pdb.read_text().splitlines()
    no_h = tmp_path / "noh.pdb"
    no_h.write_text("\n".join(ln for ln in lines if not (ln.startswith(("ATOM", "HETATM")) and ln[76:78].strip() == "H")))
    (tmp_path / "empty.pdb").write_text("END\n")
    for spec, opts, words in ((f"{pdb}:water", {}, "unknown solvent"), (str(no_h), {}, "pdbfixer"),
                              (str(tmp_path / "empty.pdb"), {}, "cannot read it as a PDB file"), (str(pdb), {"dim": 3}, "give dim=66"),
                              (str(pdb), {"log_Z": 1.0}, "log_Z")):
        with pytest.raises(TargetSpecError, match=words):
            resolve_target(spec, opts)


def test_reference_script_runs_independent_chains_and_stores_the_targets_energies(tmp_path):
    """experiments/peptides/reference.py --chains 2: two MD runs in two processes, their frames
    concatenated (chain against chain in the halves check), energies stored in kT equal to the
    target's at the stored frames (float32 positions), the settings and per-chain figures recorded."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ref.npz"
    r = subprocess.run([sys.executable, str(root / "experiments" / "peptides" / "reference.py"), "aldp", "--ns", "0.006",
                        "--equil-ps", "0.5", "--chains", "2", "--out", str(out)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    z = np.load(out)
    summary = json.loads(str(z["summary"]))
    assert z["x"].shape == (12, 66) and z["energy"].shape == (12,) and str(z["variant"]) == targets.get("aldp").variant
    assert summary["run"]["chains"] == 2 and [c["frames"] for c in summary["run"]["per_chain"]] == [6, 6]
    assert summary["energy_check_max_abs_kT"] < 1e-2 and summary["settings"]["chains"] == 2
    assert not np.allclose(z["x"][:6], z["x"][6:])   # two seeds, two trajectories
    assert set(summary["convergence"]) >= {"first_half", "second_half", "max_abs_difference", "converged"}
    # --merge pools independent runs (here the two chains, saved apart) and checks them against each other
    parts = [tmp_path / "a.npz", tmp_path / "b.npz"]
    for path, sl in zip(parts, (slice(0, 6), slice(6, 12))):
        np.savez(path, x=z["x"][sl], energy=z["energy"][sl], variant=z["variant"], summary=z["summary"])
    merged = tmp_path / "merged.npz"
    script = [sys.executable, str(root / "experiments" / "peptides" / "reference.py"), "aldp"]
    r = subprocess.run(script + ["--merge", *map(str, parts), "--out", str(merged)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = np.load(merged)
    conv = json.loads(str(m["summary"]))["convergence"]
    np.testing.assert_array_equal(m["x"], z["x"])
    assert conv["frames_per_chain"] == [6, 6] and len(conv["per_chain"]) == 2
    assert conv["own_halves_max_abs_difference"] == [summary["convergence"]["max_abs_difference"]] * 2
    assert conv["per_chain"][0] == summary["convergence"]["first_half"]      # the same frames, the same populations
    np.savez(parts[1], x=z["x"][6:], energy=z["energy"][6:], variant=np.array("another variant"), summary=z["summary"])
    r = subprocess.run(script + ["--merge", *map(str, parts), "--out", str(merged)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "is not the target's" in r.stderr


def test_a_reference_whose_run_did_not_converge_is_not_used(aldp, monkeypatch, tmp_path):
    x = perturbed(aldp, 5)
    monkeypatch.setenv("DIFFSAMPLER_DATA", str(tmp_path))
    for converged in (False, True):
        summary = json.dumps({"convergence": {"max_abs_difference": 0.079, "tolerance": 0.05, "converged": converged}})
        np.savez(tmp_path / "aldp_reference.npz", x=x.numpy(), variant=np.array(aldp.variant),
                 summary=np.array(summary))
        t = targets.get("aldp")
        if converged:
            assert t.has_samples and t.sample(3).shape == (3, 66)
        else:
            with pytest.warns(UserWarning, match="did not converge"):
                assert not t.has_samples
