"""Training objectives: TB, VarGrad, SubTB, DB, KL (PIS), maximum likelihood."""
from ..errors import ConfigError
from .balance import (DetailedBalance, Objective, SubTrajectoryBalance, TrajectoryBalance, VarGrad,
                      log_flows)
from .divergence import KLDivergence, MaximumLikelihood
from .orbit import (OrbitMaximumLikelihood, OrbitTarget, apply_group, augment, orbit_ml_loss, orbit_target,
                    sample_permutations, sample_rotations)

OBJECTIVES = {"tb": TrajectoryBalance, "vargrad": VarGrad, "subtb": SubTrajectoryBalance,
              "db": DetailedBalance, "kl": KLDivergence, "ml": MaximumLikelihood}


def make_objective(name: str, subtb_lambda: float = 2.0) -> Objective:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}")
    return SubTrajectoryBalance(subtb_lambda) if name == "subtb" else OBJECTIVES[name]()


__all__ = ["Objective", "TrajectoryBalance", "VarGrad", "DetailedBalance", "SubTrajectoryBalance",
           "KLDivergence", "MaximumLikelihood", "OBJECTIVES", "make_objective", "log_flows",
           "OrbitMaximumLikelihood", "OrbitTarget", "orbit_target", "orbit_ml_loss", "sample_rotations",
           "sample_permutations", "apply_group", "augment"]
