"""Capped alanine peptides Ace-(Ala)_n-Nme as OpenMM targets: `aldp` (n = 1), `ala3`, `ala4`.

"Alanine dipeptide" names many different densities in the literature (force field, solvent,
temperature, coordinates: see docs/peptides.md). The variants here are exactly:

| name | molecule | atoms | dim | force field | solvent | T |
| --- | --- | --- | --- | --- | --- | --- |
| aldp | Ace-Ala-Nme | 22 | 66 | amber14-all.xml (ff14SB) | OBC2 GB (implicit/obc2.xml), NoCutoff | 300 K |
| ala3 | Ace-Ala2-Nme | 32 | 96 | amber14-all.xml | OBC2, NoCutoff | 300 K |
| ala4 | Ace-Ala3-Nme | 42 | 126 | amber14-all.xml | OBC2, NoCutoff | 300 K |
| aldp_vacuum, ala3_vacuum, ala4_vacuum | as above | | | amber14-all.xml | vacuum, NoCutoff | 300 K |

All-atom Cartesian coordinates in nm, hydrogens free (no constraints: they would make the
density singular), E = U / k_B T (`targets/openmm.py`). The structures (peptide_data/*.pdb, built
and minimised by experiments/peptides/build_structures.py) fix the atom order: the Amber/LEaP
order of openmmtools' AlanineDipeptideVacuum/Implicit topology (for aldp the same 22 atoms in the
same order, so its coordinates can be used directly; the energy differs, since openmmtools uses
ff96 with OBC1). A temperature other than 300 K appends `_<T>K` to the name.

`aldp_ani2x`: ANI-2x (TorchANI) in vacuum, SGDS's choice, available only where TorchANI and its
ANI-2x parameter files are already on disk; nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MissingDependencyError
from .openmm import INSTALL_HINT, OpenMMTarget, require

DATA_DIR = Path(__file__).resolve().parent / "peptide_data"
PEPTIDES = {"aldp": ("Ace-Ala-Nme", 1), "ala3": ("Ace-Ala-Ala-Nme", 2), "ala4": ("Ace-Ala-Ala-Ala-Nme", 3)}
SOLVENTS = {"obc2": (("amber14-all.xml", "implicit/obc2.xml"), "OBC2 implicit solvent (implicit/obc2.xml)"),
            "vacuum": (("amber14-all.xml",), "vacuum")}
HARTREE_KJ_PER_MOL = 2625.499639479  # CODATA 2018 Hartree energy times N_A


def structure_file(peptide: str) -> Path:
    """The shipped minimised structure (PDB) of `peptide` (aldp, ala3, ala4)."""
    if peptide not in PEPTIDES:
        raise ValueError(f"unknown peptide {peptide!r}; expected one of {sorted(PEPTIDES)}")
    return DATA_DIR / f"{peptide}.pdb"


def target_name(peptide: str, solvent: str, temperature: float) -> str:
    name = peptide if solvent == "obc2" else f"{peptide}_{solvent}"
    return name if float(temperature) == 300.0 else f"{name}_{float(temperature):g}K"


def amber14_system(topology, solvent: str):
    """The openmm.System of `topology` under amber14-all.xml with `solvent` ('obc2' | 'vacuum'):
    NoCutoff, no constraints, no rigid water, no centre-of-mass remover (the Cartesian density stays
    regular). Raises OpenMM's ValueError when a residue has no template."""
    app = require("openmm.app")
    return app.ForceField(*SOLVENTS[solvent][0]).createSystem(topology, nonbondedMethod=app.NoCutoff,
                                                              constraints=None, rigidWater=False,
                                                              removeCMMotion=False)


class PeptideTarget(OpenMMTarget):
    """Ace-(Ala)_n-Nme under amber14 in OBC2 implicit solvent or vacuum (module docstring).

    Reference samples are looked up as `<name>_reference.npz` (experiments/peptides/reference.py
    writes ~/.cache/diffsampler/data/<name>_reference.npz).

    Settings (`recommended`), both within ~1M energy calls. The default, `sgds_jeffreys`: in whitened
    internal coordinates, one MALA search, then the Jeffreys objective with an MLP drift. `sgds`: SGDS
    as the paper ran it on peptides (Kim et al. 2025), within its ~1M
    energy calls: an MD searcher at 600 K in round 1 and 300 K in round 2 (16 chains x 10,000 steps
    of 0.5 fs, gamma 1/ps) with the RND bonus in round 2 (its predictor fitted on the learner's own
    samples, as SGDS: with an EGNN predictor on a molecule, fitting it on buffer batches too made it
    most of an iteration's cost), each round starting with backward maximum
    likelihood, then TB on a random 20-step grid. The drift is an MLP on the centroid-free Cartesian
    coordinates, which takes no score (one energy call per trajectory, not per step) and, unlike an
    E(3)-equivariant network, can tell a molecule from its mirror image (`docs/peptides.md`)."""

    default_recipe = "sgds_jeffreys"
    mirror_symmetric = True   # amber14: U(-x) = U(x) (tests), so samples leave as the L enantiomer
    recommended = {
        # the default, measured best here (docs/peptides.md, Training): the Jeffreys objective (maximum
        # likelihood on the searcher's samples + on-policy pathwise KL) in whitened internal coordinates
        # (targets/internal_coordinates.py), where MALA crosses the torsion barriers that 5 ps of MD does
        # not, and an MLP drift needs no score call per step (one call per trajectory). The search: 16
        # long chains rather than 64 short ones for the same calls, since chains that start in C7eq
        # need ~3,000 steps to fill alpha_R (experiments/peptides/search_equilibration.py: searched
        # KL psi 0.003 on two seeds, against 0.069 / 0.038 with 64 x (500 + 5,000))
        "sgds_jeffreys": dict(coordinates="internal", searcher="mala", search_chains=16, search_burnin=2000,
                              search_steps=20000, search_thin=20, search_step_size=0.1, search_init_std=0.5,
                              rounds=1, drift="mlp", width=256, depth=3, batch_size=64,
                              train_grid="random", train_steps=20, time_warp=2.0, ml_warmup=200, lr=5e-4,
                              grad_clip=1.0, ema_decay=0.99, max_energy_calls=1_000_000, iterations=None,
                              eval_steps=100, eval_samples=2000, checkpoint_every=1000, log_every=100),
        # SGDS as the paper ran it (TB, MLP drift, two MD rounds); see the class docstring
        "sgds": dict(searcher="md", search_chains=16, search_burnin=1000, search_steps=10000, search_thin=10,
                     search_step_size=0.0005, search_friction=1.0, rnd_alpha=10.0, rnd_width=64,
                     rnd_data="on_policy", rounds=2, drift="mlp", width=256, depth=3, batch_size=64,
                     train_grid="random", train_steps=20,
                     time_warp=2.0, ml_warmup=2000, lr=5e-4, ema_decay=0.999, max_energy_calls=1_000_000,
                     iterations=None, eval_steps=100, eval_samples=2000, log_Z_warm_start="buffer",
                     checkpoint_every=1000, log_every=100),
    }

    def __init__(self, peptide: str = "aldp", solvent: str = "obc2", temperature: float = 300.0,
                 platform: str = "auto", n_workers: int = 1, sigma: float | None = None) -> None:
        if solvent not in SOLVENTS:
            raise ValueError(f"unknown solvent {solvent!r}; expected one of {sorted(SOLVENTS)}")
        app = require("openmm.app")
        pdb = app.PDBFile(str(structure_file(peptide)))
        label = SOLVENTS[solvent][1]
        system = amber14_system(pdb.topology, solvent)
        self.peptide, self.solvent = peptide, solvent
        name = target_name(peptide, solvent, temperature)
        desc = f"{PEPTIDES[peptide][0]}, amber14-all.xml (ff14SB), {label}, NoCutoff, no constraints"
        super().__init__(system, pdb.topology, pdb.positions, temperature=temperature, platform=platform,
                         n_workers=n_workers, sigma=sigma, name=name, description=desc,
                         data_filename=f"{name}_reference.npz")

    def info(self) -> dict:
        return {**super().info(), "force_field": "amber14-all.xml (ff14SB)", "solvent": SOLVENTS[self.solvent][1],
                "molecule": PEPTIDES[self.peptide][0], "structure": structure_file(self.peptide).name}


# -- ANI-2x (optional, never downloads) ------------------------------------------------------------
def ani2x_parameter_dirs() -> list[Path]:
    """Where TorchANI keeps downloaded parameters (its package `resources/` folder in 2.2, a user
    data folder in later versions)."""
    torchani = require("torchani")
    pkg = Path(torchani.__file__).resolve().parent
    return [pkg / "resources", Path.home() / ".local" / "share" / "Torchani", Path.home() / ".cache" / "torchani"]


def ani2x_on_disk() -> bool:
    """True if a TorchANI install with ANI-2x parameters is present (no download attempted)."""
    try:
        dirs = ani2x_parameter_dirs()
    except MissingDependencyError:
        return False
    return any(d.is_dir() and any("2x" in p.name.lower() for p in d.rglob("*")) for d in dirs)


class Ani2xPeptideTarget(PeptideTarget):
    """Ace-(Ala)_n-Nme under ANI-2x in vacuum at T (SGDS's peptide energy): E = E_ANI / k_B T with
    E_ANI in Hartree converted to kJ/mol, coordinates nm -> Angstrom; gradient by autograd. The
    amber14 vacuum System is kept for the topology and evaluation only."""

    def __init__(self, peptide: str = "aldp", temperature: float = 300.0) -> None:
        if not ani2x_on_disk():
            raise MissingDependencyError(
                "ANI-2x needs TorchANI and its ANI-2x parameter files already on disk (this package never "
                f"downloads them); install torchani and fetch the parameters once, or use {peptide!r} (amber14). "
                f"Peptide targets: {INSTALL_HINT}")
        super().__init__(peptide, "vacuum", temperature)
        import torchani

        self.model = torchani.models.ANI2x(periodic_table_index=True).double()
        z = [a.element.atomic_number for a in self.topology.atoms()]
        self.species = torch.tensor([z], dtype=torch.long)
        self.name = f"{peptide}_ani2x" + ("" if temperature == 300.0 else f"_{temperature:g}K")
        self.description = f"{PEPTIDES[peptide][0]}, ANI-2x (TorchANI), vacuum"
        self.data_filename = f"{self.name}_reference.npz"

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        xyz = 10.0 * x.double().reshape(x.shape[0], self.n_particles, 3)
        e = self.model((self.species.expand(x.shape[0], -1).to(x.device), xyz)).energies
        return (e * HARTREE_KJ_PER_MOL / self.kT).to(x.dtype)

    def _energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            e = self._energy(xg)
            (g,) = torch.autograd.grad(e.sum(), xg)
        return e.detach(), g


def make(name: str) -> OpenMMTarget:
    """Registry factory: 'aldp', 'ala3', 'ala4', '<p>_vacuum', '<p>_ani2x'."""
    peptide, _, variant = name.partition("_")
    if variant == "ani2x":
        return Ani2xPeptideTarget(peptide)
    return PeptideTarget(peptide, variant or "obc2")
