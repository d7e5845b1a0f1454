"""A user's molecule from a PDB file, as an OpenMM target: ``diffsampler train mol.pdb[:SOLVENT]``.

The file gives the atoms, their order and a reference structure (all hydrogens present; `pdbfixer`
adds missing ones). The System is built as the built-in peptides' (`targets/peptides.py`):
amber14-all.xml (ff14SB) with OBC2 implicit solvent (`:obc2`, the default) or in vacuum (`:vacuum`),
NoCutoff, no constraints, at 300 K; E = U / k_B T in Cartesian coordinates in nm, rows (B, 3 n).
The run records the PDB's SHA-256, so `eval`, `sample` and `--resume` rebuild the same System and
refuse a changed file. It trains with the peptides' default settings (whitened internal
coordinates, MALA searcher, MLP drift, 1M calls; `coordinates=cartesian` for a file of several
molecules, which has no single bond graph).
For another force field or temperature, build an `OpenMMTarget` in Python and name it as
``pkg.module:NAME``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import TargetSpecError
from .openmm import OpenMMTarget, require
from .peptides import SOLVENTS, PeptideTarget, amber14_system


class PDBMoleculeTarget(OpenMMTarget):
    """p(x) ∝ exp(-U(x) / k_B T) for the molecule of a PDB file under amber14 (module docstring)."""

    default_recipe = PeptideTarget.default_recipe
    mirror_symmetric = True   # amber14, as the peptides
    recommended = PeptideTarget.recommended

    def __init__(self, path: str | Path, solvent: str = "obc2", temperature: float = 300.0,
                 name: str | None = None, sigma: float | None = None) -> None:
        app = require("openmm.app")
        path = Path(path)
        if solvent not in SOLVENTS:
            raise TargetSpecError(f"{path}:{solvent}: unknown solvent; expected one of {', '.join(sorted(SOLVENTS))}")
        try:
            pdb = app.PDBFile(str(path))
        except Exception as e:  # noqa: BLE001  (OpenMM's parser raises many kinds)
            raise TargetSpecError(f"{path}: cannot read it as a PDB file ({type(e).__name__}: {e})") from None
        if pdb.topology.getNumAtoms() == 0:
            raise TargetSpecError(f"{path}: no atoms in it (ATOM/HETATM records)")
        label = SOLVENTS[solvent][1]
        try:
            system = amber14_system(pdb.topology, solvent)
        except ValueError as e:
            raise TargetSpecError(f"{path}: amber14 has no parameters for it ({e}); the file needs every "
                                  "hydrogen and standard residue names (pdbfixer adds missing hydrogens)") from None
        self.source, self.solvent = path, solvent
        super().__init__(system, pdb.topology, pdb.positions, temperature=temperature, sigma=sigma,
                         name=name or path.stem, description=f"{path.name}, amber14-all.xml (ff14SB), {label}, "
                                                             "NoCutoff, no constraints")

    def info(self) -> dict:
        return {**super().info(), "force_field": "amber14-all.xml (ff14SB)", "solvent": SOLVENTS[self.solvent][1],
                "structure": self.source.name}


def pdb_molecule_target(path: Path, solvent: str | None, options: dict) -> PDBMoleculeTarget:
    """The spec loader for ``FILE.pdb[:SOLVENT]``. Target options: `name` (default: the file's stem);
    `dim` only as the file's 3 n; `log_Z`, `sigma` and `reference` are refused (the scale comes from
    the structure, and a molecule has no known log Z)."""
    if options.get("log_Z") is not None or options.get("reference"):
        raise TargetSpecError(f"{path}: log_Z and reference are not taken for a molecule from a PDB file")
    if options.get("sigma") not in (None, 1.0):   # 1.0: the spec's default for user energies
        raise TargetSpecError(f"{path}: sigma is not taken for a molecule (its scale comes from the structure)")
    name = options.get("name")
    target = PDBMoleculeTarget(path, solvent or "obc2", name=None if name in (None, "custom", solvent) else name)
    if options.get("dim") not in (None, target.dim):
        raise TargetSpecError(f"{path}: dim={options['dim']}, but its {target.n_particles} atoms give dim={target.dim}")
    return target


__all__ = ["PDBMoleculeTarget", "pdb_molecule_target"]
