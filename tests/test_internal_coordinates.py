"""Internal coordinates of molecules (targets/zmatrix.py) and a molecule seen in them
(targets/internal_coordinates.py): exact round trips, the Jacobian against autograd's determinant,
torsions against mdtraj, the view's energy and gradient, and training in them."""
import math
from pathlib import Path

import pytest
import torch

from diffsampler.targets.zmatrix import ZMatrix, dihedral, place

openmm = pytest.importorskip("openmm", reason="OpenMM not installed (pip install diffsampler[peptides])")
md = pytest.importorskip("mdtraj", reason="mdtraj not installed (pip install diffsampler[peptides])")

from diffsampler import targets  # noqa: E402
from diffsampler.errors import ConfigError  # noqa: E402
from diffsampler.targets.internal_coordinates import InternalCoordinateTarget, zmatrix_of  # noqa: E402
from diffsampler.targets.peptides import PeptideTarget, structure_file  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def aldp():
    torch.set_num_threads(1)
    return PeptideTarget("aldp", platform="Reference")


@pytest.fixture(scope="module")
def view(aldp):
    return InternalCoordinateTarget.build(aldp)


def positions(name="aldp", scale=0.01, n=4, seed=0):
    t = md.load(str(structure_file(name)))
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(t.xyz[0], dtype=torch.float64)
    return x + scale * torch.randn(n, *x.shape, generator=g, dtype=torch.float64), t


def distances(p):
    return torch.cdist(p, p, compute_mode="donot_use_mm_for_euclid_dist")


def rotation(w):
    W = torch.zeros(3, 3, dtype=w.dtype)
    W[0, 1], W[0, 2], W[1, 2] = -w[2], w[1], -w[0]
    return torch.matrix_exp(W - W.T)


def test_place_gives_the_requested_bond_angle_and_dihedral():
    g = torch.Generator().manual_seed(1)
    b, c, d = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    r = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    theta = torch.rand(5, generator=g, dtype=torch.float64) * 3.0 + 0.05
    tau = (torch.rand(5, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    a = place(b, c, d, r, theta, tau)
    u, v = a - b, c - b
    assert torch.allclose((a - b).norm(dim=-1), r)
    assert torch.allclose(torch.arccos((u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))), theta)
    assert torch.allclose(dihedral(a, b, c, d), tau)


@pytest.mark.parametrize("name", ["aldp", "ala3", "ala4"])
def test_round_trip_keeps_every_distance(name):
    pos, t = positions(name)
    zm = zmatrix_of(PeptideTarget(name, platform="Reference"))
    assert zm.dim == 3 * t.n_atoms - 6
    q = zm.to_internal(pos)
    back = zm.to_cartesian(q)
    assert torch.allclose(distances(back), distances(pos), atol=1e-12)
    assert torch.allclose(zm.to_internal(back), q, atol=1e-12)


def test_backbone_torsions_are_coordinates_and_agree_with_mdtraj():
    """phi and psi are each one proper torsion of the Z-matrix (up to a fixed offset: the coordinate
    may be phi through another atom of the same rigid group), and the dihedral convention is mdtraj's."""
    pos, t = positions("aldp", scale=0.0, n=1)
    traj = md.Trajectory(pos.numpy(), t.topology)
    zm = ZMatrix.from_bonds(t.n_atoms, [(a.index, b.index) for a, b in t.topology.bonds],
                            [a.element.symbol != "H" for a in t.topology.atoms])
    for k in range(3, zm.n_atoms):
        a, (b, c, d) = zm.order[k], zm.refs[k]
        ours = float(dihedral(*(pos[:, i] for i in (a, b, c, d)))[0])
        assert ours == pytest.approx(float(md.compute_dihedrals(traj, [[a, b, c, d]])[0, 0]), abs=1e-5)
    names = {(t.topology.atom(zm.order[k]).name, t.topology.atom(zm.refs[k][0]).name,
              t.topology.atom(zm.refs[k][1]).name) for k in range(3, zm.n_atoms) if not zm.sibling[k]}
    assert ("C", "N", "CA") in names                      # ACE's C about N-CA: phi
    assert any(n[1:] == ("C", "CA") for n in names)       # an atom on C about C-CA: psi


def test_log_jacobian_equals_autograd_determinant():
    """With the six external coordinates (translation t, rotation vector w at 0) added, the map
    (q, t, w) -> x is a bijection locally, and log |det| of its Jacobian is sum 2 log r + sum log sin theta."""
    pos, t = positions("aldp", n=2)
    zm = ZMatrix.from_bonds(t.n_atoms, [(a.index, b.index) for a, b in t.topology.bonds],
                            [a.element.symbol != "H" for a in t.topology.atoms])
    for q in zm.to_internal(pos):
        def full(v):
            p = zm.to_cartesian(v[None, : zm.dim])[0]
            return (p @ rotation(v[zm.dim + 3:]).T + v[zm.dim: zm.dim + 3]).reshape(-1)
        v = torch.cat([q, torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)])
        J = torch.autograd.functional.jacobian(full, v)
        assert float(torch.linalg.slogdet(J)[1]) == pytest.approx(float(zm.log_jacobian(q[None])[0]), abs=1e-9)


def test_view_energy_is_the_marginal_with_every_jacobian(aldp, view):
    """E_u(u) - E(x(u)) = -log |dx/du| (external coordinates added), checked against autograd's
    determinant of the whole map u -> x: whitening, the torsions' tanh map and the Z-matrix at once."""
    pos, _ = positions("aldp", n=2, seed=3)
    u = view.from_user(pos.reshape(2, -1))
    e_u = view._energy(u)
    e_x = aldp._energy(view.to_user(u).double())
    zm = view.zmatrix
    for i in range(2):
        def full(v):
            q, _ = view.internal(v[None, : zm.dim])
            p = zm.to_cartesian(q)[0]
            return (p @ rotation(v[zm.dim + 3:]).T + v[zm.dim: zm.dim + 3]).reshape(-1)
        v = torch.cat([u[i], torch.zeros(6, dtype=torch.float64)])
        log_det = float(torch.linalg.slogdet(torch.autograd.functional.jacobian(full, v))[1])
        assert float(e_u[i] - e_x[i]) == pytest.approx(-log_det, abs=1e-6)


def test_view_round_trip_gradient_and_counting(aldp, view):
    pos, _ = positions("aldp", n=3, seed=4)
    x = pos.reshape(3, -1)
    u = view.from_user(x)
    back = view.to_user(u).reshape(3, -1, 3)
    assert torch.allclose(distances(back), distances(pos), atol=1e-10)
    assert torch.allclose(view.from_user(view.to_user(u)), u, atol=1e-8)
    before = aldp.counter.total
    log_r, score = view.log_reward_and_score(u)
    assert aldp.counter.total - before == 3
    ug = u.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(view._energy(ug).sum(), ug)       # autograd through OpenMM's forces
    assert torch.allclose(-score, g, rtol=1e-6, atol=1e-6)
    h = 1e-5
    for i in (0, 30, view.n_stiff, view.dim - 1):
        e = torch.zeros_like(u)
        e[:, i] = h
        fd = (view._energy(u + e) - view._energy(u - e)) / (2 * h)
        assert torch.allclose(-score[:, i], fd, rtol=1e-4, atol=1e-3)


def test_structure_is_the_origin_and_scales_whiten_the_stiff_coordinates(aldp, view):
    x0 = torch.as_tensor(aldp.positions, dtype=torch.float64).reshape(1, -1)
    assert view.from_user(x0).abs().max() < 1e-9
    # bonds: 1 / sqrt(H_ii) from the Hessian against the harmonic force constant's sqrt(kT / k)
    bond_force = next(f for f in aldp.system.getForces() if isinstance(f, openmm.HarmonicBondForce))
    k_of = {}
    for i in range(bond_force.getNumBonds()):
        a, b, _, k = bond_force.getBondParameters(i)
        k_of[frozenset((a, b))] = k.value_in_unit(k.unit)
    zm = view.zmatrix
    for j in range(1, zm.n_atoms):
        k = k_of[frozenset((zm.order[j], zm.refs[j][0]))]
        assert float(view.scale[j - 1]) == pytest.approx(math.sqrt(aldp.kT / k), rel=0.15)


def test_cuts_sit_on_barriers_the_reference_structure_does_not_cross(view):
    """Every cut (c + pi) is the rigid scan's highest energy, so it is far from the structure's own
    value for every proper torsion (at least 60 degrees away)."""
    k = view.n_stiff
    cut = view.cut + math.pi
    gap = torch.remainder(view.q0[k:] - cut + math.pi, 2 * math.pi) - math.pi
    assert (gap.abs() >= math.radians(60) - 1e-9).all()


def test_internal_coordinates_refused_for_a_target_without_bonds():
    with pytest.raises(ConfigError, match="not a molecule"):
        InternalCoordinateTarget.build(targets.get("gmm40"))


def test_training_in_internal_coordinates_resumes_and_returns_cartesian_samples(tmp_path):
    import diffsampler as ds
    out = str(tmp_path / "run")
    keys = dict(coordinates="internal", search_chains=2, search_burnin=20, search_steps=40, search_thin=4,
                iterations=4, ml_warmup=2, max_energy_calls=None, eval_samples=16, eval_steps=10,
                checkpoint_every=2, batch_size=8, width=32, depth=2, threads=1)
    run = ds.train("aldp", out=out, progress=False, **keys)
    x, log_w = run.sampler.sample(5, steps=10)
    assert x.shape == (5, 66) and log_w.shape == (5,)
    assert run.report["dim"] == 66
    loaded = ds.load_run(out)
    y, _ = loaded.sampler.sample(3, steps=10)
    assert y.shape == (3, 66) and torch.isfinite(y).all()
    calls = run.report["energy_calls"]["search"]
    assert calls >= 2 * (20 + 40)          # the chains, plus the scan and Hessian that set the coordinates
    again = ds.train("aldp", out=out, progress=False, resume=True, **{**keys, "iterations": 6})
    assert again.report["iterations"] == 6


def test_a_file_of_two_molecules_is_refused_with_the_way_out():
    zm_bonds = [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6)]
    with pytest.raises(ValueError, match="not bonded to the rest"):
        ZMatrix.from_bonds(7, zm_bonds, [True] * 7)


def test_md_searcher_runs_in_cartesian_and_hands_over_view_coordinates_with_view_energies(aldp, view):
    """MD on a view of other dimension runs on the molecule itself; its samples reach the buffer as
    view rows whose energies are the view's own (E(x) - log |dx/du|), not the Cartesian ones."""
    from diffsampler.search.searcher import SEARCHERS
    md_search = SEARCHERS.build("md", {"search_chains": 2, "search_steps": 20, "search_burnin": 5,
                                       "search_thin": 5, "search_step_size": 0.0005, "md_temperatures": "300"})
    torch.manual_seed(0)
    res = md_search.run(view, torch.zeros(2, view.dim), 1.0)
    assert res.x.shape[1] == view.dim
    assert torch.allclose(res.energy.double(), view._energy(res.x).double(), rtol=1e-6, atol=1e-4)


def test_ring_bonds_are_the_bonds_on_a_cycle():
    from diffsampler.targets.zmatrix import ring_bonds
    # a five-ring 0-1-2-3-4 with a tail 4-5-6 and a branch 1-7
    bonds = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (4, 5), (5, 6), (1, 7)]
    nbr: list[list[int]] = [[] for _ in range(8)]
    for i, j in bonds:
        nbr[i].append(j)
        nbr[j].append(i)
    assert ring_bonds(nbr) == {frozenset(b) for b in bonds[:5]}


@pytest.fixture(scope="module")
def proline():
    """Ala-Pro-Ala (tests/data, not minimised): a molecule with a ring, from a user's PDB file."""
    from diffsampler.targets.molecule_file import PDBMoleculeTarget
    return PDBMoleculeTarget(str(DATA / "ala_pro_ala.pdb"))


def test_a_ring_round_trips_with_its_closing_bond_and_the_exact_jacobian(proline):
    zm = zmatrix_of(proline)
    bonds = {frozenset((a.index, b.index)) for a, b in proline.topology.bonds()}
    tree = {frozenset((zm.order[k], zm.refs[k][0])) for k in range(1, zm.n_atoms)}
    (closing,) = bonds - tree                      # the proline ring's one bond that is no coordinate
    pos = torch.as_tensor(proline.positions, dtype=torch.float64)
    pos = pos + 0.01 * torch.randn(3, *pos.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = zm.to_internal(pos)
    back = zm.to_cartesian(q)
    assert torch.allclose(distances(back), distances(pos), atol=1e-12)
    i, j = sorted(closing)
    assert float((back[:, i] - back[:, j]).norm(dim=-1).sub((pos[:, i] - pos[:, j]).norm(dim=-1)).abs().max()) < 1e-12

    def full(v):        # as in the test above: the six external coordinates make the map square
        p = zm.to_cartesian(v[None, : zm.dim])[0]
        return (p @ rotation(v[zm.dim + 3:]).T + v[zm.dim: zm.dim + 3]).reshape(-1)
    v = torch.cat([q[0], torch.zeros(6, dtype=torch.float64)])
    J = torch.autograd.functional.jacobian(full, v)
    assert float(torch.linalg.slogdet(J)[1]) == pytest.approx(float(zm.log_jacobian(q[:1])[0]), abs=1e-9)


def test_a_ring_view_minimises_the_file_and_keeps_the_ring_closed(proline, tmp_path):
    """A user's unminimised structure is relaxed first (counted calls); the ring's own torsions are
    stiff coordinates, so unit-scale draws in the view are valid molecules with the ring closed;
    giving those torsions the free rotors' scale of 1 rad instead breaks the ring."""
    from diffsampler.evaluation.peptides import validity
    x_file = torch.as_tensor(proline.positions, dtype=torch.float64).reshape(1, -1)
    _, f_file = proline.log_reward_and_score(x_file.float())
    before = proline.counter.total
    view = InternalCoordinateTarget.build(proline)
    assert proline.counter.total - before > 36 * (proline.n_particles - 3)   # the scans, the Hessian, the minimiser
    x0 = view.to_user(torch.zeros(1, view.dim, dtype=torch.float64))
    _, f0 = proline.log_reward_and_score(x0.float())
    assert f_file.abs().max() > 1000 and f0.abs().max() < 5                # kT / nm: relaxed from the file's
    zm = view.zmatrix
    ring = [view.n_stiff + k - 3 for k in range(3, zm.n_atoms) if zm.in_ring[k] and not zm.sibling[k]]
    assert ring and (view.scale[ring] < 0.2).all()
    free = [view.n_stiff + k for k in zm.free_torsions]
    assert (view.scale[free] == 1).all()
    u = 0.5 * torch.randn(64, view.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert validity(proline, view.to_user(u))["valid"].all()
    loose = InternalCoordinateTarget(proline, view.q0, view.scale.clone().index_fill_(0, torch.tensor(ring), 1.0),
                                     view.cut)
    assert validity(proline, loose.to_user(u))["valid"].double().mean() < 0.75
    # an uncapped chain: Ala1 has no phi and Ala3 no psi; the plot shows the one residue with both
    proline.extra_plots(view.to_user(u).float(), None, str(tmp_path), "Ala-Pro-Ala")
    assert (tmp_path / "ramachandran.png").stat().st_size > 0


def test_a_structure_with_overlapping_atoms_gets_a_clear_error():
    from diffsampler.targets.molecule_file import PDBMoleculeTarget
    t = PDBMoleculeTarget(str(DATA / "ala_pro_ala.pdb"))
    pos = torch.as_tensor(t.positions, dtype=torch.float64).reshape(-1, 3).clone()
    pos[5] = pos[20]                        # two non-bonded atoms on one spot: the energy is not finite
    t.positions = pos.numpy()
    with pytest.raises(ConfigError, match="not finite"):
        InternalCoordinateTarget.build(t)
