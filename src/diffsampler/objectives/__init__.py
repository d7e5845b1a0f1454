"""Training objectives: TB, VarGrad, SubTB, DB, KL (PIS), maximum likelihood, adjoint matching, orbit
maximum likelihood. Each registers itself in OBJECTIVES with its options (objectives/base.py)."""
from ..components import discover
from ..errors import ConfigError
from .adjoint import (AdjointMatching, AdjointOptions, adjoint_target, batch_averaged_target, bridge_states,
                      mixed_target)
from .balance import DetailedBalance, SubTBOptions, SubTrajectoryBalance, TrajectoryBalance, VarGrad, log_flows
from .base import OBJECTIVES, Objective
from .divergence import KLDivergence, MaximumLikelihood
from .orbit import (OrbitMaximumLikelihood, OrbitOptions, OrbitTarget, apply_group, augment, orbit_ml_loss,
                    orbit_target, sample_permutations, sample_rotations)


discover(__name__, __path__)   # every objective module registers itself (objectives/base.py)


def make_objective(name: str, flat: dict | None = None, **keys) -> Objective:
    """The objective `name` with its options read from flat config keys (a dict and/or keywords, e.g.
    adjoint_times=8); missing keys take their defaults."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES.names())}")
    return OBJECTIVES.build(name, {**(flat or {}), **keys})


def objective_class(name: str) -> type:
    """The registered class of objective `name` (its declarations, without building it)."""
    return OBJECTIVES.entry(name).factory


__all__ = ["Objective", "OBJECTIVES", "TrajectoryBalance", "VarGrad", "DetailedBalance", "SubTrajectoryBalance",
           "SubTBOptions", "KLDivergence", "MaximumLikelihood", "AdjointMatching", "AdjointOptions", "adjoint_target",
           "batch_averaged_target", "mixed_target", "bridge_states", "make_objective", "objective_class", "log_flows",
           "OrbitMaximumLikelihood", "OrbitOptions", "OrbitTarget", "orbit_target", "orbit_ml_loss",
           "sample_rotations", "sample_permutations", "apply_group", "augment"]
