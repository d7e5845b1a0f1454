"""Evaluation of peptide samples (capped alanines, any OpenMM target with a protein topology).

Order (as in SGDS: bond graph and chirality first, then every other metric on valid samples):
1. Validity (`validity`), per sample:
   - bonds: every bonded pair (i, j) of the topology has |r_ij / r0_ij - 1| <= bond_tol (0.2), r0 the
     equilibrium length of the force field's HarmonicBondForce term for that pair;
   - contacts: no non-bonded pair (i, j not bonded) closer than contact_factor (1.3) times the sum
     of the covalent radii (H 0.031, C 0.076, N 0.071, O 0.066 nm; Cordero et al. 2008), i.e. the
     bond graph read off the distances is the topology's;
   - chirality: every CA with a CB is L: the signed volume V = (N - CA) . ((C - CA) x (CB - CA)) is
     positive (about +2.5e-3 nm^3 in the LEaP-built L-alanine of openmmtools and in our structures;
     a mirror image flips the sign).
2. Backbone torsions (radians, (-pi, pi], IUPAC sign convention as mdtraj's): phi_k = C(k-1) N CA C,
   psi_k = N CA C N(k+1) for each alanine k = 1..n, omega_k = CA(k-1) C N CA(k) for each of the
   n + 1 peptide bonds (the caps' methyl carbons stand in for CA). For aldp: phi1, psi1, omega1, omega2.
3. KL(reference || sample) of each torsion marginal on 36 periodic bins of 10 degrees over
   [-180, 180), and of each joint (phi_k, psi_k) on 36 x 36 bins, with smoothing: bin probabilities
   p = (count / N + eps) / (1 + K eps), eps = 1e-6, K the number of bins. (A finite reference has
   its own sampling noise: compare against the KL between two halves of the reference.)
4. Basin populations per alanine, boundaries in degrees on (phi, psi) (a partition of the torus):
     phi < 0:  alpha_R  if -120 <= psi < 50;
               else C5/beta if phi < -120, else C7eq (C7eq here includes PPII);
     phi >= 0: alpha_L  if 0 <= psi < 180 (psi >= 0), C7ax if psi < 0.
5. Energy W1/W2 (in kT) between the sample's and the reference's energy distributions.
With log-weights (`log_w`), every quantity is also given importance-weighted (prefix `is_`), the
weights softmax(log_w) renormalised over the valid samples.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from .particles import wasserstein_1d
from .plots import _plt

COVALENT_RADIUS_NM = {"H": 0.031, "C": 0.076, "N": 0.071, "O": 0.066, "S": 0.105}
BASINS = ("C7eq", "C5", "alphaR", "alphaL", "C7ax")
N_BINS, KL_EPS = 36, 1e-6


# -- geometry -------------------------------------------------------------------------------------
def _xyz(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.detach().to("cpu", torch.float64).reshape(x.shape[0], n, 3)


def dihedrals(x: torch.Tensor, quads: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """Dihedral angles (B, K) in (-pi, pi] of atom quadruples quads (K, 4) in rows x (B, 3 n):
    b1 = p1 - p0, b2 = p2 - p1, b3 = p3 - p2, angle = atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3))."""
    v = x.reshape(x.shape[0], n_atoms, 3)
    p = [v[:, quads[:, k]] for k in range(4)]
    b1, b2, b3 = p[1] - p[0], p[2] - p[1], p[3] - p[2]
    n1, n2 = torch.linalg.cross(b1, b2), torch.linalg.cross(b2, b3)
    y = b2.norm(dim=-1) * (b1 * n2).sum(-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


def _residue_atoms(topology) -> list[tuple[str, dict[str, int]]]:
    return [(r.name, {a.name: a.index for a in r.atoms()}) for r in topology.residues()]


def backbone_torsions(topology) -> dict[str, tuple[int, int, int, int]]:
    """{'phi1': (i, j, k, l), 'psi1': ..., 'omega1': ...} for the amino acids of a capped chain."""
    res = _residue_atoms(topology)
    ca = [d.get("CA", d.get("CH3", d.get("C") if name == "NME" else None)) for name, d in res]
    out: dict[str, tuple[int, int, int, int]] = {}
    k = 0
    for r in range(len(res)):
        d = res[r][1]
        if "CA" not in d:
            continue
        k += 1
        if r > 0 and "C" in res[r - 1][1]:
            out[f"phi{k}"] = (res[r - 1][1]["C"], d["N"], d["CA"], d["C"])
        if r + 1 < len(res) and "N" in res[r + 1][1]:
            out[f"psi{k}"] = (d["N"], d["CA"], d["C"], res[r + 1][1]["N"])
    for r in range(1, len(res)):
        prev, cur = res[r - 1][1], res[r][1]
        if "C" in prev and "N" in cur and ca[r - 1] is not None and ca[r] is not None:
            out[f"omega{r}"] = (ca[r - 1], prev["C"], cur["N"], ca[r])
    return out


def chirality_volumes(x: torch.Tensor, topology) -> torch.Tensor:
    """Signed volumes (B, n_CA) (N - CA) . ((C - CA) x (CB - CA)) in nm^3 at every CA with a CB."""
    idx = torch.tensor([[d["N"], d["CA"], d["C"], d["CB"]] for _, d in _residue_atoms(topology)
                        if all(a in d for a in ("N", "CA", "C", "CB"))], dtype=torch.long)
    v = _xyz(x, topology.getNumAtoms())
    if idx.numel() == 0:
        return v.new_zeros(v.shape[0], 0)
    n, ca, c, cb = (v[:, idx[:, k]] for k in range(4))
    return ((n - ca) * torch.linalg.cross(c - ca, cb - ca)).sum(-1)


def bond_table(target) -> tuple[torch.Tensor, torch.Tensor]:
    """Bonded pairs (M, 2) of the topology and their equilibrium lengths r0 (M,) in nm from the
    System's HarmonicBondForce (pairs without a bond term: none in amber14 peptides)."""
    import openmm

    r0: dict[tuple[int, int], float] = {}
    for f in target.system.getForces():
        if isinstance(f, openmm.HarmonicBondForce):
            for b in range(f.getNumBonds()):
                i, j, length, _ = f.getBondParameters(b)
                r0[(min(i, j), max(i, j))] = length.value_in_unit(openmm.unit.nanometer)
    pairs = sorted((min(a.index, b.index), max(a.index, b.index)) for a, b in target.topology.bonds())
    missing = [p for p in pairs if p not in r0]
    if missing:
        raise ValueError(f"{target.name}: bonds without a HarmonicBondForce term: {missing[:5]}")
    return torch.tensor(pairs, dtype=torch.long), torch.tensor([r0[p] for p in pairs], dtype=torch.float64)


def validity(target, x: torch.Tensor, bond_tol: float = 0.2, contact_factor: float = 1.3) -> dict[str, torch.Tensor]:
    """Boolean masks (B,): 'finite', 'bonds', 'contacts', 'chirality' and 'valid' (all four)."""
    n = target.n_particles
    v = _xyz(x, n)
    finite = torch.isfinite(v).all(-1).all(-1)
    v = torch.where(finite[:, None, None], v, torch.zeros_like(v))
    pairs, r0 = bond_table(target)
    r = (v[:, pairs[:, 0]] - v[:, pairs[:, 1]]).norm(dim=-1)
    bonds = ((r / r0 - 1).abs() <= bond_tol).all(-1)
    rad = torch.tensor([COVALENT_RADIUS_NM.get(a.element.symbol, 0.1) for a in target.topology.atoms()],
                       dtype=torch.float64)
    d = torch.cdist(v, v)
    limit = contact_factor * (rad[:, None] + rad[None, :])
    nonbonded = ~torch.eye(n, dtype=torch.bool)
    nonbonded[pairs[:, 0], pairs[:, 1]] = nonbonded[pairs[:, 1], pairs[:, 0]] = False
    contacts = ~((d < limit) & nonbonded).any(-1).any(-1)
    chir = (chirality_volumes(v.reshape(x.shape[0], -1), target.topology) > 0).all(-1)
    return {"finite": finite, "bonds": bonds & finite, "contacts": contacts & finite,
            "chirality": chir & finite, "valid": finite & bonds & contacts & chir}


# -- histograms, basins ------------------------------------------------------------------------------
def basin_index(phi: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Basin (index into BASINS) of (phi, psi) in radians; boundaries in the module docstring."""
    f, s = torch.rad2deg(phi), torch.rad2deg(psi)
    alpha_r = (s >= -120) & (s < 50)
    left = torch.where(alpha_r, 2, torch.where(f < -120, 1, 0))
    right = torch.where(s >= 0, 3, 4)
    return torch.where(f < 0, left, right)


def _bin(theta: torch.Tensor, bins: int = N_BINS) -> torch.Tensor:
    """Periodic bin index of angles (radians) on [-pi, pi): bin width 2 pi / bins."""
    u = torch.remainder(theta + math.pi, 2 * math.pi) / (2 * math.pi)
    return (u * bins).long().clamp_(0, bins - 1)


def _hist(index: torch.Tensor, n_bins: int, w: torch.Tensor | None) -> torch.Tensor:
    w = torch.full(index.shape, 1.0 / max(index.numel(), 1), dtype=torch.float64) if w is None else w
    return torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, w)


def kl_histograms(p_ref: torch.Tensor, p: torch.Tensor, eps: float = KL_EPS) -> float:
    """KL(p_ref || p) between two normalised histograms with eps smoothing (module docstring)."""
    K = p_ref.numel()
    a, b = (p_ref + eps) / (1 + K * eps), (p + eps) / (1 + K * eps)
    return float((a * (a / b).log()).sum())


def _weights(log_w: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor | None:
    if log_w is None:
        return None
    lw = log_w.detach().to("cpu", torch.float64)[mask]
    return torch.softmax(torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -math.inf)), 0)


def torsion_stats(tors: dict[str, torch.Tensor], w: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Histograms of every torsion (36 bins), of each (phi_k, psi_k) (36 x 36) and basin populations."""
    out = {name: _hist(_bin(t), N_BINS, w) for name, t in tors.items()}
    for name in [k for k in tors if k.startswith("phi")]:
        k = name[3:]
        if f"psi{k}" in tors:
            phi, psi = tors[name], tors[f"psi{k}"]
            out[f"phipsi{k}"] = _hist(_bin(phi) * N_BINS + _bin(psi), N_BINS * N_BINS, w)
            out[f"basins{k}"] = _hist(basin_index(phi, psi), len(BASINS), w)
    return out


# -- metrics --------------------------------------------------------------------------------------------
def torsions_of(target, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{name: (B,) angle in radians} of the backbone torsions of rows x."""
    quads = backbone_torsions(target.topology)
    q = torch.tensor(list(quads.values()), dtype=torch.long)
    ang = dihedrals(_xyz(x, target.n_particles).reshape(x.shape[0], target.dim), q, target.n_particles)
    return {name: ang[:, k] for k, name in enumerate(quads)}


def _energies(target, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), target.counter.use("eval"):
        return target.energy(x, check_finite=False).detach().to("cpu", torch.float64)


def compare_stats(s: dict, s_ref: dict, prefix: str = "") -> dict:
    """KL per torsion / joint, and basin populations (sample and reference) from torsion_stats."""
    m: dict = {}
    for key, h in s.items():
        if key.startswith("basins"):
            k = key[6:]
            for b, name in enumerate(BASINS):
                m[f"{prefix}pop{k}_{name}"] = float(h[b])
                if not prefix:
                    m[f"pop{k}_{name}_ref"] = float(s_ref[key][b])
        else:
            m[f"{prefix}kl_{key}"] = kl_histograms(s_ref[key], h)
    return m


def _energy_w(e: torch.Tensor, e_ref: torch.Tensor, w: torch.Tensor | None, prefix: str) -> dict:
    fin = torch.isfinite(e)
    if not fin.any():
        return {f"{prefix}energy_w1": None, f"{prefix}energy_w2": None}
    if w is None:
        return {f"{prefix}energy_w{p}": wasserstein_1d(e[fin], e_ref, p) for p in (1, 2)}
    return {f"{prefix}energy_w1": weighted_wasserstein_1d(e[fin], w[fin], e_ref, 1),
            f"{prefix}energy_w2": weighted_wasserstein_1d(e[fin], w[fin], e_ref, 2)}


def weighted_wasserstein_1d(a: torch.Tensor, wa: torch.Tensor, b: torch.Tensor, p: int = 2) -> float:
    """W_p between sum_i wa_i delta_{a_i} (wa renormalised) and the uniform empirical measure of b,
    exactly, through the quantile functions on the merged grid of both cumulative weights."""
    a, wa, b = (np.asarray(v, dtype=np.float64).ravel() for v in (a, wa, b))
    ia = np.argsort(a)
    a, ca = a[ia], np.cumsum(wa[ia]) / wa.sum()
    b = np.sort(b)
    cb = np.arange(1, b.size + 1) / b.size
    u = np.unique(np.clip(np.concatenate([ca, cb]), 0, 1))
    du = np.diff(np.concatenate([[0.0], u]))
    mid = u - du / 2
    qa = a[np.minimum(np.searchsorted(ca, mid), a.size - 1)]
    qb = b[np.minimum(np.searchsorted(cb, mid), b.size - 1)]
    return float((du * np.abs(qa - qb) ** p).sum() ** (1.0 / p))


def peptide_metrics(target, x: torch.Tensor, x_ref: torch.Tensor | None, log_w: torch.Tensor | None = None) -> dict:
    """Validity fractions; on the valid samples: torsion KLs, basin populations (next to the
    reference's), energy W1/W2, each also importance-weighted when log_w (B,) is given. Energy
    calls (of x and x_ref) count as 'eval'."""
    val = validity(target, x)
    ok = val["valid"]
    m: dict = {f"frac_{k}": float(v.double().mean()) for k, v in val.items() if k != "finite"}
    m["n_nonfinite"] = int((~val["finite"]).sum())
    if not ok.any():
        return m
    xv = x[ok.to(x.device)]
    if x_ref is None:       # no reference: the sampler's own basin populations and mean energy
        m.update(_own_figures(target, xv, _weights(log_w, ok.cpu())))
        return m
    t, t_ref = torsions_of(target, xv), torsions_of(target, x_ref)
    s_ref = torsion_stats(t_ref, None)
    m.update(compare_stats(torsion_stats(t, None), s_ref))
    e, e_ref = _energies(target, xv), _energies(target, x_ref)
    e_ref = e_ref[torch.isfinite(e_ref)]
    m.update(_energy_w(e, e_ref, None, ""))
    m["energy_mean"], m["energy_mean_ref"] = float(e[torch.isfinite(e)].mean()), float(e_ref.mean())
    w = _weights(log_w, ok.cpu())
    if w is not None:
        m.update(compare_stats(torsion_stats(t, w), s_ref, prefix="is_"))
        m.update(_energy_w(e, e_ref, w, "is_"))
    return m


def _own_figures(target, xv: torch.Tensor, w: torch.Tensor | None) -> dict:
    """Basin populations pop{k}_{basin} of valid rows xv (and is_pop... with weights w) and their
    mean energy (kT), for a target without reference samples."""
    t = torsions_of(target, xv)
    m = {}
    for k in [name[3:] for name in t if name.startswith("phi") and f"psi{name[3:]}" in t]:
        basin = basin_index(t[f"phi{k}"], t[f"psi{k}"])
        for prefix, weights in (("", None), ("is_", w)) if w is not None else (("", None),):
            h = _hist(basin, len(BASINS), weights)
            m.update({f"{prefix}pop{k}_{name}": float(h[b]) for b, name in enumerate(BASINS)})
    e = _energies(target, xv)
    m["energy_mean"] = float(e[torch.isfinite(e)].mean()) if torch.isfinite(e).any() else None
    return m


# -- plots ----------------------------------------------------------------------------------------------
def _basin_lines(ax) -> None:
    kw = {"color": "k", "lw": 0.6, "ls": "--", "alpha": 0.6}
    ax.axvline(0, **kw)
    ax.plot([-180, 0], [-120, -120], **kw)
    ax.plot([-180, 0], [50, 50], **kw)
    ax.plot([-120, -120], [50, 180], **kw)
    ax.plot([-120, -120], [-180, -120], **kw)
    ax.plot([0, 180], [0, 0], **kw)


def plot_ramachandran(target, x: torch.Tensor, x_ref: torch.Tensor | None, path: str, title: str = "") -> None:
    """Ramachandran (phi_k, psi_k) histograms of the valid samples, one row per residue that has
    both torsions, next to the reference's: log10 of the probability per 5-degree bin (colour range
    10^-4.5 .. 10^-1, empty bins white); dashed lines: basin boundaries. No file without such a residue."""
    plt = _plt()
    x = x[validity(target, x)["valid"].to(x.device)]
    sets = [("sampler (valid)", x)] + ([("reference", x_ref)] if x_ref is not None else [])
    tors = [torsions_of(target, v) for _, v in sets]
    ks = [k[3:] for k in tors[0] if k.startswith("phi") and f"psi{k[3:]}" in tors[0]]
    if not ks:      # no residue with both phi and psi (a molecule without a capped backbone)
        return
    fig, axes = plt.subplots(len(ks), len(sets), figsize=(4.2 * len(sets), 3.8 * len(ks)), squeeze=False)
    edges = np.linspace(-180, 180, 73)
    for r, k in enumerate(ks):
        for c, ((label, v), t) in enumerate(zip(sets, tors)):
            ax = axes[r, c]
            if v.shape[0]:
                h, _, _ = np.histogram2d(np.rad2deg(t[f"phi{k}"].numpy()), np.rad2deg(t[f"psi{k}"].numpy()),
                                         bins=[edges, edges])
                p = np.ma.masked_equal(h.T / h.sum(), 0.0)
                ax.pcolormesh(edges, edges, np.ma.log10(p), cmap="viridis", vmin=-4.5, vmax=-1.0)
            _basin_lines(ax)
            ax.set(xlim=(-180, 180), ylim=(-180, 180), xlabel=f"phi{k} (deg)", ylabel=f"psi{k} (deg)",
                   title=f"{label}, n = {v.shape[0]}")
    fig.suptitle(title or target.name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_energy_histogram(target, x: torch.Tensor, x_ref: torch.Tensor | None, path: str, title: str = "") -> None:
    """Energy (kT) histograms of the valid samples and the reference."""
    plt = _plt()
    x = x[validity(target, x)["valid"].to(x.device)]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, v in [("sampler (valid)", x), ("reference", x_ref)]:
        if v is not None and v.shape[0]:
            e = _energies(target, v).numpy()
            ax.hist(e[np.isfinite(e)], bins=80, density=True, histtype="step", lw=2, label=label)
    ax.set(xlabel="energy (kT)", title=title or target.name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_peptide(target, x: torch.Tensor, x_ref: torch.Tensor | None, directory: str, title: str = "") -> None:
    """ramachandran.png and energy_histogram.png in `directory`."""
    plot_ramachandran(target, x, x_ref, os.path.join(directory, "ramachandran.png"), title)
    plot_energy_histogram(target, x, x_ref, os.path.join(directory, "energy_histogram.png"), title)


# -- trajectory files -------------------------------------------------------------------------------------
def write_trajectory(target, x: torch.Tensor | np.ndarray, path: str, format: str | None = None) -> str:
    """Write rows x (B, 3 n) in nm as a multi-model PDB or a DCD (mdtraj) that VMD, PyMOL and
    mdtraj open; format 'pdb' | 'dcd' (default: from the suffix). A DCD carries no topology: load it
    with the target's structure (e.g. mdtraj.load(path, top=<structure pdb>)). Returns the path."""
    from ..optional import require

    md = require("mdtraj")
    fmt = (format or os.path.splitext(path)[1].lstrip(".")).lower()
    if fmt not in ("pdb", "dcd"):
        raise ValueError(f"trajectory format must be 'pdb' or 'dcd', got {fmt!r}")
    xyz = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    xyz = xyz.reshape(xyz.shape[0], target.n_particles, 3)
    traj = md.Trajectory(xyz, md.Topology.from_openmm(target.topology))
    traj.save_pdb(path) if fmt == "pdb" else traj.save_dcd(path)
    return path
