"""Searchers (MCMC kernels over potentials built from a target), RND novelty and the replay buffer.

Kernels follow one small interface: `kernel.init(potential, x0) -> state`,
`kernel.step(potential, state, adapt=False) -> (state, StepInfo)`, `kernel.rebase/permute`;
AIS and parallel tempering take the inner kernel as an argument.
"""
from ..components import discover
from .searcher import SEARCHERS, ChainOptions, SearchResult
from .ais import AISResult, linear_schedule, logmeanexp, run_ais
from .buffer import ReplayBuffer
from .energy import (AuxiliaryPotential, ChainState, GeometricPath, Potential, StepInfo, TemperedPotential,
                     auxiliary_potential, geometric_path, target_potential)
from .mala import MALA, ULA, ChainSamples, MALAInfo, MALAState, run_kernel, run_mala
from .novelty import RND, BoundedInvariantFeatures, make_rnd, mlp
from .rmp_langevin import RandomizedMidpointLangevin, run_rmp_langevin
from .tempering import TemperingResult, geometric_temperatures, run_tempering, swap_log_ratio
from .underdamped import UnderdampedLangevin, UnderdampedState, run_underdamped

__all__ = ["SEARCHERS", "ChainOptions", "SearchResult", "ReplayBuffer", "Potential", "TemperedPotential", "GeometricPath", "AuxiliaryPotential", "ChainState",
           "StepInfo", "target_potential", "auxiliary_potential", "geometric_path", "MALA", "ULA", "MALAState",
           "MALAInfo", "ChainSamples", "run_kernel", "run_mala", "AISResult", "run_ais", "linear_schedule",
           "logmeanexp", "TemperingResult", "run_tempering", "swap_log_ratio", "geometric_temperatures",
           "UnderdampedLangevin", "UnderdampedState", "run_underdamped", "RND", "BoundedInvariantFeatures", "make_rnd", "mlp",
           "RandomizedMidpointLangevin", "run_rmp_langevin"]

discover(__name__, __path__)   # every searcher module registers itself (search/searcher.py)
