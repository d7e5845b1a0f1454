"""Any OpenMM `System` as a target: E(x) = U(x) / (k_B T), all-atom Cartesian coordinates.

Coordinates: a row x in R^(3 n) holds n atoms' positions in nm, atom-major (atom i occupies
x[3i:3i+3]), atoms in the order of the topology. Energy in units of k_B T at the target's
temperature T (default 300 K; k_B T = R T = 2.4943 kJ/mol at 300 K, R = 8.31446 J/(mol K)):
    E(x) = U(x) / (k_B T),   grad E(x) = -F(x) / (k_B T),
U in kJ/mol and the forces F = -grad U in kJ/(mol nm) from OpenMM (no autograd through OpenMM).

Rows are evaluated one at a time on one reused `Context` per worker (`n_workers` > 1: a pool of
spawned processes, each with its own Context; OpenMM's Python calls hold the GIL, so threads
would not run in parallel). A row with non-finite coordinates, or one at which OpenMM raises,
gets E = NaN and a NaN gradient; an overflowing U gives E = +-inf. The counted path of `Target`
then raises `NonFiniteError` (check_finite=True) or passes the non-finite values through
(check_finite=False), as for every other target; the process never crashes.

Symmetry. U is invariant under translations and proper rotations, and, for every classical force
field whose torsion phases are 0 or 180 degrees (amber14 is one; so is ANI-2x, which sees only
distances and angles), also under reflections: U(-x) = U(x). Chirality is therefore not in the
energy: the mirror image of an L-peptide (all CA centres D) has the same energy, and the two
enantiomers are separated only by the barrier of inverting each CA through a planar geometry.
The physical ensemble is the L half; `evaluation.peptides.validity` flags D centres.
Translations: as for particle targets, the density lives on the centre-of-mass-free subspace
(unweighted centroid, sum_i x_i = 0): `make_reference` is the mean-free pinned Brownian motion
(`sde/mean_free.py`), `project` removes the centroid, reference samples are centred. Global
rotations are left to the learner (an SO(3)-equivariant drift, or orbit averaging over proper
rotations in `objectives/orbit.py`; an E(3)-equivariant drift such as the EGNN started at x_0 = 0
produces both enantiomers with equal probability).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import ShapeError
from ..optional import PEPTIDES_HINT, require
from .particles import ParticleSymmetry, ParticleTarget, data_file

MOLAR_GAS_CONSTANT = 8.31446261815324e-3     # kJ / (mol K), = N_A k_B (CODATA 2018, exact)
INSTALL_HINT = PEPTIDES_HINT


def kT_kJ_per_mol(temperature: float) -> float:
    """k_B T in kJ/mol: R T."""
    return MOLAR_GAS_CONSTANT * float(temperature)


# -- evaluating rows on a Context ------------------------------------------------------------------
def make_context(system, platform: str = "auto", properties: dict | None = None):
    """An OpenMM Context for `system` (a dummy Verlet integrator; the Context only evaluates).
    platform 'auto': CUDA where it works, else CPU with one thread."""
    mm = require("openmm")
    names = ["CUDA", "CPU"] if platform == "auto" else [platform]
    for k, name in enumerate(names):
        props = dict(properties or {})
        if name == "CPU":
            props.setdefault("Threads", "1")
        elif name == "CUDA":
            props.setdefault("Precision", "mixed")
        try:
            plat = mm.Platform.getPlatformByName(name)
            return mm.Context(system, mm.VerletIntegrator(0.001), plat, props)
        except Exception as e:  # noqa: BLE001 - OpenMMException, or a platform absent
            if k == len(names) - 1:
                raise ValueError(f"OpenMM platform {name!r} is not usable here: {e}") from None
    raise AssertionError("unreachable")


def evaluate_rows(context, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U (B,) in kJ/mol and F (B, n, 3) in kJ/(mol nm) at positions pos (B, n, 3) in nm.
    Rows with non-finite coordinates, or at which OpenMM raises, get NaN."""
    B, n, _ = pos.shape
    U = np.full(B, np.nan)
    F = np.full((B, n, 3), np.nan)
    for b in range(B):
        p = pos[b]
        if not np.isfinite(p).all():
            continue
        try:
            context.setPositions(p)
            st = context.getState(getEnergy=True, getForces=True)
            U[b] = st.getPotentialEnergy()._value                       # kJ/mol (OpenMM's unit)
            F[b] = st.getForces(asNumpy=True)._value                     # kJ/(mol nm)
        except Exception:  # noqa: BLE001, S112 - an OpenMMException marks this row as non-finite
            continue
    return U, F


_WORKER: dict = {}


def _worker_init(system_xml: str, platform: str, properties: dict | None) -> None:
    import openmm

    torch.set_num_threads(1)
    _WORKER["context"] = make_context(openmm.XmlSerializer.deserialize(system_xml), platform, properties)


def _worker_eval(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return evaluate_rows(_WORKER["context"], pos)


def reference_converged(path: Path) -> bool:
    """Whether a reference .npz says its run converged: its `summary` (JSON) has
    convergence.converged true, or it carries no such record (files made by hand)."""
    if path.suffix != ".npz":
        return True
    stat = path.stat()
    return _converged_record(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _converged_record(path: str, mtime_ns: int, size: int) -> bool:
    with np.load(path, allow_pickle=False) as z:
        if "summary" not in z.files:
            return True
        conv = json.loads(str(z["summary"])).get("convergence") or {}
    return bool(conv.get("converged", True))


class _OpenMMEnergy(torch.autograd.Function):
    """E(x) with backward grad_E(x) from OpenMM's forces (computed in the same forward call)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, target: OpenMMTarget) -> torch.Tensor:
        e, g = target._energy_and_grad(x.detach())
        ctx.save_for_backward(g)
        return e

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_e: torch.Tensor):
        (g,) = ctx.saved_tensors
        return grad_e[:, None] * g, None


class OpenMMTarget(ParticleTarget):
    """p(x) ∝ exp(-U(x) / k_B T) for an OpenMM System; rows (B, 3 n) in nm (module docstring).

    Args:
        system: openmm.System (its forces define U; constraints and virtual sites are refused).
        topology: openmm.app.Topology of the same atoms (for evaluation and trajectory files).
        positions: optional (n, 3) reference structure in nm (e.g. the minimised one).
        temperature: T in K. platform: 'auto' | 'CPU' | 'CUDA' | 'Reference' | 'OpenCL'.
        n_workers: 1 evaluates in this process; k > 1 spreads the rows of a batch over k spawned
            processes with one Context each. sigma: reference-process scale in nm (default: the
            rms per degree of freedom of the centred reference structure, or 0.2 nm).
        description: names the variant (force field, solvent) in `info()`.
        data_filename: reference-sample file (.npz with `x`, or .npy) looked up with `data_file`.
    """

    spatial_dim = 3
    # whether U(-x) = U(x) holds for the force field (amber14: every torsion phase 0 or 180 degrees;
    # not for CMAP force fields such as CHARMM36), so that samples may leave as the L enantiomer
    mirror_symmetric = False

    def __init__(self, system, topology, positions=None, *, temperature: float = 300.0,
                 platform: str = "auto", properties: dict | None = None, n_workers: int = 1,
                 sigma: float | None = None, name: str = "openmm", description: str = "",
                 data_filename: str | None = None) -> None:
        mm = require("openmm")
        self.system, self.topology, self.name = system, topology, name
        self.n_particles = int(system.getNumParticles())
        if topology is not None and topology.getNumAtoms() != self.n_particles:
            raise ShapeError(f"{name}: topology has {topology.getNumAtoms()} atoms, system {self.n_particles}")
        if system.getNumConstraints() or any(system.isVirtualSite(i) for i in range(self.n_particles)):
            raise ValueError(f"{name}: constraints or virtual sites make the Cartesian density singular; "
                             "build the System with constraints=None and no virtual sites")
        self.temperature, self.kT = float(temperature), kT_kJ_per_mol(temperature)
        self.description, self.data_filename = description, data_filename
        self.positions = None if positions is None else self._as_nm(positions)
        self.sigma = float(sigma) if sigma is not None else self._default_sigma()
        super().__init__()
        self.symmetry = ParticleSymmetry(self.n_particles, 3, ())
        self._context = make_context(system, platform, properties)
        self.platform = self._context.getPlatform().getName()
        self._platform_request, self._properties = platform, properties
        self.n_workers, self._pool = int(n_workers), None
        self._mm = mm

    @staticmethod
    def _as_nm(positions) -> np.ndarray:
        if hasattr(positions, "value_in_unit"):
            from openmm import unit
            positions = positions.value_in_unit(unit.nanometer)
        return np.asarray(positions, dtype=np.float64).reshape(-1, 3)

    def _default_sigma(self) -> float:
        """sqrt(||x - xbar||^2 / ((n-1) 3)) of the reference structure, or 0.2 nm."""
        if self.positions is None:
            return 0.2
        c = self.positions - self.positions.mean(0)
        return float(np.sqrt((c ** 2).sum() / ((self.n_particles - 1) * 3)))

    # -- energy -------------------------------------------------------------------------------
    def _pool_map(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._pool is None:
            import multiprocessing as mp

            xml = self._mm.XmlSerializer.serialize(self.system)
            self._pool = mp.get_context("spawn").Pool(
                self.n_workers, initializer=_worker_init,
                initargs=(xml, self._platform_request, self._properties))
        parts = self._pool.map(_worker_eval, np.array_split(pos, self.n_workers))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, grad E) = (U / kT, -F / kT), shapes (B,), (B, 3n); uncounted."""
        pos = x.detach().to("cpu", torch.float64).numpy().reshape(x.shape[0], self.n_particles, 3)
        if self.n_workers > 1 and x.shape[0] >= 2 * self.n_workers:
            U, F = self._pool_map(pos)
        else:
            U, F = evaluate_rows(self._context, pos)
        with np.errstate(over="ignore", invalid="ignore"):
            e, g = U / self.kT, -F.reshape(x.shape[0], -1) / self.kT
        return torch.from_numpy(e).to(x), torch.from_numpy(g).to(x)

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        return _OpenMMEnergy.apply(x, self)

    def to_user(self, z: torch.Tensor) -> torch.Tensor:
        """Samples leave as the L enantiomer where the force field is mirror-symmetric: a row whose
        every chiral CA is D is inverted, x -> -x. U(-x) = U(x) and the inversion maps each D
        conformation onto its L mirror image, so if x ~ p the result follows p on the L half (the
        physical ensemble) and keeps its importance weight. Rows of mixed chirality, molecules
        without a chiral CA and force fields not marked `mirror_symmetric` are left as they are."""
        if not self.mirror_symmetric or self.topology is None:
            return z
        from ..evaluation.peptides import chirality_volumes
        vol = chirality_volumes(z, self.topology)
        if vol.shape[1] == 0:
            return z
        return torch.where((vol < 0).all(-1, keepdim=True), -z, z)

    def close(self) -> None:
        """Stop the worker processes (if any)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - nothing to report at interpreter exit
            pass

    # -- reference samples ----------------------------------------------------------------------
    @property
    def data_path(self) -> Path | None:
        """The cached reference file, or None. A file whose own record says its run did not
        converge (reference.py's `convergence.converged`) is passed over with a warning: torsion KLs
        and basin populations against it would measure the reference's error, not the sampler's."""
        path = data_file(self.data_filename) if self.data_filename else None
        if path is None or reference_converged(path):
            return path
        import warnings
        warnings.warn(f"{self.name}: {path} is not used: its MD run did not converge (the basin populations of "
                      "its two halves differ by more than its tolerance); rerun experiments/peptides/reference.py "
                      "longer or with --replicas", stacklevel=2)
        return None

    def reference_samples(self) -> torch.Tensor:
        """All reference samples (N, 3n) in nm, centred; from `use_reference_samples` or the
        cached file (.npz: array `x`, optional `variant` that must equal `self.variant`)."""
        if self._data is None:
            path = self.data_path
            if path is None:
                raise FileNotFoundError(
                    f"{self.name}: no reference samples ({self.data_filename!r} not found in $DIFFSAMPLER_DATA, "
                    "<repo>/../shared/data or ~/.cache/diffsampler/data); make them with "
                    "experiments/peptides/reference.py")
            self.use_reference_samples(self._load_reference(path), str(path))
        return self._data.to(torch.get_default_dtype())

    def _load_reference(self, path: Path) -> np.ndarray:
        if path.suffix != ".npz":
            return np.load(path)
        with np.load(path, allow_pickle=False) as z:
            variant = str(z["variant"]) if "variant" in z.files else None
            if variant is not None and variant != self.variant:
                raise ShapeError(f"{self.name}: {path} holds samples of {variant!r}, not {self.variant!r}")
            return z["x"]

    # -- description ------------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        """One line naming the density exactly: description, temperature, atoms."""
        return f"{self.description or 'OpenMM system'}, {self.temperature:g} K, {self.n_particles} atoms"

    def info(self) -> dict:
        return {**super().info(), "variant": self.variant, "temperature_K": self.temperature,
                "kT_kJ_per_mol": self.kT, "n_atoms": self.n_particles, "units": "x in nm; E in kT",
                "platform": self.platform}

    def extra_metrics(self, x: torch.Tensor, x_true: torch.Tensor | None, log_w: torch.Tensor | None = None) -> dict:
        """Validity, torsion KLs, basin populations, energy W1/W2 (`evaluation.peptides`)."""
        if self.topology is None:
            return {}
        from ..evaluation.peptides import peptide_metrics
        return peptide_metrics(self, x, x_true, log_w)

    def extra_plots(self, x: torch.Tensor, x_true: torch.Tensor | None, directory: str, title: str = "") -> None:
        if self.topology is None:
            return
        from ..evaluation.peptides import plot_peptide
        plot_peptide(self, x, x_true, directory, title)


__all__ = [
    "INSTALL_HINT",
    "MOLAR_GAS_CONSTANT",
    "OpenMMTarget",
    "evaluate_rows",
    "kT_kJ_per_mol",
    "make_context",
    "require",
]
