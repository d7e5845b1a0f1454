"""Particle systems with Euclidean and permutation symmetry: DW-4, LJ-13, LJ-55.

Configurations are flattened to x in R^(n*D) (particle i occupies x[i*D:(i+1)*D]). The energies
are invariant under E(D) x S_n (rotations, reflections, translations; permutations of identical
particles), so the density lives on the centre-of-mass-free subspace {sum_i x_i = 0} of
dimension (n-1)*D; the reference process (`make_reference`) is the mean-free pinned Brownian
motion on that subspace, and the reference samples are centred on load.

Energies (temperature 1; conventions of the DEM data, Akhound-Sadegh et al. 2024, see
shared/data/README.md; virial check E[x . grad E] = (n-1) D on the reference samples):
    DW-4 (Koehler et al. 2020):  E = sum_{i<j} a (r_ij - d0)^4 + b (r_ij - d0)^2,  a=0.9, b=-4, d0=4.
    LJ-n ("lj13", "lj55"; DEM):  E = sum_{i != j} v(r_ij) + 1/2 sum_i ||x_i - xbar||^2,
        v(r) = eps [(r_m/r)^12 - 2 (r_m/r)^6], eps = r_m = 1, each unordered pair counted TWICE.
    LJ-13 "lj13_bgflow" (bgflow / Koehler et al.): the same with each pair counted ONCE.

Soft-core guard (r -> 0): distances are floored at R_FLOOR = 1e-6 before the square root (the
gradient of ||x_i - x_j|| is undefined at 0), and the LJ pair energy is continued linearly below
r_c = LJ_SOFT_CORE = 0.7 r_m:  v_sc(r) = v(r_c) + v'(r_c) (r - r_c) for r < r_c, v(r) above.
v_sc is C^1, monotone and finite at r = 0 (about 820 per ordered pair), so coincident particles
(e.g. the sampler's start x_0 = 0) give a finite energy and gradient instead of overflow. It does
not change the energy of physical configurations: v(0.7) = 55.3 per ordered pair (110.6 per
unordered pair in lj13), i.e. a Boltzmann factor below e^-55 against the pair at contact; the
shortest distance among the 780k pair distances of the 10k LJ-13 reference samples is 0.825, and
there v_sc == v exactly (bit for bit).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import NonFiniteError, ShapeError
from .base import Target

R_FLOOR = 1e-6
LJ_SOFT_CORE = 0.7
DATA_ENV = "DIFFSAMPLER_DATA"


@dataclass(frozen=True)
class ParticleSymmetry:
    """The invariance group E(D) x S_{identical} of a particle target.

    identical: groups of interchangeable particles (indices); the energy is invariant under any
    permutation within a group. Orbit sampling (`objectives.orbit`) uses proper rotations SO(D)
    and these permutations; translations are removed by centring."""

    n_particles: int
    spatial_dim: int
    identical: tuple[tuple[int, ...], ...]

    @classmethod
    def all_identical(cls, n: int, dim: int) -> ParticleSymmetry:
        return cls(n, dim, (tuple(range(n)),))

    @property
    def name(self) -> str:
        perms = " x ".join(f"S_{len(g)}" for g in self.identical if len(g) > 1)
        return f"E({self.spatial_dim})" + (f" x {perms}" if perms else "")


def data_file(filename: str) -> Path | None:
    """First existing `filename` in: $DIFFSAMPLER_DATA, <repo root>/../shared/data (repo root =
    three levels above this package's `targets/`), ~/.cache/diffsampler/data. None if absent."""
    dirs = []
    if os.environ.get(DATA_ENV):
        dirs.append(Path(os.environ[DATA_ENV]).expanduser())
    dirs.append(Path(__file__).resolve().parents[3].parent / "shared" / "data")
    dirs.append(Path.home() / ".cache" / "diffsampler" / "data")
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    return None


def remove_com(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """x (..., n*dim) minus its centre of mass per configuration."""
    v = x.reshape(*x.shape[:-1], n, dim)
    return (v - v.mean(-2, keepdim=True)).reshape(x.shape)


def pair_distances(x: torch.Tensor, n: int, dim: int, r_floor: float = R_FLOOR) -> torch.Tensor:
    """Distances r_ij, i < j (row-major order of torch.triu_indices), shape (..., n(n-1)/2).
    Squared distances are floored at r_floor^2 so that the gradient stays finite at r = 0."""
    v = x.reshape(*x.shape[:-1], n, dim)
    i, j = torch.triu_indices(n, n, 1, device=x.device)
    s = ((v[..., i, :] - v[..., j, :]) ** 2).sum(-1)
    return s.clamp_min(r_floor ** 2).sqrt()


class ParticleTarget(Target):
    """n identical particles in `spatial_dim` dimensions with a pairwise energy.

    Subclasses define `pair_energy(r)` (elementwise), `pair_factor` (1: sum over i<j, 2: over
    i != j), optionally `soft_core` (radius below which the pair energy is continued linearly)
    and `external_energy(x)`; `data_filename` names the reference samples (optional)."""

    n_particles: int = 0
    spatial_dim: int = 0
    pair_factor: float = 1.0
    soft_core: float | None = None
    data_filename: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.dim = self.n_particles * self.spatial_dim
        self.symmetry = ParticleSymmetry.all_identical(self.n_particles, self.spatial_dim)
        self._data: torch.Tensor | None = None
        self.reference_source: str | None = None   # set by use_reference_samples; else data_path
        if self.soft_core is not None:  # slope v'(r_c) of the linear continuation, in float64
            rc = torch.tensor(float(self.soft_core), dtype=torch.float64, requires_grad=True)
            (dv,) = torch.autograd.grad(self.pair_energy(rc), rc)
            self._dv_c = float(dv)

    # -- energy ----------------------------------------------------------------------------------
    def extra_metrics(self, x: torch.Tensor, x_true: torch.Tensor | None,
                      log_w: torch.Tensor | None = None) -> dict:
        """Distance and energy W1/W2 against the reference samples, equivariant W2 of positions
        (of the raw samples: log_w is not used)."""
        if x_true is None:
            return {}
        from ..evaluation.particles import particle_metrics
        return particle_metrics(x, x_true, self)

    def extra_plots(self, x: torch.Tensor, x_true: torch.Tensor | None, directory: str, title: str = "") -> None:
        import os

        from ..evaluation.particles import plot_particle_histograms
        plot_particle_histograms(x, x_true, self, os.path.join(directory, "histograms.png"), title)

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def external_energy(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0])

    def guarded_pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        """pair_energy with the linear soft-core continuation below `soft_core` (module docstring)."""
        if self.soft_core is None:
            return self.pair_energy(r)
        r_hi = r.clamp_min(self.soft_core)
        return self.pair_energy(r_hi) + self._dv_c * (r - r_hi)

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        r = pair_distances(x, self.n_particles, self.spatial_dim)
        return self.pair_factor * self.guarded_pair_energy(r).sum(-1) + self.external_energy(x)

    def interatomic_distances(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n(n-1)/2) pair distances (no energy call)."""
        return pair_distances(x, self.n_particles, self.spatial_dim, r_floor=0.0)

    # -- reference process and samples -----------------------------------------------------------
    def make_reference(self, sigma: float):
        from ..sde.mean_free import MeanFreePinnedBrownian
        return MeanFreePinnedBrownian(self.n_particles, self.spatial_dim, sigma)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return remove_com(x, self.n_particles, self.spatial_dim)

    @property
    def data_path(self) -> Path | None:
        return data_file(self.data_filename) if self.data_filename else None

    @property
    def has_samples(self) -> bool:
        return self._data is not None or self.data_path is not None

    def reference_samples(self) -> torch.Tensor:
        """All reference samples (N, dim), centre of mass removed (kept in float64, returned in
        the default dtype)."""
        if self._data is None:
            path = self.data_path
            if path is None:
                raise FileNotFoundError(
                    f"{self.name}: reference samples {self.data_filename!r} not found; put the file in "
                    f"${DATA_ENV}, <repo>/../shared/data or ~/.cache/diffsampler/data")
            a = np.load(path)
            if a.ndim != 2 or a.shape[1] != self.dim:
                raise ShapeError(f"{self.name}: {path} has shape {a.shape}, expected (N, {self.dim})")
            self._data = self.project(torch.as_tensor(a, dtype=torch.float64))
        return self._data.to(torch.get_default_dtype())

    def use_reference_samples(self, x: torch.Tensor, source: str) -> None:
        """Use x (N, dim) as this target's reference samples (e.g. an MCMC set made for a target
        whose shared data has none); `source` names where they come from (in `info()`). The centre
        of mass is removed; non-finite rows are an error."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.dim() != 2 or x.shape[1] != self.dim or x.shape[0] == 0:
            raise ShapeError(f"{self.name}: reference samples must have shape (N, {self.dim}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise NonFiniteError(f"{self.name}: reference samples from {source} contain non-finite values")
        self._data = self.project(x)
        self.reference_source = str(source)

    def _sample(self, n: int) -> torch.Tensor:
        self.reference_samples()
        N = self._data.shape[0]
        idx = torch.randperm(N)[:n] if n <= N else torch.randint(0, N, (n,))
        return self._data[idx].to(torch.get_default_dtype())

    def info(self) -> dict:
        return {**super().info(), "n_particles": self.n_particles, "spatial_dim": self.spatial_dim,
                "symmetry": self.symmetry.name, "sigma": self.sigma,
                "reference_samples": self.reference_source or (self.data_filename if self.data_path else None)}


class DoubleWell4(ParticleTarget):
    """DW-4: 4 particles in 2-D, E = sum_{i<j} a (r - d0)^4 + b (r - d0)^2 (a=0.9, b=-4, d0=4).

    Reference sigma = 2.0: the root-mean-square of the centred reference samples per degree of
    freedom, sqrt(E||x||^2 / ((n-1)D)), is 2.10, so the reference's terminal marginal N(0, 4)
    has the target's scale (DEM's VE process uses sigma_max = 3 for the same target)."""

    name = "dw4"
    n_particles, spatial_dim = 4, 2
    sigma = 2.0
    data_filename = "dw4_dem_val.npy"
    # Jeffreys SGDS with the EGNN Langevin drift and reference sigma 1 (docs/RESULTS.md, DW-4)
    default_recipe = "sgds_jeffreys"
    recommended = {"sgds_jeffreys": dict(searcher="mala", drift="egnn_langevin", width=64, depth=2, sigma=1.0,
                                         train_steps=20, iterations=6000, lr_final=0.1, ema_decay=0.999,
                                         time_warp=2.0, eval_every=1000, max_energy_calls=37_000_000)}

    def __init__(self, a: float = 0.9, b: float = -4.0, d0: float = 4.0) -> None:
        self.a, self.b, self.d0 = float(a), float(b), float(d0)
        super().__init__()

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        u = r - self.d0
        return self.a * u ** 4 + self.b * u ** 2


class LennardJones(ParticleTarget):
    """LJ-n cluster in 3-D with the harmonic centring term 1/2 sum_i ||x_i - xbar||^2.

    pairs_counted: 2 = DEM convention (sum over ordered pairs; the reference data follow it),
    1 = bgflow convention. Reference sigma = 0.2 (SGDS / gfn-diffusion LJ setting)."""

    spatial_dim = 3
    sigma = 0.2
    soft_core = LJ_SOFT_CORE

    @property
    def default_recipe(self) -> str | None:
        return "sgds" if self.recommended else None

    @property
    def recommended(self) -> dict[str, dict]:
        """SGDS's schedule and budget (docs/RESULTS.md, LJ-13/LJ-55): for LJ-13 the learner this CPU
        trains within the budget (EGNN 32 x 3 on 20 random steps; equivariant W2 1.52, energy W2 1.38
        at 311K calls); the paper-sized GPU learners are the presets in experiments/configs/."""
        return LJ_SETTINGS.get((self.n_particles, self.pair_factor), {})

    def __init__(self, n_particles: int = 13, pairs_counted: int = 2, eps: float = 1.0, r_m: float = 1.0,
                 name: str | None = None) -> None:
        if pairs_counted not in (1, 2):
            raise ValueError(f"LennardJones: pairs_counted must be 1 or 2, got {pairs_counted}")
        self.n_particles, self.pair_factor = int(n_particles), float(pairs_counted)
        self.eps, self.r_m = float(eps), float(r_m)
        self.name = name or f"lj{n_particles}" + ("" if pairs_counted == 2 else "_bgflow")
        self.data_filename = f"lj{n_particles}_dem_val.npy"
        super().__init__()

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        s6 = (self.r_m / r) ** 6
        return self.eps * (s6 ** 2 - 2 * s6)

    def external_energy(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.project(x) ** 2).sum(-1)


class MeanFreeGaussian(ParticleTarget):
    """E = ||x - xbar||^2 / (2 s^2) on the centre-of-mass-free subspace: a test target with
    log Z = (n-1) D / 2 * log(2 pi s^2) (Lebesgue measure on the subspace) and exact samples."""

    def __init__(self, n_particles: int = 4, spatial_dim: int = 3, scale: float = 1.0) -> None:
        self.n_particles, self.spatial_dim, self.scale = int(n_particles), int(spatial_dim), float(scale)
        self.name = f"meanfree_gauss_{n_particles}x{spatial_dim}"
        self.sigma = self.scale
        super().__init__()
        self.log_Z = 0.5 * (self.n_particles - 1) * self.spatial_dim * math.log(2 * math.pi * self.scale ** 2)

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.project(x) ** 2).sum(-1) / self.scale ** 2

    @property
    def has_samples(self) -> bool:
        return True

    def _sample(self, n: int) -> torch.Tensor:
        return self.project(self.scale * torch.randn(n, self.dim))


_SGDS_LJ = dict(drift="egnn", searcher="mala", rnd_alpha=10.0, rnd_width=64, rounds=2, train_grid="random",
                time_warp=1.0, grad_clip=1.0, ema_decay=0.0, log_Z_warm_start="buffer", eval_steps=500)
LJ_SETTINGS: dict[tuple[int, float], dict[str, dict]] = {
    (13, 2.0): {"sgds": dict(_SGDS_LJ, width=32, depth=3, search_chains=16, search_burnin=1000, search_steps=3000,
                             search_thin=10, iterations=20000, round_iterations="5000,15000", batch_size=32,
                             train_steps=20, lr=5e-4, lr_log_Z=1e-3, eval_every=0, max_energy_calls=370_000,
                             grad_chunk_steps=10)},
    (55, 2.0): {"sgds": dict(_SGDS_LJ, width=64, depth=5, rnd_alpha=1.0, search_chains=2, search_burnin=4000,
                             search_steps=6000, search_thin=1, search_step_size=1e-5, iterations=30000,
                             round_iterations="10000,20000", ml_warmup=5000, batch_size=4, train_steps=100,
                             lr=2e-5, lr_log_Z=2e-5, lr_ml=5e-4, eval_samples=1000, max_energy_calls=45_000,
                             grad_chunk_steps=25)},
}
