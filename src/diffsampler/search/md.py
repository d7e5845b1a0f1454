"""Molecular-dynamics searcher: underdamped Langevin dynamics on a molecule's forces, heated in the
first round, at the target's temperature after (SGDS's peptide searcher, Kim et al. 2025: 600 K in
round 1, 300 K in round 2, gamma = 1/ps, 0.5 fs).

The target's energy is E = U / (k_B T0) (T0 its temperature, `OpenMMTarget`). Langevin dynamics at
temperature T in physical units (positions nm, time ps, masses amu, U kJ/mol),
    m dv = -grad U dt - gamma m v dt + sqrt(2 gamma m k_B T) dW,
divided by k_B T0 is the dimensionless dynamics of `search.underdamped` with potential E, masses
m / (k_B T0) (per coordinate) and kT = T / T0: the chains sample exp(-U / k_B T) at their
temperature, and their samples go to the buffer with their TRUE energies at T0 (a hot round's
samples spread the buffer; the learner's rewards stay those of the target). In rounds after the first
the chains move on E - alpha * novelty(x) (the RND bonus as an extra force). The BAOAB splitting
(Leimkuhler & Matthews 2013) costs one energy-and-force call per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..components import option
from ..errors import ConfigError
from .mala import chain_potential
from .searcher import SEARCHERS, ChainSearcher, SearchResult, chain_result
from .underdamped import UnderdampedOptions, run_underdamped

Tensor = torch.Tensor


@dataclass
class MDOptions(UnderdampedOptions):
    """Underdamped chains' options plus the temperature (K) of each round's chains."""

    temperatures: str = option("600,300", "MD: the chains' temperature in K per round, comma-separated (the last "
                               "repeats); SGDS: 600 K, then 300 K", alias="md_temperatures")

    def __post_init__(self) -> None:
        try:
            ok = all(float(t) > 0 for t in self.temperatures.split(","))
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"config key 'md_temperatures' = {self.temperatures!r}: must be temperatures in K > 0, "
                              "comma-separated (one per round)")

    def temperature(self, round: int) -> float:
        ts = [float(t) for t in self.temperatures.split(",")]
        return ts[min(round, len(ts) - 1)]


def masses_per_coordinate(target) -> Tensor:
    """Atomic masses in amu, repeated for x, y, z: (3 n,), from the target's OpenMM System."""
    system = getattr(target, "system", None)
    if system is None or not hasattr(target, "kT"):
        raise ConfigError(f"searcher 'md' needs a molecular target (an OpenMM system with a temperature); "
                          f"{target.name!r} is not one: use searcher=underdamped")
    m = torch.tensor([system.getParticleMass(i)._value for i in range(system.getNumParticles())], dtype=torch.float64)
    return m.repeat_interleave(3)


@SEARCHERS.register("md", MDOptions, splittable=True)
class MDSearcher(ChainSearcher):
    """Langevin MD chains on a molecule (module docstring); search_step_size is the time step in ps
    (SGDS: 0.0005 = 0.5 fs) and search_friction gamma in 1/ps. The chains start at the molecule's own
    structure (its minimised PDB), with 0.002 nm of noise per coordinate."""


    def run(self, target, x0: Tensor, scale: float, novelty=None, alpha: float = 0.0, round: int = 0):
        base = getattr(target, "base", target)           # a standardised view keeps the molecule's units
        if base.dim != target.dim:
            return self._run_cartesian(target, base, x0, novelty, alpha, round)
        if getattr(base, "positions", None) is not None:   # MD starts from the molecule's structure, not noise
            x0 = target.from_user(structure_start(base, x0))
        r = self._dynamics(chain_potential(target, novelty, alpha), base, x0, round)
        return chain_result(r, {"n_reset": r.n_reset, "temperature": self.o.temperature(round)})

    def _run_cartesian(self, view, base, x0: Tensor, novelty, alpha: float, round: int):
        """MD on the molecule itself for a view in other coordinates (internal ones): the dynamics
        are physical only in Cartesian coordinates with the atoms' masses. The novelty, a function of
        the view's coordinates, is read through `view.from_user`; the samples go to the buffer in
        the view's coordinates with the view's energies (no further energy call)."""
        bonus = None if novelty is None else (lambda y: novelty(view.from_user(y)))
        x = structure_start(base, x0.new_zeros(x0.shape[0], base.dim))
        r = self._dynamics(chain_potential(base, bonus, alpha), base, x, round)
        xs, es = r.flat()
        z = view.from_user(xs)
        return SearchResult(z, view.to_user_energy(z, es), None,
                            {"n_reset": r.n_reset, "temperature": self.o.temperature(round)})

    def _dynamics(self, potential, base, x0: Tensor, round: int):
        """The round's Langevin chains on `potential`, with the molecule's masses and temperature."""
        o = self.o
        mass = (masses_per_coordinate(base) / base.kT).to(x0)
        return run_underdamped(potential, x0, o.steps, step_size=o.step_size, friction=o.friction,
                               kT=o.temperature(round) / base.temperature, mass=mass, n_burn=o.burnin, thin=o.thin)


def structure_start(base, like: Tensor) -> Tensor:
    """Rows shaped like `like` (B, 3n): the molecule's structure, centred, with 0.002 nm of noise."""
    start = base.project(torch.as_tensor(base.positions, dtype=like.dtype, device=like.device).reshape(1, -1))
    return start.expand_as(like) + 0.002 * base.project(torch.randn_like(like))


__all__ = ["MDOptions", "MDSearcher", "masses_per_coordinate"]
